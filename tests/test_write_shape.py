"""The write path's shape: each document is normalised once (the operator does it; the core takes it as is)."""

from __future__ import annotations

import asyncio

from airflow_provider_milvus.core import documents as documents_module
from airflow_provider_milvus.operators import milvus as operators_module

from tests.test_operators import add, docs, run


def test_each_document_is_normalised_once_per_write(milvus_conn_id, collection_name, monkeypatch):
    calls: list[int] = []
    real = documents_module.normalize_documents

    def counting(documents):
        calls.append(len(documents))
        return real(documents)

    monkeypatch.setattr(documents_module, "normalize_documents", counting)
    monkeypatch.setattr(operators_module, "normalize_documents", counting)
    summary = run(add(collection_name, milvus_conn_id, docs(30), replace_by="source"), "inline")
    assert summary["written"] == 30
    assert calls == [30]


def test_embedding_keeps_max_concurrency_requests_in_flight_while_slow_milvus_writes_are_grouped(
    milvus_conn_id, embedding_conn_id, embeddings, collection_name, monkeypatch
):
    """A Milvus write never holds an embedding slot; when Milvus is slower, writes take several batches at once."""
    from pymilvus import AsyncMilvusClient

    writes: list[int] = []
    original = AsyncMilvusClient.upsert

    async def slow_upsert(self, collection, data, *args, **kwargs):
        if collection == collection_name:  # not the source ledger's collection
            writes.append(len(data))
            await asyncio.sleep(0.3)  # a slow server: 20 batches written one by one would take 20 x 0.3 s / 2
        return await original(self, collection, data, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "upsert", slow_upsert)
    embeddings.latency = 0.05
    operator = add(
        collection_name,
        milvus_conn_id,
        docs(200),
        embedding_conn_id=embedding_conn_id,
        replace_by="source",
        batch_size=10,
        max_concurrency=4,
    )
    summary = run(operator, "inline")
    assert summary["written"] == 200
    assert embeddings.stats.peak_in_flight == 4
    assert sum(writes) == 200
    assert len(writes) < summary["batches"] == 20, writes  # rows of several embedding batches per write
