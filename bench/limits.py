"""Method (d), the limit: the same dataflow as the operator core with raw clients and nothing else.

* Writes: per batch, one raw ``httpx`` POST to ``/v1/embeddings`` (base64, decoded with numpy) then one
  raw ``AsyncMilvusClient.insert`` of the rows; ``concurrency`` batches in flight.
* Searches: per batch of ``batch`` queries, one raw embedding request then one nq-batched
  ``AsyncMilvusClient.search(data=[vectors...])``; ``concurrency`` batches in flight.
* Deletes: one raw ``delete(filter=...)`` plus one ``count(*)`` (what an exact count needs at least).

Each stage alone (Milvus with precomputed vectors, embeddings alone) is timed too and goes in the
notes, with the computed embedding ceiling ``concurrency x batch / (latency + latency_per_input x batch)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import httpx

from bench.embedding_service import API_KEY, MODEL
from bench.measure import timed
from bench.workloads import SEARCH_K

if TYPE_CHECKING:
    from langchain_core.documents import Document


async def _pool(items: Sequence, work: Callable[[object], Awaitable[None]], concurrency: int) -> None:
    queue = list(reversed(items))

    async def worker() -> None:
        while queue:
            await work(queue.pop())

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(items)))))


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# Embedding service -----------------------------------------------------------------------------------


def hammer_embeddings(base_url: str, texts: list[str], *, batch: int, concurrency: int) -> float:
    """Seconds to embed ``texts`` in requests of ``batch`` inputs, ``concurrency`` at a time."""

    async def run() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        headers = {"Authorization": f"Bearer {API_KEY}"}
        async with httpx.AsyncClient(base_url=base_url, limits=limits, headers=headers, timeout=120) as client:

            async def post(chunk: Sequence[str]) -> None:
                response = await client.post(
                    "/embeddings", json={"input": list(chunk), "model": MODEL, "encoding_format": "base64"}
                )
                response.raise_for_status()
                assert len(response.json()["data"]) == len(chunk)

            await _pool(_batches(texts, batch), post, concurrency)

    with timed() as timer:
        asyncio.run(run())
    return timer.seconds


# Milvus ----------------------------------------------------------------------------------------------


def create_collection(uri: str, collection: str, dimensions: int) -> None:
    """Same schema and index as the provider's defaults (``NewCollection``), created and loaded, untimed."""
    from pymilvus import MilvusClient

    from airflow_provider_milvus.core.collection import CONSISTENCY, NewCollection

    schema, index = NewCollection(full_text_search=False).schema_and_index(dimensions)
    client = MilvusClient(uri=uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.create_collection(collection, schema=schema, index_params=index, consistency_level=CONSISTENCY)
        client.load_collection(collection)
    finally:
        client.close()


def rows_for(docs: list[Document], dimensions: int) -> list[dict]:
    """Precomputed rows (pk, text, vector, dynamic metadata), embedded like the server embeds."""
    from testing.servers.embeddings_server import embed_text

    return [
        {"pk": d.metadata["id"], "text": d.page_content, "vector": embed_text(d.page_content, dimensions), **d.metadata}
        for d in docs
    ]


def flush(uri: str, collection: str) -> None:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        client.flush(collection)
    finally:
        client.close()


def _milvus(
    uri: str, body: Callable[[object], Awaitable[None]], *, embedding_url: str | None = None, concurrency: int = 1
) -> float:
    """Time ``body(client)`` (or ``body(client, http)``) on a connected client, like a warm operator session."""

    async def run() -> float:
        from pymilvus import AsyncMilvusClient

        client = AsyncMilvusClient(uri=uri)
        http = None
        try:
            await client.list_collections()  # connect before timing, like a warm client
            if embedding_url:
                limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
                http = httpx.AsyncClient(
                    base_url=embedding_url, limits=limits, timeout=120, headers={"Authorization": f"Bearer {API_KEY}"}
                )
            with timed() as timer:
                await (body(client, http) if http else body(client))
            return timer.seconds
        finally:
            if http is not None:
                await http.aclose()
            await client.close()

    return asyncio.run(run())


async def _embed(http: httpx.AsyncClient, texts: Sequence[str]) -> list[list[float]]:
    import base64

    import numpy as np

    response = await http.post("/embeddings", json={"input": list(texts), "model": MODEL, "encoding_format": "base64"})
    response.raise_for_status()
    data = response.json()["data"]
    return [np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4").tolist() for item in data]


def milvus_insert(uri: str, collection: str, rows: list[dict], *, batch: int, concurrency: int) -> float:
    """Milvus stage alone: insert precomputed rows."""

    async def body(client) -> None:
        await _pool(_batches(rows, batch), lambda chunk: client.insert(collection, list(chunk)), concurrency)

    return _milvus(uri, body)


def pipeline_insert(
    uri: str,
    embedding_url: str,
    collection: str,
    rows: list[dict],
    *,
    batch: int,
    concurrency: int,
    upsert: bool = False,
) -> float:
    """The raw write pipeline: per batch, embed its texts then insert (or upsert) its rows with those vectors."""

    async def body(client, http) -> None:
        write = client.upsert if upsert else client.insert

        async def one(chunk: Sequence[dict]) -> None:
            vectors = await _embed(http, [r["text"] for r in chunk])
            await write(collection, [r | {"vector": v} for r, v in zip(chunk, vectors)])

        await _pool(_batches(rows, batch), one, concurrency)

    return _milvus(uri, body, embedding_url=embedding_url, concurrency=concurrency)


SEARCH_OUTPUT = ["text", "id", "score", "category"]


def milvus_search(uri: str, collection: str, vectors: list[list[float]], *, batch: int, concurrency: int) -> float:
    """Milvus stage alone: nq-batched searches of precomputed vectors."""

    async def body(client) -> None:
        async def one(chunk) -> None:
            result = await client.search(collection, list(chunk), limit=SEARCH_K, output_fields=SEARCH_OUTPUT)
            assert len(result) == len(chunk)

        await _pool(_batches(vectors, batch), one, concurrency)

    return _milvus(uri, body)


def pipeline_search(
    uri: str, embedding_url: str, collection: str, queries: list[str], *, batch: int, concurrency: int
) -> float:
    """The raw search pipeline: per batch, one embedding request then one nq-batched search."""

    async def body(client, http) -> None:
        async def one(chunk: Sequence[str]) -> None:
            vectors = await _embed(http, chunk)
            result = await client.search(collection, vectors, limit=SEARCH_K, output_fields=SEARCH_OUTPUT)
            assert len(result) == len(chunk)
            assert all(result)

        await _pool(_batches(queries, batch), one, concurrency)

    return _milvus(uri, body, embedding_url=embedding_url, concurrency=concurrency)


def milvus_delete(uri: str, collection: str, ids: list[str]) -> float:
    """One raw delete-by-filter and one count (an exact deleted count needs at least the count)."""
    quoted = ", ".join(f'"{i}"' for i in ids)
    expr = f"id in [{quoted}]"

    async def body(client) -> None:
        await client.delete(collection, filter=expr)
        rows = await client.query(collection, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
        assert rows[0]["count(*)"] == 0, rows

    return _milvus(uri, body)
