"""Methods (a) and (b): the tutorial's sync loop and its unbounded per-item ``asyncio.gather``.

The store is built like the tutorial's ``init_vector_store`` (its own schema: one column per
metadata key), except ``auto_id=False`` with explicit ids, and an ``OpenAIEmbeddings`` pointed at
the benchmark's embedding service (``check_embedding_ctx_length=False``: no tiktoken download).
Store construction (sync RPCs) is not timed, as in the tutorial.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from langchain_milvus import Milvus
from langchain_openai import OpenAIEmbeddings

from bench.embedding_service import API_KEY, MODEL
from bench.measure import timed
from bench.workloads import SEARCH_K, seed_document

if TYPE_CHECKING:
    from langchain_core.documents import Document


def make_store(uri: str, embedding_url: str, collection: str, *, drop_old: bool = False) -> Milvus:
    embeddings = OpenAIEmbeddings(
        model=MODEL, base_url=embedding_url, api_key=API_KEY, check_embedding_ctx_length=False, max_retries=6
    )
    return Milvus(
        embedding_function=embeddings,
        collection_name=collection,
        connection_args={"uri": uri},
        auto_id=False,
        drop_old=drop_old,
    )


def prepare(uri: str, embedding_url: str, collection: str, docs: list[Document] = ()) -> None:
    """Create ``collection`` fresh (seed document + ``docs`` in one call), untimed."""
    all_docs = [seed_document(), *docs]
    store = make_store(uri, embedding_url, collection, drop_old=True)
    store.add_documents(all_docs, ids=[d.metadata["id"] for d in all_docs])
    store.client.close()


def _ids(docs: list[Document]) -> list[str]:
    return [d.metadata["id"] for d in docs]


# (a) the sync loop: one call per item ------------------------------------------------------------


def sync_add(store: Milvus, docs: list[Document]) -> float:
    with timed() as timer:
        for doc, doc_id in zip(docs, _ids(docs)):
            store.add_documents([doc], ids=[doc_id])
    return timer.seconds


def sync_search(store: Milvus, queries: list[str]) -> float:
    with timed() as timer:
        for query in queries:
            store.similarity_search(query=query, k=SEARCH_K)
    return timer.seconds


def sync_search_by_vector(store: Milvus, vectors: list[list[float]]) -> float:
    """The tutorial's ``similarity_search_by_vector``: vectors computed upstream, no embedding call."""
    with timed() as timer:
        for vector in vectors:
            store.similarity_search_by_vector(embedding=vector, k=SEARCH_K)
    return timer.seconds


def sync_delete(store: Milvus, ids: list[str]) -> float:
    with timed() as timer:
        for doc_id in ids:
            store.delete(expr=f"id == '{doc_id}'")
    return timer.seconds


# (b) the unbounded gather: one task per item, all at once ----------------------------------------


async def _gather_add(store: Milvus, docs: list[Document]) -> None:
    await asyncio.gather(*(store.aadd_documents([doc], ids=[i]) for doc, i in zip(docs, _ids(docs))))


async def _gather_search(store: Milvus, queries: list[str]) -> None:
    await asyncio.gather(*(store.asimilarity_search(query=q, k=SEARCH_K) for q in queries))


async def _gather_search_by_vector(store: Milvus, vectors: list[list[float]]) -> None:
    await asyncio.gather(*(store.asimilarity_search_by_vector(embedding=v, k=SEARCH_K) for v in vectors))


async def _gather_delete(store: Milvus, ids: list[str]) -> None:
    results = await asyncio.gather(*(store.adelete(expr=f"id == '{i}'") for i in ids))
    if not all(results):  # adelete swallows MilvusException and returns False
        raise RuntimeError(f"{results.count(False)} of {len(ids)} adelete calls failed")


def gather(coroutine_function, store: Milvus, items: list) -> float:
    """Time one ``asyncio.run`` of the gather (the store's async client binds to that loop)."""
    with timed() as timer:
        asyncio.run(coroutine_function(store, items))
    return timer.seconds


def gather_add(store: Milvus, docs: list[Document]) -> float:
    return gather(_gather_add, store, docs)


def gather_search(store: Milvus, queries: list[str]) -> float:
    return gather(_gather_search, store, queries)


def gather_search_by_vector(store: Milvus, vectors: list[list[float]]) -> float:
    return gather(_gather_search_by_vector, store, vectors)


def gather_delete(store: Milvus, ids: list[str]) -> float:
    return gather(_gather_delete, store, ids)
