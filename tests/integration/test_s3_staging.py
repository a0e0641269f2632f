"""Staging on a real S3 HTTP endpoint (moto's server on loopback), and what happens when staging is wrong.

The end-to-end runs through a real Airflow deployment (worker and two triggerers with separate temp
directories, staging on ``s3://``) are in ``test_triggerer_failover.py`` and ``test_several_writers.py``;
here the staging module and the operators' deferral-time check are driven directly:

- a bad staging configuration (unknown bucket, no credentials, unreachable endpoint, undefined
  connection) fails the task *before* it defers, with a message naming the URL and the problem;
- orphans (deferral timeouts, killed tasks) are reclaimed by age with ``staging.cleanup``;
- a local staging directory that another host cannot see fails in the trigger with
  "staging_url must be shared storage", the path and both hosts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.integration.multihost import record_figure

pytestmark = pytest.mark.integration
pytest.importorskip("moto", reason="needs the test extra (moto[server], s3fs, apache-airflow-providers-amazon)")
pytest.importorskip("s3fs")
pytest.importorskip("airflow.providers.amazon")

from testing.servers.s3_server import REGION, SECRET_KEY, S3Server  # noqa: E402

BUCKET = "staging-tests"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with S3Server(log_path=tmp_path_factory.mktemp("moto") / "s3.log") as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def s3_conn(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AIRFLOW_CONN_STAGING_OK", s3.connection_json())
    return "staging_ok"


def docs(n: int) -> list[dict[str, Any]]:
    return [{"page_content": f"staged document {i} " + "pad " * 20, "metadata": {"doc_id": f"s-{i}"}} for i in range(n)]


def deferred_add(
    staging_url: str, collection: str = "staging_check", n: int = 500, **kwargs: Any
) -> MilvusAddDocumentsOperator:
    return MilvusAddDocumentsOperator(
        task_id="add",
        collection_name=collection,
        documents=docs(n),
        id_key="doc_id",
        deferrable=True,
        inline_max_items=0,
        staging_url=staging_url,
        **kwargs,
    )


def test_stage_read_remove_through_s3(s3: S3Server, s3_conn: str) -> None:
    url = f"s3://{s3_conn}@{BUCKET}/round-trip"
    staging.check_staging(url)
    reference = staging.stage_json({"chunks": list(range(1000))}, staging_url=url, name_hint="add-chunks")
    assert reference.startswith(f"{url}/add-chunks-")
    assert staging.host_of(reference) == staging.this_host()
    assert s3.keys(BUCKET, "round-trip/") == [reference.removeprefix(f"s3://{s3_conn}@{BUCKET}/")]
    assert staging.load_json(reference) == {"chunks": list(range(1000))}
    # Identical payloads staged twice (two runs of the same input) never share an object.
    assert staging.stage_json({"chunks": [1]}, staging_url=url, name_hint="x") != staging.stage_json(
        {"chunks": [1]}, staging_url=url, name_hint="x"
    )
    for key in s3.keys(BUCKET, "round-trip/"):
        assert staging.remove(f"s3://{s3_conn}@{BUCKET}/{key}")
    assert s3.keys(BUCKET, "round-trip/") == []  # the probe was removed too


def test_deferral_stages_on_s3_and_execute_complete_removes_it_on_error_too(s3: S3Server, s3_conn: str) -> None:
    url = f"s3://{s3_conn}@{BUCKET}/defer"
    operator = deferred_add(url)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    _, kwargs = deferred.value.trigger.serialize()
    assert kwargs["job"]["documents"] is None
    assert kwargs["job"]["documents_ref"].startswith(f"{url}/add-documents-")
    assert len(s3.keys(BUCKET, "defer/")) == 1
    with pytest.raises(staging.MilvusProviderError, match="boom"):
        operator.execute_complete(context={}, event={"status": "error", "message": "boom"}, **deferred.value.kwargs)
    assert s3.keys(BUCKET, "defer/") == [], "the staged input must be removed when the trigger failed too"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


BAD_STAGING = {
    # case: (connection extra/login changes, bucket, words the message must contain)
    "unknown bucket": ({}, "no-such-bucket", ["bucket does not exist", "s3://{conn}@no-such-bucket/p"]),
    "no credentials": ({"login": None, "password": None}, BUCKET, ["credentials", "s3://{conn}@"]),
    "unreachable endpoint": ({"endpoint": "closed"}, BUCKET, ["unreachable", "s3://{conn}@"]),
    "undefined connection": ({"undefined": True}, BUCKET, ["connection '{conn}' is not defined"]),
}


@pytest.mark.parametrize("case", list(BAD_STAGING))
def test_bad_staging_fails_at_deferral_time_with_a_clear_message(
    case: str,
    s3: S3Server,
    milvus_conn_id: str,
    embedding_conn_id: str,
    collection_name: str,
    milvus_client: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    change, bucket, words = BAD_STAGING[case]
    conn = f"bad_staging_{list(BAD_STAGING).index(case)}"  # Airflow caches a filesystem per connection id
    words = [word.format(conn=conn) for word in words]
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    connection = json.loads(s3.connection_json())
    if change.get("endpoint") == "closed":
        connection["extra"]["endpoint_url"] = f"http://127.0.0.1:{_closed_port()}"
    for key in ("login", "password"):
        if key in change:
            connection.pop(key)
    if not change.get("undefined"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn.upper()}", json.dumps(connection))
    prefix = f"p-{collection_name}"
    operator = deferred_add(  # a real Milvus and embeddings: a write that got past the check would land
        f"s3://{conn}@{bucket}/{prefix}",
        collection_name,
        n=5,
        milvus_conn_id=milvus_conn_id,
        embedding_conn_id=embedding_conn_id,
    )
    started = time.monotonic()
    error: Exception | None = None
    try:
        operator.execute(context={})
    except Exception as raised:  # recorded below, whatever it is; asserted after
        error = raised
    elapsed = time.monotonic() - started
    message = str(error) if error is not None else ""
    created = milvus_client.has_collection(collection_name)
    # The check's own probe object is not staged data: moto (unlike S3) accepts an anonymous PUT, then
    # refuses the anonymous DELETE, so without credentials the probe stays (logged; cleanup() reclaims it).
    staged = [key for key in s3.keys(BUCKET, prefix) if "/.probe-" not in key]
    named = all(word.lower() in message.lower() for word in words) and "staging_url" in message
    rejected = isinstance(error, staging.StagingError) and named and SECRET_KEY not in message
    outcome = "rejected" if rejected and not created and not staged else "mishandled"
    record_figure(
        "",
        measure=(f"bad staging: {case}", f"{outcome} before deferring in {elapsed:.1f} s: {type(error).__name__}"),
        bad_input=case,
        bad_input_outcome=outcome,
    )
    assert isinstance(error, staging.StagingError), repr(error)  # raised in execute: never TaskDeferred
    assert all(word.lower() in message.lower() for word in words), message
    assert "staging_url" in message
    assert SECRET_KEY not in message
    assert not created, "a collection was created although staging was refused"
    assert staged == [], staged
    assert elapsed < staging.DEFAULT_CHECK_TIMEOUT + 5


def test_unreachable_endpoint_fails_within_the_check_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A black hole (accepts, never answers) is bounded by [milvus] staging_check_timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    try:
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv(
            "AIRFLOW_CONN_HOLE",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": "k",
                    "password": "secret-key-hole",
                    "extra": {"endpoint_url": f"http://127.0.0.1:{listener.getsockname()[1]}", "region_name": REGION},
                }
            ),
        )
        monkeypatch.setenv("AIRFLOW__MILVUS__STAGING_CHECK_TIMEOUT", "3")
        started = time.monotonic()
        with pytest.raises(staging.StagingError, match="no answer within 3 s"):
            staging.check_staging("s3://hole@bucket/p")
        assert time.monotonic() - started < 6
    finally:
        listener.close()


def test_cleanup_reclaims_orphans_by_age_on_s3_and_local(s3: S3Server, s3_conn: str, tmp_path: Path) -> None:
    # S3 (and moto) report Last-Modified to the whole second, so each time read back may be off by up to 1 s: the
    # objects are written more than 2 s + 1 s apart, and the cleanup cuts at 2 s, well inside both margins.
    for url in (f"s3://{s3_conn}@{BUCKET}/orphans", str(tmp_path / "orphans")):
        old = staging.stage_json({"a": 1}, staging_url=url, name_hint="add-chunks")
        time.sleep(3.2)
        young = staging.stage_json({"b": 2}, staging_url=url, name_hint="search-result")
        assert staging.cleanup(url, older_than=timedelta(hours=1)) == []
        assert staging.cleanup(url, older_than=timedelta(seconds=2)) == [old]
        assert staging.load_json(young) == {"b": 2}
        assert staging.cleanup(url, older_than=timedelta(0)) == [young]
    assert s3.keys(BUCKET, "orphans/") == []
    assert staging.cleanup(f"s3://{s3_conn}@{BUCKET}/never-used") == []


def test_local_staging_seen_from_another_host_fails_in_the_trigger_with_the_fix(
    milvus_conn_id: str,
    embedding_conn_id: str,
    collection_name: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The worker stages on its local disk; the triggerer (another host) does not have the file."""
    monkeypatch.setattr(staging, "this_host", lambda: "worker-host-a")
    operator = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=milvus_conn_id,
        embedding_conn_id=embedding_conn_id,
        collection_name=collection_name,
        documents=docs(500),
        id_key="doc_id",
        deferrable=True,
        inline_max_items=0,
        staging_url=str(tmp_path / "worker-local"),
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    reference = deferred.value.trigger.serialize()[1]["job"]["documents_ref"]
    assert reference.endswith("@worker-host-a.json")
    os.rename(reference, tmp_path / "moved-away.json")  # "on the worker's disk", not here
    monkeypatch.setattr(staging, "this_host", lambda: "triggerer-host-b")
    event = asyncio.run(deferred.value.trigger.run().__anext__()).payload
    message = event.get("message", "")
    named = [
        w for w in ("staging_url must be shared storage", "worker-host-a", "triggerer-host-b", "s3://") if w in message
    ]
    record_figure(
        "",
        measure=(
            "local staging read on another host",
            f"trigger event {event['status']!r}; its message names {', '.join(repr(w) for w in named) or 'nothing'}"
            f"{' and the staged path' if reference in message else ''}",
        ),
    )
    assert event["status"] == "error"
    for words in ("staging_url must be shared storage", reference, "worker-host-a", "triggerer-host-b", "s3://"):
        assert words in message, message


def test_local_staging_with_a_multi_host_executor_warns_at_deferral(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with caplog.at_level(logging.WARNING, logger=staging.__name__):
        staging.check_staging(str(tmp_path / "local"))
    assert staging.SHARED_STORAGE_HINT in caplog.text
    assert "CeleryExecutor" in caplog.text
    caplog.clear()
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    with caplog.at_level(logging.WARNING, logger=staging.__name__):
        staging.check_staging(str(tmp_path / "local"))
    assert staging.SHARED_STORAGE_HINT not in caplog.text
