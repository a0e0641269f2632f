"""OpenLineage: each operator reports its collection; checked in events the real OpenLineage provider emits."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from airflow_provider_milvus.lineage import dataset_name

from testing.airflow_cli import AirflowCLI
from tests.conftest import milvus_connection_json

pytest.importorskip("airflow.providers.openlineage", reason="needs the [openlineage] extra")


def conn(host: str, port: int | None = None, schema: str | None = None, **extra: object) -> SimpleNamespace:
    return SimpleNamespace(host=host, port=port, schema=schema, extra_dejson=extra)


@pytest.mark.parametrize(
    ("connection", "namespace", "name"),
    [
        (conn("http://milvus:19530"), "milvus://milvus:19530", "default.docs"),
        (conn("milvus"), "milvus://milvus:19530", "default.docs"),
        (conn("http://Milvus.internal", port=29530), "milvus://milvus.internal:29530", "default.docs"),
        (conn("https://in03-x.zillizcloud.com", db_name="prod"), "milvus://in03-x.zillizcloud.com:443", "prod.docs"),
        (conn("http://root:Milvus@milvus:19530/some/path?token=sk-123"), "milvus://milvus:19530", "default.docs"),
        (conn("tcp://10.0.0.7:19530", schema="tenant_a"), "milvus://10.0.0.7:19530", "tenant_a.docs"),
    ],
)
def test_server_namespaces_are_host_and_port_without_credentials(connection, namespace, name):
    named = dataset_name(connection, "docs")
    assert (named.namespace, named.name) == (namespace, name)
    assert "Milvus@" not in named.namespace
    assert "sk-123" not in named.namespace


def test_a_milvus_lite_directory_is_named_by_its_path_not_its_changing_port(tmp_path):
    named = dataset_name(conn(str(tmp_path / "data")), "docs")
    assert named.namespace == f"milvus-lite://{tmp_path}/data"
    assert named.name == "default.docs"


LINEAGE_DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator, MilvusDeleteByExprOperator, MilvusSearchToXComOperator,
)

with DAG("milvus_lineage", schedule=None, start_date=pendulum.datetime(2026, 1, 1), catchup=False):
    add = MilvusAddDocumentsOperator(
        task_id="add", collection_name="{collection}", documents=["alpha beta", "gamma delta"], deferrable=False,
    )
    search = MilvusSearchToXComOperator(
        task_id="search", collection_name="{{{{ params.collection }}}}", queries=["alpha"], k=1, deferrable=False,
        params={{"collection": "{collection}"}},
    )
    delete = MilvusDeleteByExprOperator(
        task_id="delete", collection_name="{collection}", expr="text like 'gamma%'", deferrable=False,
    )
    add >> search >> delete
"""


@pytest.fixture
def lineage_events(tmp_path: Path, milvus_lite, collection_name: str):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "milvus_lineage.py").write_text(textwrap.dedent(LINEAGE_DAG.format(collection=collection_name)))
    events_file = tmp_path / "openlineage.jsonl"
    cli = AirflowCLI(
        home=tmp_path / "airflow-home",
        dags_folder=dags,
        env_overrides={
            # A local data directory: resolves to the shared Milvus Lite server on a port that changes.
            "AIRFLOW_CONN_MILVUS_DEFAULT": milvus_connection_json(milvus_lite.data_dir),
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(events_file), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "lineage_test",
        },
    )
    cli.migrate()
    cli.run("dags", "test", "milvus_lineage", "2026-01-01")
    return [json.loads(line) for line in events_file.read_text().splitlines() if line.strip()]


def test_operators_report_their_collection_to_openlineage(lineage_events, milvus_lite, collection_name):
    complete = {
        event["job"]["name"].rsplit(".", 1)[-1]: event
        for event in lineage_events
        if event["eventType"] == "COMPLETE" and event["job"]["name"].startswith("milvus_lineage.")
    }
    assert set(complete) == {"add", "search", "delete"}, [e["job"]["name"] for e in lineage_events]

    expected = {
        "namespace": f"milvus-lite://{Path(milvus_lite.data_dir).resolve()}",
        "name": f"default.{collection_name}",
    }

    def datasets(event, side):
        return [{"namespace": d["namespace"], "name": d["name"]} for d in event.get(side, [])]

    assert (datasets(complete["add"], "inputs"), datasets(complete["add"], "outputs")) == ([], [expected])
    # The search's collection name is a template: the rendered name is reported.
    assert (datasets(complete["search"], "inputs"), datasets(complete["search"], "outputs")) == ([expected], [])
    assert (datasets(complete["delete"], "inputs"), datasets(complete["delete"], "outputs")) == ([], [expected])
