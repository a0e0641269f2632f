"""The example DAGs, run for real with ``airflow dags test`` and a real metadata DB, checked in Milvus."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.conftest import milvus_connection_json

if TYPE_CHECKING:
    from testing.airflow_cli import AirflowCLI

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def corpus(tmp_path) -> Path:
    target = tmp_path / "corpus"
    shutil.copytree(REPO / "dags" / "sample_corpus", target)
    return target


def count(client, collection: str, expr: str = "") -> int:
    return client.query(collection, filter=expr, output_fields=["count(*)"])[0]["count(*)"]


def chunks_by_source(client, collection: str) -> dict[str, set[str]]:
    rows = client.query(collection, filter='pk != ""', output_fields=["pk", "source"], limit=16384)
    result: dict[str, set[str]] = {}
    for row in rows:
        result.setdefault(row["source"], set()).add(row["pk"])
    return result


def ingest(airflow: AirflowCLI, corpus: Path, collection: str, date: str = "2026-01-01"):
    conf = json.dumps({"corpus_dir": str(corpus), "collection": collection})
    return airflow.run("dags", "test", "milvus_nightly_ingest", date, "-c", conf)


def latest_xcom(airflow: AirflowCLI, dag_id: str, task_id: str):
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        (value,) = db.execute(
            "select value from xcom where dag_id=? and task_id=? and key='return_value' order by timestamp desc limit 1",
            (dag_id, task_id),
        ).fetchone()
    return json.loads(value)


def json_output(stdout: str):
    """The CLI's JSON line, without the warnings Airflow prints before it."""
    return json.loads(next(line for line in reversed(stdout.splitlines()) if line.startswith(("[", "{"))))


def test_every_example_dag_imports_without_errors(airflow):
    assert json_output(airflow.run("dags", "list-import-errors", "--local", "-o", "json").stdout) == []
    dag_ids = {d["dag_id"] for d in json_output(airflow.run("dags", "list", "--local", "-o", "json").stdout)}
    assert {
        "milvus_nightly_ingest",
        "milvus_search",
        "milvus_pipeline_upsert",
        "milvus_retention_cleanup",
        "milvus_tenant_maintenance",
        "milvus_rebuild",
        "milvus_rollback",
    } <= dag_ids


def test_every_example_dag_has_docs():
    for path in (REPO / "dags").glob("milvus_*.py"):
        text = path.read_text()
        assert "doc_md=__doc__" in text, path.name
        assert "**Connections:**" in text, path.name


def test_ingest_writes_the_corpus_and_a_rerun_writes_nothing_new(airflow, corpus, collection_name, milvus_client):
    ingest(airflow, corpus, collection_name)
    first = chunks_by_source(milvus_client, collection_name)
    assert set(first) == {p.name for p in corpus.glob("*.md")}
    total = count(milvus_client, collection_name)
    assert total == sum(len(ids) for ids in first.values()) > len(first)

    ingest(airflow, corpus, collection_name)
    assert chunks_by_source(milvus_client, collection_name) == first
    assert count(milvus_client, collection_name) == total
    summary = latest_xcom(airflow, "milvus_nightly_ingest", "write_chunks")
    assert (summary["written"], summary["unchanged"], summary["documents"]) == (0, total, len(first))


def test_ingest_passes_no_corpus_text_through_xcom(airflow, corpus, collection_name):
    ingest(airflow, corpus, collection_name)
    with sqlite3.connect(airflow.home / "airflow.db") as db:
        rows = db.execute("select task_id, length(value) from xcom where dag_id='milvus_nightly_ingest'").fetchall()
    corpus_bytes = sum(p.stat().st_size for p in corpus.glob("*.md"))
    assert {task for task, _ in rows} == {"write_chunks"}
    assert all(size < 1024 for _, size in rows)
    assert corpus_bytes > 3 * 1024


def test_ingest_replaces_a_changed_file_and_removes_a_deleted_one(airflow, corpus, collection_name, milvus_client):
    ingest(airflow, corpus, collection_name)
    before = chunks_by_source(milvus_client, collection_name)
    (corpus / "embeddings-primer.md").write_text("# Embeddings primer\n\nRewritten: a single short paragraph.\n")
    (corpus / "vector-search-tuning.md").unlink()

    ingest(airflow, corpus, collection_name)
    after = chunks_by_source(milvus_client, collection_name)
    assert "vector-search-tuning.md" not in after
    assert not after["embeddings-primer.md"] & before["embeddings-primer.md"], "old chunks of the edited file remain"
    texts = milvus_client.query(collection_name, filter='source == "embeddings-primer.md"', output_fields=["text"])
    assert [t["text"] for t in texts] == ["# Embeddings primer\n\nRewritten: a single short paragraph."]
    untouched = set(before) - {"embeddings-primer.md", "vector-search-tuning.md"}
    assert all(after[s] == before[s] for s in untouched)
    summary = latest_xcom(airflow, "milvus_nightly_ingest", "write_chunks")
    assert summary["vanished_deleted"] == len(before["vector-search-tuning.md"])
    assert summary["vanished_sources"] == 1
    assert summary["written"] + summary["unchanged"] == summary["chunks"]
    assert summary["unchanged"] > 0


