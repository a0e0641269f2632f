"""
The source ledger: one row per source in a companion collection, so a re-run skips unchanged sources whole.

A write with ``replace_by`` records, in ``<collection>__sources``, each source's digest (its documents
as given, with the split and id options) and how many chunks it has in the collection. The next run
skips a source whose digest is unchanged without splitting it or reading its chunks back, provided
the collection still holds what the ledger says: the row count of the (tenant) scope must equal the
ledger's total, or else the candidates are counted source batch by source batch, and any batch that
disagrees goes through the chunk-by-chunk comparison. Entries of sources about to be rewritten are
removed before the write and recorded after it, so an entry only describes rows a finished run wrote.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.filters import to_literal
from airflow_provider_milvus.core.gather import batched, bounded_gather

if TYPE_CHECKING:
    from airflow_provider_milvus.core.session import Session

log = logging.getLogger(__name__)

SUFFIX = "__sources"
VERSION = "1"  # part of every digest: a change in how chunks are derived invalidates all entries
BATCH = 1000  # sources per count, upsert or delete request
QUERY_CAP = 16384  # rows one Milvus query returns at most


@dataclass(frozen=True)
class Entry:
    """One source as the last finished run wrote it: the digest of its documents and its chunk count."""

    digest: str
    chunks: int


@dataclass
class Check:
    """What the ledger lets this run skip, and what it says about the rest of the scope."""

    skipped: dict[str, Entry] = field(default_factory=dict)  # by source key (``source_key``)
    known: dict[str, Entry] = field(default_factory=dict)  # every entry of this key and scope
    complete: bool = False  # the ledger accounts for every row in scope


def ledger_name(collection: str) -> str:
    return f"{collection}{SUFFIX}"


def source_key(value: Any) -> str:
    """Return a source's identity in the ledger: its JSON, so the number 1 and the string "1" stay apart."""
    return json.dumps(value, sort_keys=True)


def source_digests(
    documents: Sequence[dict[str, Any]],
    ids: Sequence[Any] | None,
    *,
    key: str,
    options: dict[str, Any],
) -> dict[str, str]:
    """SHA-256 per source over its documents (in any order) and what turns them into chunks (CPU work)."""
    parts: dict[str, list[str]] = {}
    for position, doc in enumerate(documents):
        given_id = ids[position] if ids is not None else None
        parts.setdefault(source_key(doc["metadata"][key]), []).append(
            json.dumps([doc["page_content"], doc["metadata"], doc.get("vector"), given_id], sort_keys=True)
        )
    prefix = json.dumps({"version": VERSION, **options}, sort_keys=True)
    digests = {}
    for source, docs in parts.items():
        digest = hashlib.sha256(prefix.encode())
        for doc_json in sorted(docs):
            digest.update(b"\x1e" + doc_json.encode())
        digests[source] = digest.hexdigest()
    return digests


