"""Milvus killed (SIGKILL) in the middle of a 10k-chunk ingest, restarted, and the task re-run (its retry)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger

from testing.servers.milvus_standalone import MilvusStandaloneServer
from tests.conftest import require_standalone_executable
from tests.faults.conftest import (
    CONNECTION_TIMEOUT,
    assert_clear_error,
    assert_exact_ids,
    count_entities,
    documents,
    run_in_thread,
    run_trigger,
    wait_for,
)

N_CHUNKS = 10_000
BATCH_SIZE = 50  # 200 batches
MAX_CONCURRENCY = 2
KILL_AFTER_REQUESTS = 80  # embedding requests (1 per batch + the dimension probe): ~40% through


def _ingest_operator(conn_id: str, embedding_conn: str, collection: str, **kwargs) -> MilvusAddDocumentsOperator:
    return MilvusAddDocumentsOperator(
        task_id="ingest",
        milvus_conn_id=conn_id,
        embedding_conn_id=embedding_conn,
        collection_name=collection,
        documents=documents(N_CHUNKS),
        id_key="doc_id",
        batch_size=BATCH_SIZE,
        max_concurrency=MAX_CONCURRENCY,
        **kwargs,
    )


EXPECTED_IDS = {d["metadata"]["doc_id"] for d in documents(N_CHUNKS)}


def _kill_mid_ingest(start, kill, embeddings, restart):
    """Run ``start`` in a thread, kill Milvus once ingest is mid-way, restart it; return (box, kill->fail s)."""
    embeddings.latency = 0.01  # keeps the 200 batches spread over a few seconds
    thread, box = run_in_thread(start)
    wait_for(lambda: embeddings.stats.requests >= KILL_AFTER_REQUESTS or not thread.is_alive(), what="ingest")
    assert thread.is_alive(), f"ingest finished before the kill: {box}"
    served = embeddings.stats.requests
    kill()
    killed = time.monotonic()
    thread.join(CONNECTION_TIMEOUT * 6)
    assert not thread.is_alive(), "the task hung after Milvus died"
    fail_after = time.monotonic() - killed
    restart()
    embeddings.latency = 0.0
    assert served < N_CHUNKS // BATCH_SIZE, "not mid-way"
    return box, fail_after


def test_milvus_lite_killed_mid_ingest_fails_clearly_then_rerun_writes_exact_ids(
    own_milvus, make_milvus_conn, embedding_conn, embeddings, collection_name, figures
):
    conn_id = make_milvus_conn(str(own_milvus.data_dir))  # a path: resolved to the server's current port
    box, fail_after = _kill_mid_ingest(
        lambda: _ingest_operator(conn_id, embedding_conn, collection_name).execute(context={}),
        own_milvus.kill,
        embeddings,
        own_milvus.restart,
    )
    figures.fault("milvus_sigkill")
    assert "result" not in box, "a summary was returned although Milvus died mid-ingest"
    assert isinstance(box["error"], MilvusProviderError), repr(box["error"])
    assert_clear_error(box["error"], "write to collection", "did not answer", where="lite kill inline")
    assert fail_after < CONNECTION_TIMEOUT + 5
    # Mid-way is proven by the embedding requests served before the kill (the thread was still running);
    # how much of that Milvus Lite kept across SIGKILL varies (0 was seen: it had not flushed yet).
    partial = count_entities(own_milvus.uri, collection_name)
    figures.measure("lite kill (inline): entities that survived the kill", f"{partial} of {N_CHUNKS}")
    assert partial is not None
    assert partial < N_CHUNKS

    result = _ingest_operator(conn_id, embedding_conn, collection_name).execute(context={})  # the Airflow retry
    assert_exact_ids(own_milvus.uri, collection_name, EXPECTED_IDS, figures)
    # What survived is skipped as unchanged; the rest is written.
    assert (result["written"], result["unchanged"]) == (N_CHUNKS - partial, partial), result


def test_milvus_lite_killed_during_deferred_ingest_reports_error_event_then_rerun_writes_exact_ids(
    own_milvus, make_milvus_conn, embedding_conn, embeddings, collection_name, figures, tmp_path
):
    from airflow.sdk.exceptions import TaskDeferred

    conn_id = make_milvus_conn(str(own_milvus.data_dir))
    op = _ingest_operator(conn_id, embedding_conn, collection_name, deferrable=True, staging_url=str(tmp_path))
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, MilvusOperationTrigger)
    kwargs = trigger.serialize()[1]
    assert kwargs["job"]["documents"] is None, "bulk documents must be staged"
    assert kwargs["job"]["documents_ref"], "bulk documents must be staged"

    box, fail_after = _kill_mid_ingest(
        lambda: run_trigger(MilvusOperationTrigger(**kwargs)), own_milvus.kill, embeddings, own_milvus.restart
    )
    figures.fault("milvus_sigkill")
    event = box["result"]
    assert event["status"] == "error", event
    assert_clear_error(event["message"], "write to collection", "did not answer", where="lite kill trigger")
    assert fail_after < CONNECTION_TIMEOUT + 5
    with pytest.raises(MilvusProviderError):
        op.execute_complete({}, event=event, staged=[])  # the task fails; its retry re-runs the trigger
    partial = count_entities(own_milvus.uri, collection_name)
    figures.measure("lite kill (trigger): entities that survived the kill", f"{partial} of {N_CHUNKS}")
    assert partial is not None
    assert partial < N_CHUNKS

    event = run_trigger(MilvusOperationTrigger(**kwargs))
    assert event["status"] == "success", event
    result = op.execute_complete({}, event=event, staged=[kwargs["job"]["documents_ref"]])
    assert_exact_ids(own_milvus.uri, collection_name, EXPECTED_IDS, figures)
    assert (result["written"], result["unchanged"]) == (N_CHUNKS - partial, partial), result
    assert not Path(kwargs["job"]["documents_ref"]).exists(), "staged documents not removed after success"


@pytest.mark.standalone
def test_milvus_standalone_killed_mid_ingest_fails_clearly_then_rerun_writes_exact_ids(
    tmp_path, make_milvus_conn, embedding_conn, embeddings, collection_name, figures
):
    require_standalone_executable()
    server = MilvusStandaloneServer(data_dir=tmp_path / "standalone")
    server.start()
    try:
        conn_id = make_milvus_conn(server.uri, timeout=10)
        box, fail_after = _kill_mid_ingest(
            lambda: _ingest_operator(conn_id, embedding_conn, collection_name).execute(context={}),
            server.kill,
            embeddings,
            server.start,
        )
        figures.fault("milvus_sigkill")
        assert "result" not in box, "a summary was returned although Milvus died mid-ingest"
        assert isinstance(box["error"], MilvusProviderError), repr(box["error"])
        assert_clear_error(box["error"], "write to collection", "did not answer", where="standalone kill")
        assert fail_after < 10 + 10
        partial = count_entities(server.uri, collection_name)
        figures.measure("standalone kill: entities that survived the kill", f"{partial} of {N_CHUNKS}")
        assert partial is not None
        assert partial < N_CHUNKS

        result = _ingest_operator(conn_id, embedding_conn, collection_name).execute(context={})
        assert_exact_ids(server.uri, collection_name, EXPECTED_IDS, figures)
        assert (result["written"], result["unchanged"]) == (N_CHUNKS - partial, partial), result
        # Re-running a completed ingest (a real server does not dedupe inserts) still leaves one copy each.
        _ingest_operator(conn_id, embedding_conn, collection_name).execute(context={})
        assert_exact_ids(server.uri, collection_name, EXPECTED_IDS, figures)
    finally:
        server.stop()
