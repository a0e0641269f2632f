"""
Planning a write: read what the collection holds for the input, then decide what to write and delete.

``plan`` does the reads (batched, bounded lookups by primary key or by ``replace_by`` value);
``decide`` is pure: given the chunks and the stored rows it returns the ``Plan`` (unit-tested
without a server). Unchanged chunks are skipped; a chunk whose text is stored already but whose
metadata changed keeps its stored vector; auto-id collections rewrite a changed source whole.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.filters import to_literal
from airflow_provider_milvus.core.gather import batched, bounded_gather
from airflow_provider_milvus.core.ledger import DIGEST_FIELD, SourceTracking
from airflow_provider_milvus.core.rows import RowBuilder, same_content

if TYPE_CHECKING:
    from airflow_provider_milvus.core.jobs import WriteJob
    from airflow_provider_milvus.core.session import Session

LOOKUP_IDS = 1000  # primary keys per "pk in [...]" lookup
LOOKUP_ROWS = 8000  # rows expected per "source in [...]" lookup; one query returns at most MAX_QUERY_ROWS


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
    # Digests carried by stored rows that an untracked write replaces or deletes: their ledger
    # entries no longer describe the collection (``ledger.forget_digests``).
    replaced_digests: set[str] = field(default_factory=set)
    # Primary keys whose stored row carries a digest that an untracked rewrite must clear (Milvus Lite
    # keeps dynamic keys an upsert leaves out; a real Milvus replaces the whole row).
    clear_digest: set[Any] = field(default_factory=set)


async def plan(
    session: Session, job: WriteJob, builder: RowBuilder, chunks: list[dict[str, Any]], sources: SourceTracking
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
    return await asyncio.to_thread(decide, job, builder, chunks, stored, stored_by_source, text_in_id, inputs)


def decide(
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
        duplicated: set[Any] = set()
        if job.replace_by:
            stored = {}
            for row in (row for rows in stored_by_source.values() for row in rows):
                if row[schema.primary] in stored:  # a real Milvus keeps duplicate keys: rewrite them
                    duplicated.add(row[schema.primary])
                stored[row[schema.primary]] = row
        # writes_vectors: stored vectors are reused only where writes send vectors (not server-side).
        _plan_chunks(plan, job, builder, chunks, stored, schema.writes_vectors, text_in_id, duplicated)
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
        # A row filed under a vanished value whose primary key is a chunk of this input is rewritten, not deleted.
        current = set() if schema.auto_id else {builder.primary_key(c) for c in chunks}
        plan.vanished = [
            row[schema.primary] for rows in vanished.values() for row in rows if row[schema.primary] not in current
        ]
        plan.vanished_sources = len(vanished)
    if not any("digest" in c for c in chunks):  # an untracked write: name the ledger entries it breaks
        rows = [*stored.values(), *(row for rows in stored_by_source.values() for row in rows)]
        rewritten = set() if schema.auto_id else {builder.primary_key(c) for c in plan.to_write} & plan.stored
        touched = rewritten | set(plan.stale) | set(plan.vanished)
        carrying = [row for row in rows if row.get(DIGEST_FIELD) and row[schema.primary] in touched]
        plan.replaced_digests = {row[DIGEST_FIELD] for row in carrying}
        plan.clear_digest = {row[schema.primary] for row in carrying} & rewritten
    return plan


def stored_content(builder: RowBuilder, row: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
    """Return a stored row shaped as ``builder.content(chunk)``; its digest counts only when the chunk has one."""
    content = builder.stored_content(row)
    if "digest" not in chunk:
        content.pop(DIGEST_FIELD, None)
    return content


def _plan_chunks(
    plan: Plan,
    job: WriteJob,
    builder: RowBuilder,
    chunks: list[dict[str, Any]],
    stored: dict[Any, dict[str, Any]],
    dense: bool,
    text_in_id: bool,
    duplicated: set[Any],
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
        if builder.primary_key(chunk) not in duplicated and same_content(
            builder.content(chunk), stored_content(builder, row, chunk)
        ):
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
        have = sorted(_canonical(stored_content(builder, r, source_chunks[0])) for r in rows)
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
    session: Session, job: WriteJob, chunks: list[dict[str, Any]], fields: list[str], sources: SourceTracking
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
        return await session.read_all(expr, fields)

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
