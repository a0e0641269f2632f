"""The async core of every operator: one code path for the worker (``asyncio.run``) and the triggerer.

Each job is plain data (conn ids, collection, sizes), so it can travel as trigger kwargs. Each run
opens one ``AsyncMilvusClient`` on the current event loop and closes it at the end; sync work
(building the LangChain store, reading staged files) goes through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.collection import (
    PRIMARY_FIELD,
    CollectionInfo,
    CollectionSpec,
    build_vector_store,
)
from airflow_provider_milvus.core.documents import check_text_sizes
from airflow_provider_milvus.core.filters import check_field_name, render_filter
from airflow_provider_milvus.core.gather import Progress, batched, bounded_gather
from airflow_provider_milvus.exceptions import (
    MilvusProviderError,
    describe_milvus_error,
)

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_milvus import Milvus
    from pymilvus import AsyncMilvusClient

    from airflow_provider_milvus.hooks.milvus import MilvusConnectionSettings

log = logging.getLogger(__name__)

QUERY_PAGE = 16384  # Milvus caps offset + limit of one query at 16384
SEARCH_TYPES = ("similarity", "similarity_score", "mmr")


@dataclass(frozen=True)
class StoreConfig:
    """Which collection, reached how, embedded how."""

    milvus_conn_id: str = "milvus_default"
    collection_name: str = ""
    embedding_conn_id: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    full_text_search: bool | None = None
    text_max_length: int = 65535


@dataclass(frozen=True)
class Job:
    """Base of all jobs: plain data that round-trips through trigger kwargs."""

    operation: ClassVar[str]
    store: StoreConfig
    batch_size: int = 100
    max_concurrency: int = 8

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every chunk (~10% of a 10k ingest).
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["store"] = dataclasses.asdict(self.store)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        values["store"] = StoreConfig(**values["store"])
        return cls(**values)


@dataclass(frozen=True)
class WriteJob(Job):
    """Upsert chunks ``[{"id", "text", "metadata"}]`` given inline or as a staged reference."""

    operation: ClassVar[str] = "write"
    chunks: list[dict[str, Any]] | None = None
    chunks_ref: str | None = None
    replace_by: str | None = None
    label: str = "write"


@dataclass(frozen=True)
class DeleteJob(Job):
    operation: ClassVar[str] = "delete"
    expr: str = ""
    expr_params: dict[str, Any] = field(default_factory=dict)
    allow_delete_all: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class SearchJob(Job):
    operation: ClassVar[str] = "search"
    batch_size: int = 16  # queries embedded per request; a batch's searches run in turn, batches in parallel
    queries: list[str] | None = None
    queries_ref: str | None = None
    k: int = 4
    search_type: str = "similarity_score"
    expr: str | None = None
    expr_params: dict[str, Any] = field(default_factory=dict)
    fetch_k: int = 20
    lambda_mult: float = 0.5


@dataclass
class Session:
    """One run's connection: settings, one async client on this loop, embeddings, the collection."""

    settings: MilvusConnectionSettings
    client: AsyncMilvusClient
    embeddings: Embeddings | None
    spec: CollectionSpec
    info: CollectionInfo
    secrets: list[str]
    _store: Milvus | None = None

    async def vector_store(self) -> Milvus:
        if self._store is None:
            store = await asyncio.to_thread(
                build_vector_store, self.spec, self.settings, self.embeddings, full_text=self.info.full_text
            )
            # Share this run's client so every call uses one channel on this loop.
            store._async_milvus_client = self.client
            self._store = store
        return self._store

    def errors(self, *, action: str) -> contextlib.AbstractContextManager[None]:
        return describe_milvus_error(self.settings, action=action, secrets=self.secrets)

    async def count(self, expr: str) -> int:
        rows = await self.client.query(
            self.spec.name, filter=expr, output_fields=["count(*)"], consistency_level="Strong"
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def close_store(self) -> None:
        """Close the store's sync client; the async client belongs to ``open_session``."""
        if self._store is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.client.close)


