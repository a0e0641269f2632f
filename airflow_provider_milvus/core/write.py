"""
The write core: skip what is stored already, embed and write the rest in bounded batches, remove stale rows.

0. Open: a missing collection is created as a step of its own, after the input has been checked
   against its options (and a foreign ``<collection>__sources`` refused): a refused input leaves nothing.
   It is loaded, and its source ledger created, while its first rows are embedded and written.
1. Plan (``core/plan.py``): the source ledger (``core/ledger.py``) names the verified-unchanged sources,
   which are skipped whole; the rest is looked up (by primary key, or by ``replace_by`` value) in
   batched, bounded lookups and compared chunk by chunk. Unchanged chunks are skipped; a chunk whose
   text is stored already but whose metadata changed keeps its stored vector.
2. Write: embed only what needs a new vector, then upsert (insert for auto-id collections). Embedding and
   writing are separate, overlapping stages: embedding batches of ``batch_size`` keep ``max_concurrency``
   requests in flight while their rows go to Milvus in writes sized for Milvus (``WRITE_ROWS``/``WRITE_BYTES``).
3. Clean up: rows of the written sources that this input no longer has, and with ``delete_missing``
   every source absent from the input, deleted by primary key in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.collection import NewCollection, check_dimension
from airflow_provider_milvus.core.documents import PreparedChunks, SplitOptions, check_text_sizes, prepare_chunks
from airflow_provider_milvus.core.files import read_unread
from airflow_provider_milvus.core.filters import check_field_name, to_literal
from airflow_provider_milvus.core.gather import Flush, Progress, batched, bounded_gather, staged_gather
from airflow_provider_milvus.core.ledger import (
    DIGEST_FIELD,
    SourceTracking,
    check_ledger_is_ours,
    digest_identity,
    forget_digests,
    forget_earlier_collection,
)
from airflow_provider_milvus.core.plan import Plan, plan as plan_write
from airflow_provider_milvus.core.rows import RowBuilder
from airflow_provider_milvus.core.session import KnownVectors, Session, connect
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import WriteJob

log = logging.getLogger(__name__)

DELETE_IDS = 1000  # primary keys per delete request
# Writes are sized for Milvus, not by the embedding batch: a few hundred KB to a few MB per insert keeps the
# per-request overhead small and stays far below the server's gRPC message limit (64 MB by default).
WRITE_ROWS = 1000  # rows per insert / upsert request at most
WRITE_BYTES = 4 << 20  # or this many bytes (strings by length, vectors at 4 bytes per value), whichever first
WRITE_CONCURRENCY = 2  # write requests in flight: one being sent while the next is assembled


@dataclass
class Planned:
    """What a write decided before writing: its documents (unread ones read if their entries failed), chunks, plan."""

    documents: list[dict[str, Any]]
    sources: SourceTracking
    prepared: PreparedChunks
    builder: RowBuilder
    plan: Plan


@dataclass
class Counts:
    """What a run did: embedding inputs sent, rows written."""

    embedded: int = 0
    written: int = 0
    known: int = 0  # vectors taken from ``known_vectors`` instead of the embedding API


async def run_write(job: WriteJob, *, known_vectors: KnownVectors | None = None) -> dict[str, Any]:
    """Write ``job``; ``known_vectors`` (a rebuild's) supplies stored vectors for texts before the embedding API."""
    started = time.monotonic()
    documents = job.documents
    if documents is None:
        documents = await asyncio.to_thread(staging.load_json, job.documents_ref or "")
    name = job.store.collection_name
    if not documents:
        log.info("%s %s: no documents, nothing to write", job.operation, name)
        return _summary(job, started, documents=0, chunks=0, written=0, unchanged=0, embedded=0)
    _check_sources(job, documents)
    given = [len(d["vector"]) for d in documents if d.get("vector") is not None]
    prepared: PreparedChunks | None = None
    async with connect(job.store) as connection:
        with connection.errors(action=f"open collection '{name}'"):
            created = False
            if not await connection.exists():  # check first, create after: a refused input leaves nothing
                unread = {d["metadata"]["source"] for d in documents if d.get("unread")}
                if unread:  # left unread on their listing, but a new collection holds none of them: read them
                    documents = await asyncio.to_thread(_read_unread, job, documents, unread)
                options = NewCollection.from_value(job.store.new_collection)
                prepared = await asyncio.to_thread(_prepare, job, documents, max_text_bytes=options.text_max_length)
                dimension = given[0] if given else None
                expected = await connection.expected_schema(options, vector_dimension=dimension)
                await asyncio.to_thread(RowBuilder(expected, job.store.partition_key_value).check, prepared.chunks)
                tracked = bool(job.replace_by and job.track_sources)
                if tracked:
                    await check_ledger_is_ours(connection.client, name, request_timeout=connection.settings.timeout)
                # Another writer (a shard of the same new collection) may have created it meanwhile and recorded
                # ledger entries since: this run then neither forgets them nor treats the collection as its own.
                if not await connection.exists():
                    if tracked:
                        await forget_earlier_collection(
                            connection.client, name, request_timeout=connection.settings.timeout
                        )
                    created = await connection.create_collection(options, vector_dimension=dimension)
            session = await connection.open(write=True, metrics=False, created=created)
            session.known_vectors = known_vectors
        try:
            summary = await _write_session(job, session, documents, prepared, started)
        finally:
            await session.close()
    return summary


async def _write_session(
    job: WriteJob,
    session: Session,
    documents: list[dict[str, Any]],
    prepared: PreparedChunks | None,
    started: float,
) -> dict[str, Any]:
    """Check the ledger, plan, write and clean up on an open collection (``prepared``: chunks made before creating)."""
    name = session.name
    # Creating and loading a collection take seconds on a real server. Writes need neither a loaded collection
    # nor the ledger, and a new collection holds nothing to read: both happen while the first rows are embedded.
    background: list[asyncio.Task[None]] = []
    with session.errors(action=f"write to collection '{name}'"):
        if session.created:
            background.append(asyncio.create_task(session.load()))
        try:
            planned = await _plan(job, session, documents, prepared)
            sources, plan, counts = planned.sources, planned.plan, Counts()
            background.append(asyncio.create_task(sources.create_ledger()))
            batches = await _write(session, job, planned.builder, plan, counts)
        finally:  # a failed or cancelled run returns only once they are done (a rebuild then drops what was made)
            await _finish(background)
        for task in background:
            task.result()
        stale = await _delete_ids(session, job, plan.stale, "stale")
        vanished = await _delete_ids(session, job, plan.vanished, "vanished")
        await sources.after_write(planned.prepared.chunks)
        if counts.written or stale or vanished:
            await session.settle(*sources.ledger_names)
    return _summary(
        job,
        started,
        documents=len(planned.documents),
        duplicates=planned.prepared.duplicates,
        chunks=len(planned.prepared.chunks) + sources.skipped_chunks,
        written=counts.written,
        unchanged=plan.unchanged + sources.skipped_chunks,
        skipped_sources=len(sources.skipped),
        embedded=counts.embedded,
        reused_vectors=len(plan.reuse_vector),
        known_vectors=counts.known,
        stale_deleted=stale,
        vanished_deleted=vanished,
        vanished_sources=plan.vanished_sources,
        batches=batches,
        round_trips={"lookup": session.round_trips["lookup"], **session.round_trips},
    )


async def _plan(
    job: WriteJob, session: Session, documents: list[dict[str, Any]], prepared: PreparedChunks | None
) -> Planned:
    """Verify the ledger's entries, split what is not skipped whole and decide what to write and delete."""
    name = session.name
    sources = await SourceTracking.start(session, job, documents, identity=digest_identity(session))
    if sources.unverified:  # left unread on their listing, but their rows changed since: read them now
        log.info(
            "%s %s: %d files left unread on their listing no longer match their ledger entries: reading them",
            job.operation,
            name,
            len(sources.unverified),
        )
        documents = await asyncio.to_thread(_read_unread, job, documents, sources.unverified)
        sources = await SourceTracking.start(session, job, documents, identity=digest_identity(session))
    if prepared is None:
        prepared = await asyncio.to_thread(_prepare, job, *sources.to_split(documents))
    chunks = prepared.chunks
    sources.stamp(chunks)
    builder = RowBuilder(session.schema, session.tenant)
    await asyncio.to_thread(_check_job, job, session, builder, chunks)
    plan = await plan_write(session, job, builder, chunks, sources)
    log.info(
        "%s %s: %d sources skipped whole (%d chunks), %d chunks compared: %d unchanged, %d to write, "
        "%d stale, %d of %d vanished sources",
        job.operation,
        name,
        len(sources.skipped),
        sources.skipped_chunks,
        len(chunks),
        plan.unchanged,
        len(plan.to_write),
        len(plan.stale),
        len(plan.vanished),
        plan.vanished_sources,
    )
    await sources.before_write()
    if plan.replaced_digests:  # an untracked write changes rows of tracked sources: re-check them
        await forget_digests(session, plan.replaced_digests)
    return Planned(documents, sources, prepared, builder, plan)


async def _finish(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for ``tasks``; an error of theirs is raised by ``result()`` after a run that succeeded, else dropped."""
    if not tasks:
        return
    await asyncio.wait(tasks)
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved: a run that fails anyway reports its own error, not this one


def _read_unread(job: WriteJob, documents: list[dict[str, Any]], sources: set[Any]) -> list[dict[str, Any]]:
    return read_unread(documents, sources, conn_id=job.source_conn_id, encoding=job.source_encoding)


def _prepare(
    job: WriteJob, documents: list[dict[str, Any]], ids: list[Any] | None = None, *, max_text_bytes: int | None = None
) -> PreparedChunks:
    """Split and id (CPU work, in a thread); ``max_text_bytes``: a new collection's text size, checked first."""
    prepared = prepare_chunks(
        documents,
        ids=ids if ids is not None else job.ids,
        id_key=job.id_key or None,
        split=SplitOptions(chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap),
        tenant=job.store.partition_key_value,
        scope_key=job.replace_by or None,
        normalized=True,  # the operator normalised them: each document is normalised once
    )
    if max_text_bytes is not None:
        check_text_sizes(prepared.chunks, max_text_bytes)
    return prepared


def _check_sources(job: WriteJob, documents: list[dict[str, Any]]) -> None:
    """Every document names its source (``replace_by``) with a string or a number; checked before anything runs."""
    if job.delete_missing and not job.replace_by:
        raise MilvusProviderError("delete_missing needs replace_by: the metadata key that names each source.")
    if not job.replace_by:
        return
    key = check_field_name(job.replace_by)
    for position, doc in enumerate(documents):
        value = doc["metadata"].get(key)
        if value is None:
            raise MilvusProviderError(f"Document {position} has no metadata '{key}' (replace_by).")
        if isinstance(value, (dict, list, bool)) or not isinstance(value, (str, int, float)):
            raise MilvusProviderError(
                f"Document {position}: metadata '{key}' (replace_by) must be a string or a number, "
                f"got {type(value).__name__}."
            )


def _check_job(job: WriteJob, session: Session, builder: RowBuilder, chunks: list[dict[str, Any]]) -> None:
    schema = session.schema
    builder.check(chunks)
    if schema.auto_id and not job.replace_by:
        raise MilvusProviderError(
            f"Collection '{schema.name}' generates its own primary keys (auto_id), so a re-run could not "
            "recognise rows it wrote before and would duplicate them. Set replace_by to the metadata key "
            "that names each document's source (e.g. replace_by=\"source\"): each source's rows are then "
            "replaced as a whole."
        )
    if job.replace_by and not schema.dynamic and job.replace_by not in schema.scalars:
        raise MilvusProviderError(f"replace_by={job.replace_by!r} is no field of collection '{schema.name}'.")
    # A collection that embeds server-side (schema.writes_vectors False) is written with text only.
    needs_vector = schema.writes_vectors and any(c.get("vector") is None for c in chunks)
    if needs_vector and session.embeddings is None:
        raise MilvusProviderError(
            f"Collection '{schema.name}' stores dense vectors in '{schema.dense.name}' but no embedding "
            "connection is configured: set embedding_conn_id (and embedding_model), or give each document "
            "its own 'vector'."
        )
    if schema.has_dense:
        unfilled = [f.name for f in schema.dense_fields if f.name != schema.dense.name]
        if unfilled:
            raise MilvusProviderError(
                f"Collection '{schema.name}' has more dense vector fields ({', '.join(unfilled)}) than the one this "
                f"task fills ('{schema.dense.name}'); Milvus needs every vector field on write. Write to it with "
                "the application that owns those fields; searches and deletes work with vector_field."
            )


async def _write(session: Session, job: WriteJob, builder: RowBuilder, plan: Plan, counts: Counts) -> int:
    """
    Embed and write ``plan.to_write`` as two overlapping stages (``staged_gather``).

    Embedding keeps ``job.max_concurrency`` requests of ``job.batch_size`` texts in flight; a free writer
    takes the rows embedded so far (in order, up to ``WRITE_ROWS`` rows / ``WRITE_BYTES`` bytes) while later
    batches are still being embedded, so Milvus round trips never hold an embedding slot. At most
    ``_window`` batches' rows are in memory at once. Returns the number of embedding batches.
    """
    schema = session.schema
    batches = batched(plan.to_write, job.batch_size)
    if not batches:
        return 0
    progress = Progress(f"{job.operation} {schema.name}", len(batches), logger=log)
    replace_by_delete = session.upsert_misroutes_partition_key and not schema.auto_id
    write = session.client.insert if schema.auto_id or replace_by_delete else session.client.upsert

    async def embed_batch(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        vectors = await _batch_vectors(session, builder, plan, batch, counts)
        rows = await asyncio.to_thread(lambda: [builder.row(chunk, vectors[i]) for i, chunk in enumerate(batch)])
        for row in rows:
            if plan.clear_digest and row.get(schema.primary) in plan.clear_digest:
                row[DIGEST_FIELD] = ""  # no longer the version its source's ledger entry names
        return rows

    async def write_rows(rows: list[dict[str, Any]]) -> None:
        if replace_by_delete:
            replaced = [pk for pk in (row[schema.primary] for row in rows) if pk in plan.stored]
            if replaced:
                session.round_trips["delete"] += 1
                await session.client.delete(schema.name, ids=replaced, timeout=session.timeout)
        session.round_trips["write"] += 1
        await write(schema.name, rows, timeout=session.timeout)
        counts.written += len(rows)
        await session.wrote(len(rows))

    await staged_gather(
        batches,
        embed_batch,
        write_rows,
        max_concurrency=job.max_concurrency,
        flush=Flush(rows=WRITE_ROWS, weight=WRITE_BYTES),
        window=_window(job.max_concurrency, job.batch_size),
        consume_concurrency=WRITE_CONCURRENCY,
        weight=_row_bytes,
        progress=progress,
        size=len,
    )
    return len(batches)


def _window(max_concurrency: int, batch_size: int) -> int:
    """Batches in memory at once: those being embedded, twice over, plus a write's worth per write slot and one."""
    per_write = -(-WRITE_ROWS // batch_size)
    return 2 * max_concurrency + per_write * (WRITE_CONCURRENCY + 1)


def _row_bytes(row: dict[str, Any]) -> int:
    """Estimate a row's size on the wire: strings by length, vectors at 4 bytes a value, anything else 16."""
    total = 0
    for value in row.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += 4 * len(value)
        else:
            total += 16
    return total


async def _batch_vectors(
    session: Session, builder: RowBuilder, plan: Plan, batch: Sequence[dict[str, Any]], counts: Counts
) -> dict[int, list[float] | None]:
    """Return each chunk's vector, the embedding stage: given, stored, or embedded; None when no vector is sent."""
    vectors: dict[int, list[float] | None] = {i: c.get("vector") for i, c in enumerate(batch)}
    if session.schema.writes_vectors:  # not for BM25-only collections, nor where Milvus embeds (server-side)
        await _fill_vectors(session, builder, plan, batch, vectors, counts)
    return vectors


async def _fill_vectors(
    session: Session,
    builder: RowBuilder,
    plan: Plan,
    batch: Sequence[dict[str, Any]],
    vectors: dict[int, list[float] | None],
    counts: Counts,
) -> None:
    """Fill vectors: stored ones for chunks whose text is unchanged, the embedding API for the rest."""
    schema = session.schema
    reuse = [i for i, c in enumerate(batch) if vectors[i] is None and builder.primary_key(c) in plan.reuse_vector]
    if reuse:
        pks = [builder.primary_key(batch[i]) for i in reuse]
        fields = [schema.primary, schema.text, schema.dense.name]
        rows = await session.query(f"{schema.primary} in {to_literal(pks)}", fields, limit=len(pks))
        stored = {row[schema.primary]: row for row in rows}
        for i in reuse:
            row = stored.get(builder.primary_key(batch[i]))
            # The text is compared here, not trusted from the id: another write may have reused the id.
            if row is not None and row.get(schema.text) == batch[i]["text"]:
                vectors[i] = row[schema.dense.name]
    missing = [i for i in vectors if vectors[i] is None]
    if missing and session.known_vectors is not None:  # a rebuild: the live version's vectors, by text
        known = await session.known_vectors([batch[i]["text"] for i in missing])
        for i in missing:
            vector = known.get(batch[i]["text"])
            if vector is not None and len(vector) == schema.dense.dim:
                vectors[i] = vector
                counts.known += 1
        missing = [i for i in missing if vectors[i] is None]
    if not missing:
        return
    if session.embeddings is None:  # _check_job refuses this before planning
        raise MilvusProviderError("No embedding model to embed new chunks with.")
    embedded = await session.embeddings.aembed_documents([batch[i]["text"] for i in missing])
    counts.embedded += len(missing)
    for i, vector in zip(missing, embedded, strict=True):
        check_dimension(schema, len(vector), "the embedding model's output")
        vectors[i] = list(vector)


async def _delete_ids(session: Session, job: WriteJob, pks: list[Any], what: str) -> int:
    if not pks:
        return 0

    async def delete(batch: Sequence[Any]) -> None:
        session.round_trips["delete"] += 1
        await session.client.delete(session.name, ids=list(batch), timeout=session.timeout)

    await bounded_gather(batched(pks, DELETE_IDS), delete, max_concurrency=job.max_concurrency)
    log.info("%s %s: removed %d %s rows", job.operation, session.name, len(pks), what)
    return len(pks)


def _summary(job: WriteJob, started: float, **counts: Any) -> dict[str, Any]:
    return {
        "operation": job.operation,
        "collection": job.store.collection_name,
        "duplicates": 0,
        **counts,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