class Ledger:
    """The ledger rows of one collection, ``replace_by`` key and tenant, read and written through a session."""

    def __init__(self, session: Session, key: str) -> None:
        self.session = session
        self.key = key
        self.scope = session.tenant if session.schema.partition_key and session.tenant is not None else ""
        self.name = ledger_name(session.name)
        self._exists: bool | None = None

    @property
    def _where(self) -> str:
        return f"key == {to_literal(self.key)} and scope == {to_literal(self.scope)}"

    def _id(self, source: str) -> str:
        return hashlib.sha256(f"{self.key}\x1f{self.scope}\x1f{source}".encode()).hexdigest()[:32]

    async def exists(self) -> bool:
        if self._exists is None:
            self._exists = bool(await self.session.client.has_collection(self.name, timeout=self.session.timeout))
        return self._exists

    async def read(self) -> dict[str, Entry]:
        if not await self.exists():
            return {}
        await self.session.client.load_collection(self.name, timeout=self.session.timeout)
        fields = ["source", "digest", "chunks"]
        rows = await self.session.query(self._where, fields, QUERY_CAP, collection=self.name, phase="ledger")
        if len(rows) == QUERY_CAP:
            rows = await self.session.query_all(self._where, fields, collection=self.name, phase="ledger")
        return {row["source"]: Entry(row["digest"], int(row["chunks"])) for row in rows}

    async def check(self, digests: dict[str, str], values: dict[str, Any], *, max_concurrency: int) -> Check:
        """
        Find the sources whose digest matches their entry and whose rows are all still there.

        ``values`` maps each source key to its ``replace_by`` value (for the count expressions).
        """
        known = await self.read()
        check = Check(known=known)
        if not known:
            return check
        candidates = {s: known[s] for s, digest in digests.items() if s in known and known[s].digest == digest}
        stored = await self.session.count(self.session.scope, phase="ledger")  # '' counts the whole collection
        check.complete = stored == sum(entry.chunks for entry in known.values())
        if check.complete:
            check.skipped = candidates
            return check
        log.info(
            "%s: the collection holds %d rows in scope, the source ledger %d: counting the %d unchanged sources",
            self.session.name,
            stored,
            sum(entry.chunks for entry in known.values()),
            len(candidates),
        )

        async def verify(batch: Sequence[str]) -> dict[str, Entry]:
            expr = self.session.scoped(f"{self.key} in {to_literal([values[s] for s in batch])}")
            counted = await self.session.count(expr, phase="ledger")
            expected = sum(candidates[s].chunks for s in batch)
            return {s: candidates[s] for s in batch} if counted == expected else {}

        verified = await bounded_gather(batched(list(candidates), BATCH), verify, max_concurrency=max_concurrency)
        check.skipped = {source: entry for part in verified for source, entry in part.items()}
        return check

    async def forget(self, sources: Iterable[str]) -> None:
        """Remove entries (before their sources are rewritten, or after they vanished)."""
        ids = [self._id(source) for source in sources]
        if not ids or not await self.exists():
            return

        async def delete(batch: Sequence[str]) -> None:
            self.session.round_trips["ledger"] += 1
            await self.session.client.delete(self.name, ids=list(batch), timeout=self.session.timeout)

        await bounded_gather(batched(ids, BATCH), delete, max_concurrency=4)

    async def forget_all(self) -> None:
        """Remove every entry of this key and scope (the collection was just created: they are stale)."""
        if await self.exists():
            self.session.round_trips["ledger"] += 1
            await self.session.client.delete(self.name, filter=self._where, timeout=self.session.timeout)

    async def record(self, entries: dict[str, Entry]) -> None:
        """Upsert entries; the ledger collection is created on first use."""
        if not entries:
            return
        if not await self.exists():
            await asyncio.to_thread(_create_sync, self.session, self.name)
            self._exists = True
        rows = [
            {
                "id": self._id(source),
                "key": self.key,
                "scope": self.scope,
                "source": source,
                "digest": entry.digest,
                "chunks": entry.chunks,
                "vector": [0.0, 0.0],
            }
            for source, entry in entries.items()
        ]

        async def upsert(batch: Sequence[dict[str, Any]]) -> None:
            self.session.round_trips["ledger"] += 1
            await self.session.client.upsert(self.name, list(batch), timeout=self.session.timeout)

        await bounded_gather(batched(rows, BATCH), upsert, max_concurrency=4)


def _create_sync(session: Session, name: str) -> None:
    """Sync client in a thread: the async create_collection waits on an index RPC Milvus Lite lacks."""
    from pymilvus import DataType, MilvusClient

    client = MilvusClient(**session.settings.client_kwargs())
    try:
        if client.has_collection(name):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("key", DataType.VARCHAR, max_length=1024)
        schema.add_field("scope", DataType.VARCHAR, max_length=1024)
        schema.add_field("source", DataType.VARCHAR, max_length=65535)
        schema.add_field("digest", DataType.VARCHAR, max_length=64)
        schema.add_field("chunks", DataType.INT64)
        # Milvus needs a vector field in every collection; the ledger never searches it.
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        index = MilvusClient.prepare_index_params()
        index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
        try:
            client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
        except Exception as error:
            if "exist" not in str(error).lower():  # another task created it first
                raise
    finally:
        client.close()
