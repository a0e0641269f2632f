"""Method (d), the limit: what the services alone can do at the same batch size and concurrency.

* Milvus: raw ``AsyncMilvusClient`` insert / search / delete of precomputed vectors, no LangChain.
* Embeddings: ``httpx`` hammering ``/v1/embeddings`` directly, plus the computed ceiling
  ``concurrency x batch / (latency + latency_per_input x batch)``.

The limit of a pipeline is its slowest stage, so the limit time is the larger of the two
(embedding and Milvus stages overlap perfectly in the best case).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import httpx
from langchain_core.documents import Document

from bench.embedding_service import API_KEY, MODEL
from bench.measure import timed
from bench.workloads import SEARCH_K


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
    """Same schema and index as the provider's (``CollectionSpec``), created and loaded, untimed."""
    from pymilvus import MilvusClient

    from airflow_provider_milvus.core.collection import CollectionSpec

    schema, index = CollectionSpec(collection, dense=True, full_text=False).schema_and_index(dimensions)
    client = MilvusClient(uri=uri)
    try:
        if client.has_collection(collection):
            client.drop_collection(collection)
        client.create_collection(collection, schema=schema, index_params=index)
        client.load_collection(collection)
    finally:
        client.close()


def rows_for(docs: list[Document], dimensions: int) -> list[dict]:
    """Precomputed rows (pk, text, vector, dynamic metadata), embedded like the server embeds."""
    from tests.servers.embeddings_server import embed_text

    return [
        {"pk": d.metadata["id"], "text": d.page_content, "vector": embed_text(d.page_content, dimensions), **d.metadata}
        for d in docs
    ]


def _milvus(uri: str, body: Callable[[object], Awaitable[None]]) -> float:
    async def run() -> float:
        from pymilvus import AsyncMilvusClient

        client = AsyncMilvusClient(uri=uri)
        try:
            await client.list_collections()  # connect before timing, like a warm client
            with timed() as timer:
                await body(client)
            return timer.seconds
        finally:
            await client.close()

    return asyncio.run(run())


def milvus_insert(uri: str, collection: str, rows: list[dict], *, batch: int, concurrency: int) -> float:
    async def body(client) -> None:
        await _pool(_batches(rows, batch), lambda chunk: client.insert(collection, list(chunk)), concurrency)

    return _milvus(uri, body)


def milvus_search(uri: str, collection: str, vectors: list[list[float]], *, concurrency: int) -> float:
    async def body(client) -> None:
        async def one(vector) -> None:
            await client.search(collection, [vector], limit=SEARCH_K, output_fields=["text", "id", "score", "category"],
                                consistency_level="Strong")

        await _pool(vectors, one, concurrency)

    return _milvus(uri, body)


def milvus_delete(uri: str, collection: str, ids: list[str]) -> float:
    quoted = ", ".join(f'"{i}"' for i in ids)

    async def body(client) -> None:
        await client.delete(collection, filter=f"id in [{quoted}]")

    return _milvus(uri, body)
