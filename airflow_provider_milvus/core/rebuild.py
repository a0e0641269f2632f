"""
Rebuild behind an alias: build ``<alias>_v<N>``, validate it, switch the alias atomically, keep earlier versions.

DAGs use the alias; the collections behind it are versions ``<alias>_v1``, ``<alias>_v2``, ... A rebuild:

1. Resolves the alias (a plain collection of that name is refused: Milvus cannot give an alias the name
   of an existing collection, see ``plain_collection_error`` for the one-time migration) and lists the
   versions; the new one is the highest + 1, so no existing collection is ever written.
2. Fills the new version with the write core (``run_write``), exactly as a first ingest of a new
   collection would (options of ``store.new_collection``, source ledger ``<alias>_v<N>__sources``).
   With the live version's embedding model, a chunk whose text the live version stores already takes
   its vector (``LiveVectors``, batched lookups by text) instead of calling the embedding API.
3. Validates it: rows equal the chunks written, at least ``min_count``, each sample query finds a hit;
   then records that (collection property ``airflow_provider_milvus.rebuild``).
4. Switches the alias (``alter_alias``, ``create_alias`` the first time): searches see the old version
   or the new one, never a missing or half-built one.
5. Keeps the previous live version and the latest validated ones (``keep_versions`` in all) for
   rollback, and drops the rest (and their ledgers), never one the alias or another alias names.

A failure or cancellation before the switch leaves the alias where it was and drops the half-built
version (or names it in the log when even that fails). ``run_rollback`` points the alias back.
One rebuild per alias at a time: a second one started meanwhile would drop the first's unvalidated build.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.checks import check_collection_name, ledger_name_needed
from airflow_provider_milvus.core.collection import aread_schema
from airflow_provider_milvus.core.filters import to_literal
from airflow_provider_milvus.core.jobs import RebuildJob, RollbackJob, SearchJob, WriteJob
from airflow_provider_milvus.core.ledger import ledger_name
from airflow_provider_milvus.core.schema import FieldChoice
from airflow_provider_milvus.core.search import run_search
from airflow_provider_milvus.core.session import Connection, connect
from airflow_provider_milvus.core.write import run_write
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient

    from airflow_provider_milvus.core.schema import CollectionSchema
    from airflow_provider_milvus.settings import MilvusConnectionSettings

log = logging.getLogger(__name__)

VERSION_PROPERTY = "airflow_provider_milvus.rebuild"  # set on a version once it passed validation
LOOKUP_IDS = 1000  # primary keys per vector lookup in the live version
SCAN_PAGE = 4096  # rows per page of the one scan of the live version's texts


@dataclass(frozen=True)
class Version:
    """One physical collection ``<alias>_v<number>``; ``validated``: a rebuild validated it before a switch."""

    number: int
    name: str
    validated: bool


def version_name(alias: str, number: int) -> str:
    return f"{alias}_v{number}"


def check_rebuild(job: RebuildJob) -> None:
    """Refuse bad parameters before anything connects (the operator calls it too)."""
    if job.store.partition_key_value is not None:
        raise MilvusProviderError(
            "A rebuild replaces the whole collection behind the alias; partition_key_value would build a version "
            "holding one tenant. Rebuild from the whole corpus without partition_key_value."
        )
    if not isinstance(job.keep_versions, int) or job.keep_versions < 0:
        raise MilvusProviderError(f"keep_versions must be an integer >= 0, got {job.keep_versions!r}.")
    if not isinstance(job.min_count, int) or job.min_count < 0:
        raise MilvusProviderError(f"min_count must be an integer >= 0, got {job.min_count!r}.")
    queries = job.sample_queries
    if not isinstance(queries, list) or not all(isinstance(q, str) and q.strip() for q in queries):
        raise MilvusProviderError(f"sample_queries must be a list of non-blank strings, got {queries!r:.200}.")


def plain_collection_error(name: str) -> MilvusProviderError:
    return MilvusProviderError(
        f"'{name}' is a plain collection, not an alias: Milvus cannot give an alias the name of an existing "
        "collection, so its first rebuild cannot switch atomically. One-time migration, either: (1) no downtime: "
        f"rebuild under a new name (collection_name='{name}_live'), which builds '{name}_live_v1' and creates the "
        f"alias '{name}_live' without touching '{name}'; point the DAGs at '{name}_live', then drop '{name}' (and "
        f"'{ledger_name(name)}'); or (2) with a short outage: drop '{name}' (and '{ledger_name(name)}'), then "
        f"rebuild: '{name}_v1' is built and the alias '{name}' made (searches of '{name}' fail until then). "
        "Nothing was created."
    )


async def resolve_alias(client: AsyncMilvusClient, name: str, request_timeout: float) -> str | None:
    """Return the collection the alias ``name`` points to now (None: no such name); refuse a plain collection."""
    if not await client.has_collection(name, timeout=request_timeout):
        return None
    physical = str((await client.describe_collection(name, timeout=request_timeout))["collection_name"])
    if physical == name:
        raise plain_collection_error(name)
    return physical


async def list_versions(client: AsyncMilvusClient, alias: str, request_timeout: float) -> list[Version]:
    """Every ``<alias>_v<N>``, newest first, and whether a rebuild validated it."""
    pattern = re.compile(rf"{re.escape(alias)}_v(\d+)")
    names = [n for n in await client.list_collections(timeout=request_timeout) if pattern.fullmatch(n)]
    descriptions = await asyncio.gather(*(client.describe_collection(n, timeout=request_timeout) for n in names))
    versions = [
        Version(int(pattern.fullmatch(n).group(1)), n, VERSION_PROPERTY in (d.get("properties") or {}))  # type: ignore[union-attr]
        for n, d in zip(names, descriptions, strict=True)
    ]
    return sorted(versions, key=lambda v: v.number, reverse=True)


def same_model(recorded: dict[str, Any] | None, identity: dict[str, Any] | None) -> bool:
    """Tell whether ``identity`` (this task's model) made the vectors ``recorded`` describes."""
    if not recorded or not identity or recorded.get("kind") == "bm25":
        return False
    if recorded.get("kind") != identity.get("kind") or recorded.get("model") != identity.get("model"):
        return False
    return identity.get("dimensions") is None or identity.get("dimensions") == recorded.get("dimensions")


class LiveVectors:
    """
    Texts -> vectors of the live version (``KnownVectors`` of the write core).

    The first call scans the live version's primary keys and texts once (no vectors) into a map from a
    16-byte digest of each text to a primary key; every call then reads the vectors it needs by primary
    key (indexed, ``LOOKUP_IDS`` per query) and keeps only rows whose text is exactly the one asked for.
    Memory: one digest and key per live row, plus the vectors of the write batches in flight. (Looking the
    texts up with ``text in [...]`` instead scans the collection once per batch: 16x a plain ingest on
    Milvus Lite for the nightly corpus, bench/results/rebuild.md's first run.)
    """

    def __init__(self, client: AsyncMilvusClient, schema: CollectionSchema, settings: MilvusConnectionSettings) -> None:
        self.client = client
        self.schema = schema
        self.settings = settings
        self.reused = 0
        self.lookups = 0
        self._keys: dict[bytes, Any] | None = None
        self._scan = asyncio.Lock()

    async def __call__(self, texts: list[str]) -> dict[str, list[float]]:
        keys = await self._index()
        wanted = {text: keys[digest] for text in texts if (digest := _digest(text)) in keys}
        primary, text_field, vector_field = self.schema.primary, self.schema.text, self.schema.dense.name
        found: dict[str, list[float]] = {}
        pks = list(dict.fromkeys(wanted.values()))
        for start in range(0, len(pks), LOOKUP_IDS):
            batch = pks[start : start + LOOKUP_IDS]
            self.lookups += 1
            rows = await self.client.query(
                self.schema.name,
                filter=f"{primary} in {to_literal(batch)}",
                output_fields=[text_field, vector_field],
                limit=len(batch),
                consistency_level="Strong",
                timeout=self.settings.timeout,
            )
            for row in rows:
                if row[text_field] in wanted:  # the digest matched; the text must too
                    found.setdefault(row[text_field], [float(x) for x in row[vector_field]])
        self.reused += sum(1 for text in texts if text in found)
        return found

    async def _index(self) -> dict[bytes, Any]:
        async with self._scan:  # the write's batches run concurrently: one scan for all
            if self._keys is None:
                self._keys = await asyncio.to_thread(self._scan_texts)
                log.info("rebuild: %d texts of '%s' indexed for reuse", len(self._keys), self.schema.name)
            return self._keys

    def _scan_texts(self) -> dict[bytes, Any]:
        from pymilvus import MilvusClient

        primary, text_field = self.schema.primary, self.schema.text
        everything = f"{primary} >= {-(1 << 63)}" if self.schema.int_ids else f'{primary} != ""'
        client = MilvusClient(**self.settings.client_kwargs())
        keys: dict[bytes, Any] = {}
        try:
            iterator = client.query_iterator(
                self.schema.name,
                batch_size=SCAN_PAGE,
                filter=everything,
                output_fields=[primary, text_field],
                timeout=self.settings.timeout,
            )
            try:
                while page := iterator.next():
                    for row in page:
                        keys.setdefault(_digest(row[text_field]), row[primary])
            finally:
                iterator.close()
        finally:
            client.close()
        return keys


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


async def run_rebuild(job: RebuildJob) -> dict[str, Any]:
    """Build, validate and switch to a new version of the alias ``job.store.collection_name``."""
    started = time.monotonic()
    check_rebuild(job)
    alias = job.store.collection_name
    documents = job.documents
    if documents is None:
        documents = await asyncio.to_thread(staging.load_json, job.documents_ref or "")
    if not documents:
        raise MilvusProviderError(
            f"No documents to rebuild '{alias}' from: the new version would be empty. Check the input "
            "(an empty listing is more often a broken mount than an empty corpus). Nothing was created."
        )
    async with connect(job.store) as connection:
        client, timeout = connection.client, connection.settings.timeout
        with connection.errors(action=f"rebuild '{alias}'"):
            live = await resolve_alias(client, alias, timeout)
            versions = await list_versions(client, alias, timeout)
            physical = version_name(alias, max((v.number for v in versions), default=0) + 1)
            check_collection_name(physical, why=f"the new version of '{alias}'")
            if ledger_name_needed(job):
                check_collection_name(ledger_name(physical), why=f"the source ledger of '{physical}'")
            known = await _live_vectors(connection, job, live)
        log.info("rebuild %s: live version %s, building %s", alias, live or "(none)", physical)
        try:
            written = await run_write(_write_job(job, physical, documents), known_vectors=known)
            with connection.errors(action=f"validate '{physical}'"):
                rows = await _validate(client, job, physical, written, timeout)
                await client.alter_collection_properties(
                    physical,
                    properties={VERSION_PROPERTY: json.dumps({"rows": rows, "validated_at": time.time()})},
                    timeout=timeout,
                )
            with connection.errors(action=f"switch alias '{alias}' to '{physical}'"):
                await client.load_collection(physical, timeout=timeout)
                if live is None:
                    await client.create_alias(physical, alias, timeout=timeout)
                else:
                    await client.alter_alias(physical, alias, timeout=timeout)
        except BaseException as error:
            outcome = await _discard(client, alias, live, physical, timeout, error)
            if isinstance(error, MilvusProviderError):
                raise MilvusProviderError(f"{error} {outcome}") from error
            raise
        log.info("rebuild %s: alias switched from %s to %s (%d rows)", alias, live or "(none)", physical, rows)
        with connection.errors(action=f"drop old versions of '{alias}'"):
            dropped = await _prune(client, alias, physical, live, versions, job.keep_versions, timeout)
    return {
        "operation": "rebuild",
        "alias": alias,
        "collection": physical,
        "previous": live,
        "rows": rows,
        "dropped": dropped,
        "embedded": written.get("embedded", 0),
        "known_vectors": written.get("known_vectors", 0),
        "write": written,
        "elapsed_s": round(time.monotonic() - started, 3),
    }


async def run_rollback(job: RollbackJob) -> dict[str, Any]:
    """Point the alias back at ``job.to_version``, or at the newest validated version before the live one."""
    alias = job.store.collection_name
    async with connect(job.store, embed=False) as connection:
        client, timeout = connection.client, connection.settings.timeout
        with connection.errors(action=f"roll back '{alias}'"):
            live = await resolve_alias(client, alias, timeout)
            if live is None:
                raise MilvusProviderError(f"'{alias}' does not exist: there is nothing to roll back.")
            versions = await list_versions(client, alias, timeout)
            current = next((v.number for v in versions if v.name == live), None)
            target = _rollback_target(alias, live, current, versions, job.to_version)
            await client.load_collection(target.name, timeout=timeout)
            await client.alter_alias(target.name, alias, timeout=timeout)
    log.info("rollback %s: alias switched from %s to %s", alias, live, target.name)
    return {"operation": "rollback", "alias": alias, "collection": target.name, "previous": live}


def _rollback_target(
    alias: str, live: str, current: int | None, versions: Sequence[Version], to_version: int | None
) -> Version:
    if to_version is not None:
        target = next((v for v in versions if v.number == to_version), None)
        if target is None:
            kept = ", ".join(v.name for v in versions) or "none"
            raise MilvusProviderError(f"'{version_name(alias, to_version)}' does not exist (versions kept: {kept}).")
        if target.name == live:
            raise MilvusProviderError(f"'{alias}' points at '{live}' already.")
        return target
    earlier = [v for v in versions if v.validated and (current is None or v.number < current)]
    if not earlier:
        raise MilvusProviderError(
            f"'{alias}' points at '{live}' and no earlier validated version is kept to roll back to "
            "(keep_versions of the rebuild, or to_version to name one)."
        )
    return earlier[0]


def _write_job(job: RebuildJob, physical: str, documents: list[dict[str, Any]]) -> WriteJob:
    return WriteJob(
        store=dataclasses.replace(job.store, collection_name=physical),
        batch_size=job.batch_size,
        max_concurrency=job.max_concurrency,
        documents=documents,
        ids=job.ids,
        id_key=job.id_key,
        chunk_size=job.chunk_size,
        chunk_overlap=job.chunk_overlap,
        replace_by=job.replace_by,
        track_sources=job.track_sources,
    )


async def _live_vectors(connection: Connection, job: RebuildJob, live: str | None) -> LiveVectors | None:
    """Return the live version's vectors when this task's model made them (same kind, model, dimensions)."""
    identity = connection.identity
    if not job.reuse_vectors or live is None or identity is None:
        return None
    choice = FieldChoice(text_field=job.store.text_field, vector_field=job.store.vector_field)
    schema = await aread_schema(connection.client, live, choice, metrics=False)
    if not schema.has_dense or not same_model(schema.embedding, identity):
        log.info(
            "rebuild: '%s' was embedded by %r, this rebuild uses %r: every chunk is embedded again",
            live,
            (schema.embedding or {}).get("model"),
            identity.get("model"),
        )
        return None
    log.info("rebuild: same model as '%s' (%r): its vectors are reused for unchanged texts", live, identity["model"])
    return LiveVectors(connection.client, schema, connection.settings)


async def _validate(
    client: AsyncMilvusClient, job: RebuildJob, physical: str, written: dict[str, Any], request_timeout: float
) -> int:
    """Rows equal the corpus's chunks, at least ``min_count``, and every sample query finds a hit."""
    reply = await client.query(
        physical, filter="", output_fields=["count(*)"], consistency_level="Strong", timeout=request_timeout
    )
    rows = int(reply[0]["count(*)"]) if reply else 0
    expected = int(written["chunks"])
    if rows != expected:
        raise MilvusProviderError(
            f"Validation of '{physical}' failed: it holds {rows} rows, the corpus has {expected} chunks."
        )
    if rows < job.min_count:
        raise MilvusProviderError(
            f"Validation of '{physical}' failed: {rows} rows, fewer than min_count={job.min_count}."
        )
    if job.sample_queries:
        store = dataclasses.replace(job.store, collection_name=physical, new_collection=None)
        results = await run_search(
            SearchJob(store=store, queries=list(job.sample_queries), k=1, search_type="similarity")
        )
        empty = [query for query, hits in zip(job.sample_queries, results, strict=True) if not hits]
        if empty:
            raise MilvusProviderError(
                f"Validation of '{physical}' failed: {len(empty)} of {len(job.sample_queries)} sample queries found "
                f"nothing: {empty[:5]!r}."
            )
    return rows


async def _discard(
    client: AsyncMilvusClient,
    alias: str,
    live: str | None,
    physical: str,
    request_timeout: float,
    error: BaseException,
) -> str:
    """After a failure or cancellation: drop the half-built version (unless the alias points at it); say what happened."""
    reason = "was cancelled" if isinstance(error, asyncio.CancelledError) else "failed"
    where = f"'{alias}' still points at '{live}'" if live else f"the alias '{alias}' was not created"
    try:
        if await client.has_collection(alias, timeout=request_timeout):
            now = (await client.describe_collection(alias, timeout=request_timeout))["collection_name"]
            if now == physical:  # the switch went through before the error: the new version is live
                outcome = f"The rebuild of '{alias}' {reason} after the switch: '{physical}' is live and kept."
                log.error("%s", outcome)
                return outcome
        dropped = []
        for name in (physical, ledger_name(physical)):
            if await client.has_collection(name, timeout=request_timeout):
                await client.drop_collection(name, timeout=request_timeout)
                dropped.append(name)
        built = f"the half-built '{physical}' was dropped" if dropped else f"'{physical}' was never created"
        outcome = f"The rebuild of '{alias}' {reason}: {where}; {built}."
    except Exception as cleanup_error:  # the rebuild's own error is what the task reports
        outcome = (
            f"The rebuild of '{alias}' {reason}: {where}; the half-built '{physical}' could not be dropped "
            f"({cleanup_error}): drop it and '{ledger_name(physical)}' by hand."
        )
    log.error("%s", outcome)
    return outcome


async def _prune(
    client: AsyncMilvusClient,
    alias: str,
    physical: str,
    previous: str | None,
    versions: Sequence[Version],
    keep_versions: int,
    request_timeout: float,
) -> list[str]:
    """Keep the previous live version and the newest validated ones (``keep_versions`` in all); drop the rest."""
    ordered = [v for v in versions if v.name == previous] + [v for v in versions if v.validated and v.name != previous]
    kept = {v.name for v in ordered[:keep_versions]} | {physical}
    dropped = []
    for version in versions:
        if version.name in kept:
            continue
        reply = await client.list_aliases(version.name, timeout=request_timeout)
        aliases = list((reply.get("aliases") if isinstance(reply, dict) else reply) or [])  # the async client: a list
        if aliases:  # another alias (or this one, switched meanwhile) still names it
            log.warning("rebuild %s: keeping '%s', named by alias(es) %s", alias, version.name, aliases)
            continue
        for name in (version.name, ledger_name(version.name)):
            if await client.has_collection(name, timeout=request_timeout):
                await client.drop_collection(name, timeout=request_timeout)
        dropped.append(version.name)
    if dropped:
        log.info("rebuild %s: dropped %s (kept for rollback: %s)", alias, dropped, sorted(kept - {physical}))
    return dropped
