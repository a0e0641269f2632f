"""Sentinel secrets in the Milvus and embedding connections never show up anywhere Airflow keeps or prints.

Real runs under a real scheduler + triggerer (successes, a missing collection, a rejected API key; each
deferred and inline), then every place is searched: task and trigger log files, every component's
stdout, every table of the metadata DB (trigger kwargs, XCom, rendered template fields, task
instances' next_kwargs, ...), trigger rows seen while alive, and the exception messages themselves.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from testing.servers.embeddings_server import EmbeddingServer
from tests.faults.report import FIGURES
from tests.integration.airflow_stack import (
    COMPONENTS,
    DAGS_FOLDER,
    AirflowStack,
    airflow_stack,
    connection_env,
)
from tests.integration.retries import assert_no_unexplained_retries

pytestmark = pytest.mark.integration

MILVUS_TOKEN = "sentinel-milvus-token-7f3a"
OPENAI_KEY = "sentinel-openai-key-9c1e"
SENTINELS = (MILVUS_TOKEN, OPENAI_KEY)
CONTROL = "positive-control-c0ffee"  # put in a DAG run's conf: proves the DB search finds what is there
DAG_IDS = ["milvus_it_secrets_ok", "milvus_it_secrets_missing_collection", "milvus_it_secrets_bad_key"]


class KeyEchoingServer(EmbeddingServer):
    """Rejects every key with 401 and, worse than OpenAI (which shows a few characters), echoes it whole."""

    def _handler_class(self) -> type:
        base = super()._handler_class()

        class Handler(base):  # type: ignore[misc, valid-type]
            def _answer(self, body: dict) -> None:
                presented = self.headers.get("Authorization", "").removeprefix("Bearer ")
                self._json(
                    401,
                    {
                        "error": {
                            "message": f"Incorrect API key provided: {presented}",
                            "type": "invalid_request_error",
                        }
                    },
                )

        return Handler


@pytest.fixture(scope="module")
def good_api() -> Iterator[EmbeddingServer]:
    with EmbeddingServer(dimensions=32, api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def rejecting_api() -> Iterator[EmbeddingServer]:
    with KeyEchoingServer(dimensions=32) as server:
        yield server


def secret_env(milvus_uri: str, good: EmbeddingServer, rejecting: EmbeddingServer) -> dict[str, str]:
    return connection_env(
        milvus_uri=milvus_uri,
        milvus_token=MILVUS_TOKEN,
        embedding_base_url=good.base_url,
        embedding_api_key=OPENAI_KEY,
        extra_embedding_connections={"embeddings_badkey": (rejecting.base_url, OPENAI_KEY)},
    )


@pytest.fixture(scope="module")
def stack(
    milvus_lite: Any,
    good_api: EmbeddingServer,
    rejecting_api: EmbeddingServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AirflowStack]:
    env = secret_env(milvus_lite.uri, good_api, rejecting_api)
    with airflow_stack(tmp_path_factory.mktemp("airflow-secrets"), DAGS_FOLDER, env=env) as running:
        running.wait_for_dags(DAG_IDS)
        yield running


@pytest.fixture(scope="module")
def runs(stack: AirflowStack) -> dict[str, tuple[str, str]]:
    """dag_id -> (run_id, final state); the three DAGs run concurrently."""
    confs = {
        "milvus_it_secrets_ok": {
            "collection": f"sec_{uuid.uuid4().hex[:10]}",
            "n": 150,
            "prefix": "s",
            "note": CONTROL,
        },
        "milvus_it_secrets_missing_collection": {"collection": f"missing_{uuid.uuid4().hex[:10]}"},
        "milvus_it_secrets_bad_key": {"collection": f"badkey_{uuid.uuid4().hex[:10]}", "n": 150, "prefix": "b"},
    }
    run_ids = {dag_id: stack.trigger(dag_id, conf) for dag_id, conf in confs.items()}
    finished = {dag_id: (run_id, stack.wait_for_run(dag_id, run_id, timeout=240)) for dag_id, run_id in run_ids.items()}
    assert_no_unexplained_retries(stack)  # retries may only hide apache/airflow#72716
    return finished


def exception_messages(job_runs: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Run failing jobs through the async core in this process: the raw exception text, before any log masking."""
    from airflow_provider_milvus.core.operations import run_job

    messages = []
    for operation, job in job_runs:
        try:
            asyncio.run(run_job(operation, job))
        except Exception as error:
            messages.append(f"{type(error).__name__}: {error}")
        else:
            messages.append("(no exception)")
    return messages


def count(text: str) -> dict[str, int]:
    return {secret: text.count(secret) for secret in SENTINELS}