@contextlib.asynccontextmanager
async def open_session(config: StoreConfig, *, create: bool, embed: bool = True) -> AsyncIterator[Session]:
    """Connect, embed (unless ``embed=False``: deletes need no model) and make sure the collection exists."""
    # The first import of pymilvus (grpc, pandas, pyarrow) takes seconds: never on the triggerer's loop.
    await asyncio.to_thread(importlib.import_module, "pymilvus")
    from pymilvus import AsyncMilvusClient

    from airflow_provider_milvus.hooks.milvus import MilvusHook

    if not config.collection_name:
        raise MilvusProviderError("collection_name is empty.")
    settings = await MilvusHook.aget_settings(config.milvus_conn_id)
    embeddings, embedding_secrets = await _aembeddings(config, settings) if embed else (None, [])
    secrets = settings.secrets + embedding_secrets
    spec = CollectionSpec.for_embeddings(
        config.collection_name,
        embeddings,
        full_text_search=config.full_text_search if embed else True,
        text_max_length=config.text_max_length,
    )
    client = AsyncMilvusClient(**settings.client_kwargs())
    session: Session | None = None
    try:
        # secrets: the dimension probe calls the embedding API, whose errors may echo its key.
        with describe_milvus_error(settings, action=f"open collection '{spec.name}'", secrets=secrets):
            info = await spec.aensure_exists(
                client, embeddings, create=create, settings=settings, check_vectors=embed
            )
        session = Session(settings, client, embeddings, spec, info, secrets)
        yield session
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        if session is not None:
            await session.close_store()
        await _aclose_embeddings(embeddings)


