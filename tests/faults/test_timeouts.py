"""A "Milvus" that accepts TCP connections and never answers: tasks fail within the connection timeout."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from airflow_provider_milvus.core.operations import SearchJob, StoreConfig, WriteJob
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
)
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger

from tests.faults.conftest import assert_clear_error

TIMEOUT = 3.0
MARGIN = 1.5  # scheduling noise on a loaded 2-core machine, on top of the baseline measured in the same run


@pytest.fixture(autouse=True)
def _warm_imports() -> None:
    """Import the heavy clients first, so the elapsed time measures the timeout and not imports."""
    import langchain_milvus  # noqa: F401
    import langchain_openai  # noqa: F401
    import pymilvus  # noqa: F401


@pytest.fixture
def bound(make_milvus_conn, embedding_conn, embeddings, collection_name, figures) -> float:
    """TIMEOUT + what failing costs without any waiting, measured now + MARGIN.

    The baseline is the same operator against a port where nothing listens (refused at once): it
    pays the connection lookup, client setup and error handling that the timed runs pay too, on
    this machine under its current load.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn_id = make_milvus_conn(f"http://127.0.0.1:{port}", "faults_refused", timeout=TIMEOUT)
    op = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn_id,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=["a", "b"],
    )
    started = time.monotonic()
    with pytest.raises(MilvusProviderError):
        op.execute(context={})
    baseline = time.monotonic() - started
    figures.measure("refused connection (baseline for the timeout bounds)", f"{baseline:.2f} s")
    return TIMEOUT + baseline + MARGIN


def test_unresponsive_milvus_fails_within_connection_timeout_inline(
    black_hole, make_milvus_conn, embedding_conn, embeddings, collection_name, figures, bound
):
    conn_id = make_milvus_conn(black_hole.uri, timeout=TIMEOUT)
    op = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn_id,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=["a", "b"],
    )
    started = time.monotonic()
    with pytest.raises(MilvusProviderError) as error:
        op.execute(context={})
    elapsed = time.monotonic() - started
    figures.fault("unresponsive_milvus")
    figures.measure("unresponsive Milvus, inline: failed after", f"{elapsed:.1f} s (timeout {TIMEOUT:.0f} s)")
    assert black_hole.accepted >= 1, "the client never reached the black hole"
    assert elapsed < bound, f"took {elapsed:.1f}s with a {TIMEOUT}s timeout (bound {bound:.1f}s)"
    assert_clear_error(error.value, "did not answer", black_hole.uri, where="unresponsive inline")


def test_unresponsive_milvus_fails_within_connection_timeout_inline_delete(
    black_hole, make_milvus_conn, collection_name, figures, bound
):
    conn_id = make_milvus_conn(black_hole.uri, timeout=TIMEOUT)
    op = MilvusDeleteByExprOperator(
        task_id="delete",
        milvus_conn_id=conn_id,
        collection_name=collection_name,
        expr="n > 3",
    )
    started = time.monotonic()
    with pytest.raises(MilvusProviderError) as error:
        op.execute(context={})
    elapsed = time.monotonic() - started
    figures.fault("unresponsive_milvus")
    assert elapsed < bound, f"took {elapsed:.1f}s with a {TIMEOUT}s timeout (bound {bound:.1f}s)"
    assert_clear_error(error.value, "did not answer", where="unresponsive delete")


@pytest.mark.parametrize("operation", ["write", "search"])
@pytest.mark.asyncio
async def test_unresponsive_milvus_fails_within_connection_timeout_in_trigger(
    operation, black_hole, make_milvus_conn, embedding_conn, embeddings, collection_name, figures, tmp_path, bound
):
    conn_id = make_milvus_conn(black_hole.uri, timeout=TIMEOUT)
    store = StoreConfig(milvus_conn_id=conn_id, collection_name=collection_name, embedding_conn_id=embedding_conn)
    job = (
        WriteJob(store=store, documents=[{"page_content": "a", "metadata": {}}])
        if operation == "write"
        else SearchJob(store=store, queries=["a"])
    )
    trigger = MilvusOperationTrigger(operation=operation, job=job.to_dict(), staging_url=str(tmp_path))
    started = time.monotonic()
    # The outer wait_for only guards the test run; the trigger must end well before it.
    event = await asyncio.wait_for(trigger.run().__anext__(), TIMEOUT * 10)
    elapsed = time.monotonic() - started
    figures.fault("unresponsive_milvus")
    figures.measure(f"unresponsive Milvus, trigger {operation}: failed after", f"{elapsed:.1f} s")
    assert event.payload["status"] == "error"
    assert elapsed < bound, f"took {elapsed:.1f}s with a {TIMEOUT}s timeout (bound {bound:.1f}s)"
    assert_clear_error(event.payload["message"], "did not answer", where=f"unresponsive trigger {operation}")
