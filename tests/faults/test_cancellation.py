"""Cancelling a trigger's run() mid-gather: CancelledError propagates, no orphan tasks, clients closed."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_provider_milvus.core.operations import SearchJob, StoreConfig, WriteJob
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger

from tests.faults.conftest import count_entities, documents


@pytest.fixture
def client_tracker(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Record every AsyncMilvusClient and AsyncOpenAI client created during the test."""
    import openai
    import pymilvus

    created: dict[str, list] = {"milvus": [], "openai": []}
    milvus_init, openai_init = pymilvus.AsyncMilvusClient.__init__, openai.AsyncOpenAI.__init__

    def track_milvus(self, *args, **kwargs):
        created["milvus"].append(self)
        milvus_init(self, *args, **kwargs)

    def track_openai(self, *args, **kwargs):
        created["openai"].append(self)
        openai_init(self, *args, **kwargs)

    monkeypatch.setattr(pymilvus.AsyncMilvusClient, "__init__", track_milvus)
    monkeypatch.setattr(openai.AsyncOpenAI, "__init__", track_openai)
    return created


async def _cancel_mid_gather(trigger: MilvusOperationTrigger, embeddings, in_flight: int) -> float:
    task = asyncio.create_task(trigger.run().__anext__())
    deadline = time.monotonic() + 60
    while embeddings.stats.in_flight < in_flight:  # the bounded gather is saturated
        assert not task.done(), task
        assert time.monotonic() < deadline, "gather never got going"
        await asyncio.sleep(0.01)
    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return time.monotonic() - started


async def _settled(embeddings, wait_s: float = 30) -> None:
    """Wait (polling) until the server has finished the cancelled requests and the loop has run their callbacks."""
    deadline = time.monotonic() + wait_s
    while embeddings.stats.in_flight:
        assert time.monotonic() < deadline, f"{embeddings.stats.in_flight} requests still in flight"
        await asyncio.sleep(0.01)
    for _ in range(3):  # let done-callbacks of the closed connections run
        await asyncio.sleep(0)


def _assert_clean(before: set[asyncio.Task], created: dict[str, list]) -> None:
    orphans = {t for t in asyncio.all_tasks() if t not in before and t is not asyncio.current_task()}
    assert not orphans, f"orphaned tasks: {orphans}"
    milvus_clients, openai_clients = created["milvus"], created["openai"]
    assert milvus_clients
    assert openai_clients
    # A closed (or never connected) AsyncMilvusClient holds no handler; a connected one does.
    assert all(c._handler is None for c in milvus_clients), "an AsyncMilvusClient was left open"
    assert any(c._closed for c in milvus_clients), "the session's AsyncMilvusClient was not closed"
    assert all(c.is_closed() for c in openai_clients), "the embedding HTTP client was left open"


@pytest.mark.asyncio
async def test_cancelling_write_trigger_mid_gather_propagates_and_closes_clients(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, client_tracker, figures, tmp_path
):
    before = set(asyncio.all_tasks())
    embeddings.latency = 0.5
    job = WriteJob(
        store=StoreConfig(
            milvus_conn_id=shared_conn, collection_name=collection_name, embedding_conn_id=embedding_conn
        ),
        documents=[{"page_content": f"chunk {i}", "metadata": {"id": f"c{i}"}} for i in range(400)],
        id_key="id",
        batch_size=10,
        max_concurrency=4,
    )
    trigger = MilvusOperationTrigger(operation="write", job=job.to_dict(), staging_url=str(tmp_path))
    cancel_took = await _cancel_mid_gather(trigger, embeddings, in_flight=4)
    figures.fault("cancellation")
    figures.measure("cancel mid-gather: CancelledError after", f"{cancel_took * 1000:.0f} ms")
    assert cancel_took < 2.0
    await _settled(embeddings)  # the cancelled HTTP requests finish server-side; nothing may be left client-side
    _assert_clean(before, client_tracker)
    written = await asyncio.to_thread(count_entities, milvus_lite.uri, collection_name)
    assert written is not None, "cancellation came too late to test anything"
    assert written < 400, "cancellation came too late to test anything"


@pytest.mark.asyncio
async def test_cancelling_search_trigger_mid_gather_propagates_and_closes_clients(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, client_tracker, figures, tmp_path
):
    await asyncio.to_thread(
        MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=shared_conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            documents=documents(50),
        ).execute,
        {},
    )
    client_tracker["milvus"].clear()
    client_tracker["openai"].clear()
    before = set(asyncio.all_tasks())
    embeddings.latency = 0.5
    job = SearchJob(
        store=StoreConfig(
            milvus_conn_id=shared_conn, collection_name=collection_name, embedding_conn_id=embedding_conn
        ),
        queries=[f"topic {i}" for i in range(100)],
        max_concurrency=6,
    )
    trigger = MilvusOperationTrigger(operation="search", job=job.to_dict(), staging_url=str(tmp_path))
    assert await _cancel_mid_gather(trigger, embeddings, in_flight=6) < 2.0
    figures.fault("cancellation")
    await _settled(embeddings)
    _assert_clean(before, client_tracker)