def test_search_dag_passes_json_hits_to_the_next_task(airflow, corpus, collection_name):
    ingest(airflow, corpus, collection_name)
    airflow.run("dags", "test", "milvus_search", "-c", json.dumps({"collection": collection_name}))
    hits = latest_xcom(airflow, "milvus_search", "search")
    summary = latest_xcom(airflow, "milvus_search", "print_answers")
    assert len(hits) == 3
    assert all(len(h) == 3 for h in hits)
    assert [s["top_source"] for s in summary] == [
        "full-text-search.md",
        "airflow-deferrable-operators.md",
        "nightly-ingest-runbook.md",
    ]


def seed_dated_chunks(milvus_lite, collection: str, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_SEED", milvus_connection_json(milvus_lite.uri))
    documents = [
        {"page_content": f"chunk {i}", "metadata": {"source": f"s{i}.md", "ingested_on": day}}
        for i, day in enumerate([20260101] * 7 + [20260130] * 2 + [20260131] * 3 + [20260228] * 4)
    ]
    MilvusAddDocumentsOperator(
        task_id="seed", milvus_conn_id="milvus_seed", collection_name=collection, documents=documents
    ).execute(context={})


def test_cleanup_removes_exactly_the_expired_chunks(airflow, milvus_lite, collection_name, milvus_client, monkeypatch):
    seed_dated_chunks(milvus_lite, collection_name, monkeypatch)
    conf = json.dumps({"collection": collection_name, "retention_days": 30})
    airflow.run("dags", "test", "milvus_retention_cleanup", "2026-03-02", "-c", conf)  # cutoff 20260131
    assert latest_xcom(airflow, "milvus_retention_cleanup", "count_expired") | {"elapsed_s": 0} == {
        "operation": "delete",
        "collection": collection_name,
        "matched": 9,
        "deleted": 0,
        "dry_run": True,
        "elapsed_s": 0,
    }
    assert latest_xcom(airflow, "milvus_retention_cleanup", "delete_expired")["deleted"] == 9
    remaining = milvus_client.query(collection_name, filter="ingested_on > 0", output_fields=["ingested_on"])
    assert sorted(r["ingested_on"] for r in remaining) == [20260131] * 3 + [20260228] * 4


def test_cleanup_refuses_a_window_that_would_empty_the_collection(
    airflow, milvus_lite, collection_name, milvus_client, monkeypatch
):
    seed_dated_chunks(milvus_lite, collection_name, monkeypatch)
    conf = json.dumps({"collection": collection_name, "retention_days": 1})
    result = airflow.run("dags", "test", "milvus_retention_cleanup", "2026-06-01", "-c", conf, check=False)
    assert "allow_delete_all" in result.stdout + result.stderr
    assert count(milvus_client, collection_name) == 16


def test_pipeline_upsert_replaces_records_by_their_own_ids(airflow, collection_name, milvus_client):
    airflow.run("dags", "test", "milvus_pipeline_upsert", "-c", json.dumps({"collection": collection_name}))
    changed = [{"record_id": "sku-1002", "title": "Rain jacket", "description": "Now in orange.", "price": 99.0}]
    airflow.run(
        "dags", "test", "milvus_pipeline_upsert", "-c", json.dumps({"collection": collection_name, "records": changed})
    )
    rows = {
        r["pk"]: r
        for r in milvus_client.query(collection_name, filter='pk != ""', output_fields=["pk", "text", "price"])
    }
    assert set(rows) == {"sku-1001", "sku-1002", "sku-1003"}
    assert rows["sku-1002"]["text"] == "Rain jacket. Now in orange."
    assert rows["sku-1002"]["price"] == 99.0


def test_airflow_providers_list_shows_the_provider(airflow):
    assert "airflow-provider-milvus" in airflow.run("providers", "list").stdout


def test_airflow_connections_test_succeeds_against_the_running_server(airflow):
    result = airflow.run("connections", "test", "milvus_default")
    assert "Connection success!" in result.stdout


def test_airflow_connections_test_fails_clearly_on_a_closed_port(airflow):
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    result = airflow.run(
        "connections",
        "test",
        "milvus_closed",
        check=False,
        AIRFLOW_CONN_MILVUS_CLOSED=milvus_connection_json(f"http://127.0.0.1:{port}", timeout=3),
    )
    output = result.stdout + result.stderr
    assert "Connection failed" in output
    assert "Milvus did not answer" in output
    assert time.monotonic() - started < 60


def test_tenant_maintenance_works_on_an_application_collection_without_field_mapping(
    airflow, milvus_lite, milvus_client, embeddings, collection_name
):
    """A collection made with pymilvus (own names, VARCHAR key, partition key, IP index, no dynamic field)."""
    from pymilvus import DataType, MilvusClient

    from testing.servers.embeddings_server import embed_text
    from tests.conftest import EMBEDDING_API_KEY, EMBEDDING_DIMENSIONS

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("ticket_id", DataType.VARCHAR, is_primary=True, max_length=32)
    schema.add_field("subject", DataType.VARCHAR, max_length=500)
    schema.add_field("customer", DataType.VARCHAR, max_length=32, is_partition_key=True)
    schema.add_field("year", DataType.INT64)
    schema.add_field("subject_vec", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("subject_vec", index_type="FLAT", metric_type="IP")
    milvus_client.create_collection(collection_name, schema=schema, index_params=index, num_partitions=4)
    subjects = ["Login page times out", "Refund not received", "Export to CSV broken", "Cannot log in with SSO"]
    milvus_client.insert(
        collection_name,
        [
            {
                "ticket_id": f"{customer}-{year}-{i}",
                "subject": subject,
                "customer": customer,
                "year": year,
                "subject_vec": embed_text(subject, EMBEDDING_DIMENSIONS),
            }
            for customer in ("acme", "zen")
            for year in (2022, 2023, 2025)
            for i, subject in enumerate(subjects)
        ],
    )
    env = {
        "AIRFLOW_CONN_EMBEDDINGS_TEST": json.dumps(
            {
                "conn_type": "openai",
                "host": embeddings.base_url,
                "password": EMBEDDING_API_KEY,
                "extra": {"model": "test"},
            }
        ),
        "AIRFLOW_CONN_MILVUS_DEFAULT": milvus_connection_json(
            milvus_lite.data_dir, embedding_conn_id="embeddings_test"
        ),
    }
    airflow.run(
        "dags",
        "test",
        "milvus_tenant_maintenance",
        "-c",
        json.dumps(
            {
                "collection": collection_name,
                "tenant": "acme",
                "keep_from": 2024,
                "question": "Login fails after password reset",
            }
        ),
        **env,
    )

    rows = milvus_client.query(
        collection_name, filter='ticket_id != ""', output_fields=["ticket_id", "customer", "year"]
    )
    acme = sorted(r["ticket_id"] for r in rows if r["customer"] == "acme")
    assert acme == ["acme-2025-0", "acme-2025-1", "acme-2025-2", "acme-2025-3", "acme-901", "acme-902"]
    assert sum(1 for r in rows if r["customer"] == "zen") == 12  # another tenant is never touched
    assert latest_xcom(airflow, "milvus_tenant_maintenance", "close_stale_tickets")["deleted"] == 8
    hits = latest_xcom(airflow, "milvus_tenant_maintenance", "search_tickets")
    assert len(hits) == 3
    assert all(hit["id"].startswith("acme-") for hit in hits)
    assert hits[0]["id"] == "acme-901"
    assert hits[0]["metadata"] == {"customer": "acme", "year": 2026}


def test_rebuild_dag_switches_the_alias_to_a_version_with_the_new_chunking(
    airflow, corpus, collection_name, milvus_client
):
    conf = {"collection": collection_name, "corpus_dir": str(corpus), "chunk_size": 400, "sample_query": "BM25"}
    airflow.run("dags", "test", "milvus_rebuild", "2026-01-01", "-c", json.dumps(conf))
    first = latest_xcom(airflow, "milvus_rebuild", "rebuild")
    airflow.run("dags", "test", "milvus_rebuild", "2026-01-02", "-c", json.dumps(conf | {"chunk_size": 250}))
    second = latest_xcom(airflow, "milvus_rebuild", "rebuild")
    assert (first["collection"], second["collection"]) == (f"{collection_name}_v1", f"{collection_name}_v2")
    assert second["rows"] == count(milvus_client, f"{collection_name}_v2") > first["rows"]  # smaller chunks
    assert milvus_client.describe_alias(collection_name)["collection_name"] == f"{collection_name}_v2"
    # The rollback (milvus_rollback) is specified in tests/test_rebuild.py: one more `dags test` costs ~50 s here.