def test_runs_succeed_and_fail_as_expected(
    stack: AirflowStack, runs: dict[str, tuple[str, str]], good_api: EmbeddingServer, rejecting_api: EmbeddingServer
) -> None:
    states = {dag_id: state for dag_id, (_, state) in runs.items()}
    assert states == {
        "milvus_it_secrets_ok": "success",
        "milvus_it_secrets_missing_collection": "failed",
        "milvus_it_secrets_bad_key": "failed",
    }, {dag_id: stack.task_states(dag_id, run_id) for dag_id, (run_id, _) in runs.items()}
    # The sentinel key really was presented (and to the rejecting server too).
    assert f"Bearer {OPENAI_KEY}" in good_api.stats.authorization_headers
    assert f"Bearer {OPENAI_KEY}" in rejecting_api.stats.authorization_headers

    run_id, _ = runs["milvus_it_secrets_missing_collection"]
    for task_id in ("search_deferred", "search_inline"):
        assert "does not exist" in stack.task_log("milvus_it_secrets_missing_collection", run_id, task_id)
    run_id, _ = runs["milvus_it_secrets_bad_key"]
    assert stack.task_states("milvus_it_secrets_bad_key", run_id)["add_deferred"] == "failed"
    for task_id in ("add_deferred", "add_inline"):
        log = stack.task_log("milvus_it_secrets_bad_key", run_id, task_id)
        assert "401" in log or "Incorrect API key" in log, log[-3000:]


def test_sentinel_secrets_appear_nowhere(
    stack: AirflowStack,
    runs: dict[str, tuple[str, str]],
    milvus_lite: Any,
    good_api: EmbeddingServer,
    rejecting_api: EmbeddingServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    places: list[tuple[str, int, dict[str, int]]] = []  # (place, items searched, found per sentinel)

    task_logs = [p for p in stack.all_log_files() if ".log.trigger." not in p.name]
    trigger_logs = [p for p in stack.all_log_files() if ".log.trigger." in p.name]
    assert task_logs
    assert trigger_logs
    for label, files in (("task log files", task_logs), ("triggerer per-trigger log files", trigger_logs)):
        places.append((label, len(files), count("\n".join(p.read_text(errors="replace") for p in files))))
    for name in COMPONENTS:
        places.append((f"{name} stdout log", 1, count(stack.process_log(name))))

    recorded = stack.recorder.all() if stack.recorder else []
    assert recorded, "no trigger row was seen while deferred"
    places.append(
        ("trigger rows (kwargs, seen while alive)", len(recorded), count("\n".join(r.kwargs for r in recorded)))
    )
    for table in (
        "trigger",
        "xcom",
        "rendered_task_instance_fields",
        "task_instance",
        "task_instance_history",
        "dag_run",
        "log",
        "serialized_dag",
    ):
        rows = stack.query(f'SELECT COUNT(*) FROM "{table}"')[0][0]
        places.append((f"metadata DB: {table}", rows, count(stack.table_text(table))))
    all_tables = stack.table_names()
    places.append(
        ("metadata DB: all tables", len(all_tables), count("\n".join(stack.table_text(t) for t in all_tables)))
    )
    assert CONTROL in stack.table_text("dag_run"), "the DB search must find what is stored"

    # The failures' own messages, raised in this process (no Airflow log masking applies here).
    for key, value in secret_env(milvus_lite.uri, good_api, rejecting_api).items():
        monkeypatch.setenv(key, value)
    store = {"milvus_conn_id": "milvus_default", "embedding_conn_id": "embeddings"}
    documents = [{"page_content": "some text", "metadata": {}}]
    messages = exception_messages(
        [
            ("search", {"store": store | {"collection_name": f"missing_{uuid.uuid4().hex[:8]}"}, "queries": ["q"]}),
            (
                "write",
                {
                    "store": store | {"collection_name": "c_bad_key", "embedding_conn_id": "embeddings_badkey"},
                    "documents": documents,
                },
            ),
        ]
    )
    assert "does not exist" in messages[0], messages
    assert "Incorrect API key provided" in messages[1], messages
    places.append(("exception messages (in-process, unmasked)", len(messages), count("\n".join(messages))))

    width = max(len(p[0]) for p in places)
    print(f"\n{'place searched':<{width}}  items  {MILVUS_TOKEN}  {OPENAI_KEY}")
    for place, items, found in places:
        print(
            f"{place:<{width}}  {items:>5}  {found[MILVUS_TOKEN]:>{len(MILVUS_TOKEN)}}  {found[OPENAI_KEY]:>{len(OPENAI_KEY)}}"
        )
    for place, _, found in places:  # into the published secrets figure (tests/faults/report.py)
        FIGURES.secret_scan(f"integration: {place}", sum(found.values()))
    leaks = {place: found for place, _, found in places if any(found.values())}
    assert not leaks, json.dumps(leaks, indent=2)