async def _aclose_embeddings(embeddings: Embeddings | None) -> None:
    """Close the OpenAI client's HTTP pool on this loop; left to GC it fails later ("Event loop is closed")."""
    client = getattr(getattr(embeddings, "async_client", None), "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            await client.close()


async def _aembeddings(config: StoreConfig, settings: MilvusConnectionSettings) -> tuple[Embeddings | None, list[str]]:
    from airflow.sdk import BaseHook

    from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings

    chosen = EmbeddingSettings.choose(
        settings,
        conn_id=config.embedding_conn_id,
        model=config.embedding_model,
        dimensions=config.embedding_dimensions,
    )
    if chosen is None:
        return None, []
    conn = await BaseHook.aget_connection(chosen.conn_id)
    # Sync: imports langchain_openai on first use and builds two SSL contexts (~0.1 s each).
    embeddings = await asyncio.to_thread(build_embeddings, chosen, conn)
    return embeddings, [conn.password] if conn.password else []


async def run_write(job: WriteJob) -> dict[str, Any]:
    """Upsert every chunk in bounded, batched parallel; idempotent because ids are the primary keys."""
    from langchain_core.documents import Document

    started = time.monotonic()
    chunks = job.chunks if job.chunks is not None else await asyncio.to_thread(staging.load_json, job.chunks_ref)
    collection = job.store.collection_name
    if not chunks:
        log.info("%s %s: no documents, nothing to write", job.label, collection)
        return _summary(job.label, collection, started, chunks=0, written=0, batches=0)
    async with open_session(job.store, create=True) as session:
        with session.errors(action=f"write to collection '{collection}'"):
            await asyncio.to_thread(check_text_sizes, chunks, session.info.text_max_length)
            store = await session.vector_store()
            batches = batched(chunks, job.batch_size)
            progress = Progress(f"{job.label} {collection}", len(batches), logger=log)

            async def upsert(batch: list[dict[str, Any]]) -> None:
                documents = [Document(page_content=c["text"], metadata=c["metadata"]) for c in batch]
                await store.aupsert(
                    ids=[c["id"] for c in batch], documents=documents,
                    batch_size=len(batch), timeout=session.settings.timeout,
                )

            log.info("%s %s: %d chunks in %d batches, %d at a time",
                     job.label, collection, len(chunks), len(batches), job.max_concurrency)
            await bounded_gather(
                batches, upsert, max_concurrency=job.max_concurrency, progress=progress, size=len
            )
            stale = await _remove_stale(session, job, chunks) if job.replace_by else 0
    return _summary(job.label, collection, started, chunks=len(chunks), written=len(chunks),
                    batches=len(batches), stale_deleted=stale)


async def _remove_stale(session: Session, job: WriteJob, chunks: list[dict[str, Any]]) -> int:
    """Delete older chunks of the same ``replace_by`` value (e.g. the same source file) not written now."""
    key = check_field_name(job.replace_by or "")
    ids_by_value: dict[Any, list[str]] = {}
    for chunk in chunks:
        if key not in chunk["metadata"]:
            raise MilvusProviderError(f"Chunk {chunk['id']} has no metadata '{key}' (replace_by).")
        ids_by_value.setdefault(chunk["metadata"][key], []).append(chunk["id"])
    removed = 0
    for value, ids in ids_by_value.items():
        expr = render_filter(f"{key} == {{value}} and {PRIMARY_FIELD} not in {{ids}}", {"value": value, "ids": ids})
        removed += await _delete_matching(session, expr, job)
    if removed:
        log.info("%s %s: removed %d stale chunks", job.label, job.store.collection_name, removed)
    return removed


async def run_delete(job: DeleteJob) -> dict[str, Any]:
    """Delete what ``expr`` matches, refusing empty and match-everything filters unless allowed."""
    started = time.monotonic()
    collection = job.store.collection_name
    expr = render_filter(job.expr, job.expr_params)
    if not expr and not job.allow_delete_all:
        raise MilvusProviderError(
            f"Refusing to delete from '{collection}' with an empty filter expression (it would delete "
            "everything). Pass a filter, or allow_delete_all=True to empty the collection."
        )
    async with open_session(job.store, create=False, embed=False) as session:
        with session.errors(action=f"evaluate filter {expr!r} on '{collection}'"):
            matched = await session.count(expr)
            total = await session.count("")
        if matched == total and total > 0 and not job.allow_delete_all:
            raise MilvusProviderError(
                f"Filter {expr!r} matches all {total} entities of '{collection}'. Refusing to empty the "
                "collection; narrow the filter or pass allow_delete_all=True."
            )
        log.info("delete %s: filter %r matches %d of %d entities%s",
                 collection, expr, matched, total, " (dry run)" if job.dry_run else "")
        if job.dry_run:
            return _summary("delete", collection, started, matched=matched, deleted=0, dry_run=True)
        with session.errors(action=f"delete from '{collection}'"):
            deleted = await _delete_matching(session, expr or f'{PRIMARY_FIELD} != ""', job)
            remaining = await session.count(expr)
    if remaining:
        raise MilvusProviderError(
            f"Deleted {deleted} entities from '{collection}' but {remaining} still match {expr!r}; re-run the task."
        )
    return _summary("delete", collection, started, matched=matched, deleted=deleted, dry_run=False)


async def _delete_matching(session: Session, expr: str, job: Job) -> int:
    """Page through matching primary keys and delete them by id in bounded, batched parallel."""
    deleted = 0
    collection = session.spec.name
    while True:
        rows = await session.client.query(
            collection, filter=expr, output_fields=[PRIMARY_FIELD], limit=QUERY_PAGE, consistency_level="Strong"
        )
        pks = [row[PRIMARY_FIELD] for row in rows]
        if not pks:
            return deleted
        batches = batched(pks, job.batch_size)
        progress = Progress(f"delete {collection}", len(batches), logger=log)

        async def delete(batch: list[str]) -> None:
            await session.client.delete(collection, ids=list(batch), timeout=session.settings.timeout)

        await bounded_gather(batches, delete, max_concurrency=job.max_concurrency, progress=progress, size=len)
        deleted += len(pks)
        if len(pks) < QUERY_PAGE:
            return deleted


async def run_search(job: SearchJob) -> list[list[dict[str, Any]]]:
    """Run every query with the same bounded gather; hits are plain JSON (XCom-safe)."""
    if job.search_type not in SEARCH_TYPES:
        raise MilvusProviderError(f"search_type must be one of {SEARCH_TYPES}, got {job.search_type!r}.")
    queries = job.queries if job.queries is not None else await asyncio.to_thread(staging.load_json, job.queries_ref)
    if not queries:
        log.info("search %s: no queries", job.store.collection_name)
        return []
    for position, query in enumerate(queries):
        if not isinstance(query, str) or not query.strip():
            raise MilvusProviderError(f"Query {position} is empty; every query must be a non-empty string.")
    expr = render_filter(job.expr, job.expr_params) or None
    collection = job.store.collection_name
    async with open_session(job.store, create=False) as session:
        with session.errors(action=f"search collection '{collection}'"):
            store = await session.vector_store()
            if expr:
                await session.count(expr)  # validates the filter with a clear error before fan-out
            hybrid = {"ranker_type": "rrf"} if session.embeddings is not None and session.info.full_text else {}
            if job.search_type == "mmr" and session.embeddings is None:
                raise MilvusProviderError("search_type='mmr' needs dense embeddings; this collection is BM25-only.")

            # Dense-only collections embed a whole batch of queries in one request; BM25 and hybrid
            # searches need the query text itself.
            by_vector = session.embeddings is not None and not session.info.full_text
            keep_score = job.search_type == "similarity_score"
            timeout = session.settings.timeout

            async def search_one(query: str, vector: list[float] | None) -> list[dict[str, Any]]:
                if job.search_type == "mmr":
                    mmr = {"k": job.k, "fetch_k": job.fetch_k, "lambda_mult": job.lambda_mult, "expr": expr,
                           "timeout": timeout}
                    docs = await (store.amax_marginal_relevance_search_by_vector(vector, **mmr) if vector
                                  else store.amax_marginal_relevance_search(query, **mmr))
                    return [_hit(doc, None) for doc in docs]
                pairs = await (
                    store.asimilarity_search_with_score_by_vector(vector, k=job.k, expr=expr, timeout=timeout)
                    if vector
                    else store.asimilarity_search_with_score(query, k=job.k, expr=expr, timeout=timeout, **hybrid)
                )
                return [_hit(doc, score if keep_score else None) for doc, score in pairs]

            async def search_batch(batch: list[str]) -> list[list[dict[str, Any]]]:
                vectors = await session.embeddings.aembed_documents(list(batch)) if by_vector else [None] * len(batch)
                return [await search_one(query, vector) for query, vector in zip(batch, vectors, strict=True)]

            batches = batched(queries, job.batch_size)
            progress = Progress(f"search {collection}", len(batches), logger=log)
            results = await bounded_gather(
                batches, search_batch, max_concurrency=job.max_concurrency, progress=progress, size=len
            )
            return [hits for batch_hits in results for hits in batch_hits]


def _hit(doc: Any, score: float | None) -> dict[str, Any]:
    metadata = json.loads(json.dumps(doc.metadata, default=str))
    return {"page_content": doc.page_content, "metadata": metadata, "score": None if score is None else float(score)}


def _summary(operation: str, collection: str, started: float, **counts: Any) -> dict[str, Any]:
    elapsed = time.monotonic() - started
    return {"operation": operation, "collection": collection, **counts, "elapsed_s": round(elapsed, 3)}


OPERATIONS = {"write": (WriteJob, run_write), "delete": (DeleteJob, run_delete), "search": (SearchJob, run_search)}


async def run_job(operation: str, job_data: dict[str, Any]) -> Any:
    """Entry point shared by operators and the trigger: rebuild the job from plain data and run it."""
    job_type, runner = OPERATIONS[operation]
    return await runner(job_type.from_dict(job_data))
