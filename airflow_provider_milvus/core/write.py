"""
The write core: skip what is stored already, embed and write the rest in bounded batches, remove stale rows.

1. Plan: read what the collection holds for this input (by primary key, or by ``replace_by`` value)
   in batched, bounded lookups and compare it with the chunks. Unchanged chunks are skipped; a chunk
   whose text is stored already but whose metadata changed keeps its stored vector.
2. Write: embed only what needs a new vector, then upsert (insert for auto-id collections).
3. Clean up: rows of the written sources that this input no longer has, and with ``delete_missing``
   every source absent from the input, deleted by primary key in batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.collection import check_dimension
from airflow_provider_milvus.core.documents import PreparedChunks, SplitOptions, prepare_chunks
from airflow_provider_milvus.core.filters import check_field_name, to_literal
from airflow_provider_milvus.core.gather import Progress, batched, bounded_gather
from airflow_provider_milvus.core.ledger import Check, Entry, Ledger, source_digests, source_key
from airflow_provider_milvus.core.rows import RowBuilder, same_content
from airflow_provider_milvus.core.session import Session, open_session
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import WriteJob
    from airflow_provider_milvus.core.schema import CollectionSchema

log = logging.getLogger(__name__)

LOOKUP_IDS = 1000  # primary keys per "pk in [...]" lookup
LOOKUP_ROWS = 8000  # rows expected per "source in [...]" lookup; one query returns at most 16,384
QUERY_CAP = 16384
DELETE_IDS = 1000  # primary keys per delete request


@dataclass
class Plan:
    """What this run must do, decided before anything is written."""

    to_write: list[dict[str, Any]] = field(default_factory=list)
    stored: set[Any] = field(default_factory=set)  # primary keys of to_write that are stored already
    reuse_vector: set[Any] = field(default_factory=set)
    unchanged: int = 0
    stale: list[Any] = field(default_factory=list)
    vanished: list[Any] = field(default_factory=list)
    vanished_sources: int = 0


@dataclass
class Counts:
    """What a run did: embedding inputs sent, rows written."""

    embedded: int = 0
    written: int = 0


async def run_write(job: WriteJob) -> dict[str, Any]:
    started = time.monotonic()
    documents = job.documents
    if documents is None:
        documents = await asyncio.to_thread(staging.load_json, job.documents_ref or "")
    name = job.store.collection_name
    if not documents:
        log.info("%s %s: no documents, nothing to write", job.label, name)
        return _summary(job, started, documents=0, chunks=0, written=0, unchanged=0, embedded=0)
    _check_sources(job, documents)
    given = [len(d["vector"]) for d in documents if d.get("vector") is not None]
    prepared: PreparedChunks | None = None

    def fits_new_collection(expected: CollectionSchema) -> None:
        nonlocal prepared
        prepared = _prepare(job, documents)
        RowBuilder(expected, job.store.partition_key_value).check(prepared.chunks)  # refused: nothing is made

    dimension = given[0] if given else None
    async with open_session(
        job.store, create=True, vector_dimension=dimension, before_create=fits_new_collection, metrics=False
    ) as session:
        with session.errors(action=f"write to collection '{name}'"):
            sources = await _SourceTracking.start(session, job, documents)
            if prepared is None:
                prepared = await asyncio.to_thread(_prepare, job, *sources.to_split(documents))
            chunks = prepared.chunks
            builder = RowBuilder(session.schema, session.tenant)
            await asyncio.to_thread(_check_job, job, session, builder, chunks)
            plan = await _plan(session, job, builder, chunks, sources)
            counts = Counts()
            log.info(
                "%s %s: %d sources skipped whole (%d chunks), %d chunks compared: %d unchanged, %d to write, "
                "%d stale, %d of %d vanished sources",
                job.label,
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
            batches = await _write(session, job, builder, plan, counts)
            stale = await _delete_ids(session, job, plan.stale, "stale")
            vanished = await _delete_ids(session, job, plan.vanished, "vanished")
            await sources.after_write(chunks)
    return _summary(
        job,
        started,
        documents=len(documents),
        duplicates=prepared.duplicates,
        chunks=len(chunks) + sources.skipped_chunks,
        written=counts.written,
        unchanged=plan.unchanged + sources.skipped_chunks,
        skipped_sources=len(sources.skipped),
        embedded=counts.embedded,
        reused_vectors=len(plan.reuse_vector),
        stale_deleted=stale,
        vanished_deleted=vanished,
        vanished_sources=plan.vanished_sources,
        batches=batches,
        round_trips={"lookup": session.round_trips["lookup"], **session.round_trips},
    )


def _prepare(job: WriteJob, documents: list[dict[str, Any]], ids: list[Any] | None = None) -> PreparedChunks:
    return prepare_chunks(
        documents,
        ids=ids if ids is not None else job.ids,
        id_key=job.id_key or None,
        split=SplitOptions(chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap),
        tenant=job.store.partition_key_value,
    )


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
    needs_vector = schema.has_dense and any(c.get("vector") is None for c in chunks)
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


class _SourceTracking:
    """
    The source ledger's part in one write (``replace_by`` with ``track_sources``).

    Which sources to skip whole, which stored sources to look up, and the entries to forget before
    and record after the write.
    """

    def __init__(self, job: WriteJob, ledger: Ledger | None, values: dict[str, Any], digests: dict[str, str]) -> None:
        self.job = job
        self.ledger = ledger
        self.values = values  # source key -> replace_by value, every source of the input
        self.digests = digests
        self.check = Check()

    @classmethod
    async def start(cls, session: Session, job: WriteJob, documents: list[dict[str, Any]]) -> _SourceTracking:
        key = job.replace_by or ""
        values = {source_key(d["metadata"][key]): d["metadata"][key] for d in documents} if key else {}
        if not (key and job.track_sources):
            return cls(job, None, values, {})
        options = {"chunk_size": job.chunk_size, "chunk_overlap": job.chunk_overlap, "id_key": job.id_key}
        digests = await asyncio.to_thread(source_digests, documents, job.ids, key=key, options=options)
        ledger = Ledger(session, key)
        tracking = cls(job, ledger, values, digests)
        if session.created:
            await ledger.forget_all()  # entries of an earlier collection of this name
        elif job.force:
            tracking.check = Check(known=await ledger.read())
        else:
            tracking.check = await ledger.check(digests, values, max_concurrency=job.max_concurrency)
            if job.delete_missing and not tracking.check.complete:
                tracking.check.skipped = {}  # vanished sources are found by reading the whole scope: skip nothing
        if tracking.check.skipped:
            log.info(
                "%s %s: %d unchanged sources skipped whole (source ledger)",
                job.label,
                session.name,
                len(tracking.skipped),
            )
        return tracking

    @property
    def skipped(self) -> dict[str, Entry]:
        return self.check.skipped

    @property
    def skipped_chunks(self) -> int:
        return sum(entry.chunks for entry in self.skipped.values())

    @property
    def reads_scope(self) -> bool:
        """With ``delete_missing``, vanished sources come from the ledger only when it covers the whole scope."""
        return not self.check.complete

    def vanished(self) -> dict[Any, int]:
        """Ledger sources absent from the input, by ``replace_by`` value, with their chunk counts."""
        return {json.loads(s): e.chunks for s, e in self.check.known.items() if s not in self.values}

    def to_split(self, documents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """Return the documents (and their ``ids``) of the sources not skipped."""
        if not self.skipped:
            return documents, self.job.ids
        key = self.job.replace_by or ""
        kept = [i for i, d in enumerate(documents) if source_key(d["metadata"][key]) not in self.skipped]
        ids = self.job.ids
        return [documents[i] for i in kept], None if ids is None else [ids[i] for i in kept]

    async def before_write(self) -> None:
        if self.ledger is not None:
            await self.ledger.forget(s for s in self.values if s in self.check.known and s not in self.skipped)

    async def after_write(self, chunks: list[dict[str, Any]]) -> None:
        if self.ledger is None:
            return
        key = self.job.replace_by or ""
        sizes = Counter(source_key(c["metadata"][key]) for c in chunks)
        await self.ledger.record({s: Entry(self.digests[s], sizes[s]) for s in sizes})
        if self.job.delete_missing:  # their rows are gone now
            await self.ledger.forget(s for s in self.check.known if s not in self.values)


async def _plan(
    session: Session, job: WriteJob, builder: RowBuilder, chunks: list[dict[str, Any]], sources: _SourceTracking
) -> Plan:
    """Read what is stored for this input, then decide (in a thread: CPU work off the triggerer's loop)."""
    schema = session.schema
    # A derived id hashes the text, so an existing id has this text: no need to read texts back.
    text_in_id = not schema.auto_id and all(c.get("derived") for c in chunks)
    fields = [f for f in schema.output_fields if not (text_in_id and f == schema.text)]
    stored_by_source: dict[Any, list[dict[str, Any]]] = {}
    stored: dict[Any, dict[str, Any]] = {}
    if session.created:
        pass  # a collection this run created holds nothing: no lookups
    elif job.replace_by:
        stored_by_source = await _stored_by_source(session, job, chunks, fields, sources)
    elif not schema.auto_id:
        keys = await asyncio.to_thread(lambda: [builder.primary_key(c) for c in chunks])
        stored = await _stored_by_pk(session, job, keys, fields)
    inputs = set(sources.values.values())
    return await asyncio.to_thread(_decide, job, builder, chunks, stored, stored_by_source, text_in_id, inputs)


def _decide(
    job: WriteJob,
    builder: RowBuilder,
    chunks: list[dict[str, Any]],
    stored: dict[Any, dict[str, Any]],
    stored_by_source: dict[Any, list[dict[str, Any]]],
    text_in_id: bool,
    inputs: set[Any],
) -> Plan:
    """Decide what to write and delete; ``inputs`` holds every ``replace_by`` value, skipped sources' too."""
    schema = builder.schema
    plan = Plan()
    if schema.auto_id:
        _plan_whole_sources(plan, job, builder, chunks, stored_by_source)
    else:
        if job.replace_by:
            stored = {row[schema.primary]: row for rows in stored_by_source.values() for row in rows}
        _plan_chunks(plan, job, builder, chunks, stored, schema.has_dense, text_in_id)
        if job.replace_by:
            current = {builder.primary_key(c) for c in chunks}
            sources = {c["metadata"][job.replace_by] for c in chunks}
            plan.stale = [
                row[schema.primary]
                for source in sources
                for row in stored_by_source.get(source, [])
                if row[schema.primary] not in current
            ]
    if job.delete_missing:  # stored_by_source then holds the whole scope, or the ledger's vanished sources
        vanished = {s: rows for s, rows in stored_by_source.items() if s not in inputs}
        plan.vanished = [row[schema.primary] for rows in vanished.values() for row in rows]
        plan.vanished_sources = len(vanished)
    return plan


def _plan_chunks(
    plan: Plan,
    job: WriteJob,
    builder: RowBuilder,
    chunks: list[dict[str, Any]],
    stored: dict[Any, dict[str, Any]],
    dense: bool,
    text_in_id: bool,
) -> None:
    text_field = builder.schema.text
    for chunk in chunks:
        row = stored.get(builder.primary_key(chunk))
        if row is not None:
            plan.stored.add(builder.primary_key(chunk))
        if row is None or job.force:
            plan.to_write.append(chunk)
            continue
        if text_in_id:
            row = {**row, text_field: chunk["text"]}
        if same_content(builder.content(chunk), builder.stored_content(row)):
            plan.unchanged += 1
        else:
            plan.to_write.append(chunk)
            if dense and chunk.get("vector") is None and row.get(text_field) == chunk["text"]:
                plan.reuse_vector.add(builder.primary_key(chunk))


def _plan_whole_sources(
    plan: Plan,
    job: WriteJob,
    builder: RowBuilder,
    chunks: list[dict[str, Any]],
    stored_by_source: dict[Any, list[dict[str, Any]]],
) -> None:
    """Auto-id collections: a source whose rows all match is skipped, any other is rewritten as a whole."""
    key = job.replace_by or ""
    by_source: dict[Any, list[dict[str, Any]]] = {}
    for chunk in chunks:
        by_source.setdefault(chunk["metadata"][key], []).append(chunk)
    for source, source_chunks in by_source.items():
        rows = stored_by_source.get(source, [])
        wanted = sorted(_canonical(builder.content(c)) for c in source_chunks)
        have = sorted(_canonical(builder.stored_content(r)) for r in rows)
        if not job.force and wanted == have:
            plan.unchanged += len(source_chunks)
            continue
        plan.to_write.extend(source_chunks)
        plan.stale.extend(row[builder.schema.primary] for row in rows)


def _canonical(content: dict[str, Any]) -> str:
    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.6g}")
        if isinstance(value, dict):
            return {k: rounded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    return json.dumps(rounded(content), sort_keys=True, default=str)


async def _stored_by_pk(
    session: Session, job: WriteJob, pks: list[Any], fields: list[str]
) -> dict[Any, dict[str, Any]]:
    if job.force and not session.upsert_misroutes_partition_key:  # there, rewrites must delete what is stored
        return {}
    schema = session.schema

    async def lookup(batch: Sequence[Any]) -> list[dict[str, Any]]:
        expr = session.scoped(f"{schema.primary} in {to_literal(list(batch))}")
        return await session.query(expr, fields, limit=len(batch))

    results = await bounded_gather(batched(pks, LOOKUP_IDS), lookup, max_concurrency=job.max_concurrency)
    return {row[schema.primary]: row for rows in results for row in rows}


async def _stored_by_source(
    session: Session, job: WriteJob, chunks: list[dict[str, Any]], fields: list[str], sources: _SourceTracking
) -> dict[Any, list[dict[str, Any]]]:
    """
    Read stored rows grouped by ``replace_by`` value.

    Of the sources written now and, with ``delete_missing``, of the ledger's vanished sources (or of
    the whole scope when the ledger cannot name them).
    """
    key = job.replace_by or ""
    fields = fields if key in fields or "$meta" in fields else [*fields, key]
    if job.delete_missing and sources.reads_scope:
        rows = await session.query_all(session.everything, fields)
        return _group(rows, key)
    sizes = Counter(c["metadata"][key] for c in chunks)
    if job.delete_missing:
        sizes.update(sources.vanished())
    groups: list[list[Any]] = []
    expected = 0
    for source, size in sizes.items():
        if not groups or (groups[-1] and expected + size > LOOKUP_ROWS):
            groups.append([])
            expected = 0
        groups[-1].append(source)
        expected += size

    async def lookup(sources: list[Any]) -> list[dict[str, Any]]:
        expr = session.scoped(f"{key} in {to_literal(sources)}")
        rows = await session.query(expr, fields, limit=QUERY_CAP)
        return rows if len(rows) < QUERY_CAP else await session.query_all(expr, fields)

    results = await bounded_gather(groups, lookup, max_concurrency=job.max_concurrency)
    return _group([row for rows in results for row in rows], key)


def _group(rows: list[dict[str, Any]], key: str) -> dict[Any, list[dict[str, Any]]]:
    grouped: dict[Any, list[dict[str, Any]]] = {}
    for row in rows:
        value = row.get(key)
        if value is not None:
            grouped.setdefault(
                json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value, []
            ).append(row)
    return grouped


async def _write(session: Session, job: WriteJob, builder: RowBuilder, plan: Plan, counts: Counts) -> int:
    schema = session.schema
    dense = schema.dense if schema.has_dense else None
    batches = batched(plan.to_write, job.batch_size)
    if not batches:
        return 0
    progress = Progress(f"{job.label} {schema.name}", len(batches), logger=log)
    replace_by_delete = session.upsert_misroutes_partition_key and not schema.auto_id
    write = session.client.insert if schema.auto_id or replace_by_delete else session.client.upsert

    async def write_batch(batch: Sequence[dict[str, Any]]) -> None:
        vectors: dict[int, list[float] | None] = {i: c.get("vector") for i, c in enumerate(batch)}
        if dense is not None:
            await _fill_vectors(session, builder, plan, batch, vectors, counts)
        rows = await asyncio.to_thread(lambda: [builder.row(chunk, vectors[i]) for i, chunk in enumerate(batch)])
        if replace_by_delete:
            replaced = [pk for pk in (builder.primary_key(c) for c in batch) if pk in plan.stored]
            if replaced:
                session.round_trips["delete"] += 1
                await session.client.delete(schema.name, ids=replaced, timeout=session.timeout)
        session.round_trips["write"] += 1
        await write(schema.name, rows, timeout=session.timeout)
        counts.written += len(rows)

    await bounded_gather(batches, write_batch, max_concurrency=job.max_concurrency, progress=progress, size=len)
    return len(batches)


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
        rows = await session.query(
            f"{schema.primary} in {to_literal(pks)}", [schema.primary, schema.dense.name], limit=len(pks)
        )
        stored = {row[schema.primary]: row[schema.dense.name] for row in rows}
        for i in reuse:
            vectors[i] = stored.get(builder.primary_key(batch[i]))
    missing = [i for i in vectors if vectors[i] is None]
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
    log.info("%s %s: removed %d %s rows", job.label, session.name, len(pks), what)
    return len(pks)


def _summary(job: WriteJob, started: float, **counts: Any) -> dict[str, Any]:
    return {
        "operation": job.label,
        "collection": job.store.collection_name,
        "duplicates": 0,
        **counts,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
