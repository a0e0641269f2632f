"""
Decide from the listing which files of ``source_url`` to read, and split a listing into shards.

A file whose listing metadata (``core/files.py``: ETag or version id and size; local: size and
``mtime_ns``) hashes, under this run's split, id and embedding options, to its listing row in the
source ledger (``core/ledger.py``), and whose ledger entry is verified against the collection, still
has the body that entry's digest was computed from: it is not read. It travels to the write core as
an *unread* document (its source and that digest, no text), which the core skips after verifying the
entry once more; should the entry no longer hold by then, the write is refused before anything is
written and the entry removed, so a retry reads the file. Runs in the worker, before reading.

Shards: ``shard_of`` puts each source in one of ``count`` shards by a hash of its name, so every
task of a mapped ingest lists the same folder and keeps a disjoint part of it (docs/sharding.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.ledger import (
    Entry,
    Ledger,
    carries_digest,
    digest_identity,
    digest_options,
    digest_prefix,
    listing_digest,
    source_key,
)
from airflow_provider_milvus.core.session import connect

if TYPE_CHECKING:
    from airflow_provider_milvus.core.files import Listed
    from airflow_provider_milvus.core.jobs import StoreConfig
    from airflow_provider_milvus.core.session import Session

log = logging.getLogger(__name__)

CHANGE_DETECTION = ("listing", "content")


def shard_of(source: str, count: int) -> int:
    """Return the shard (0 to ``count - 1``) a source belongs to, stable across runs, hosts and Python versions."""
    return int(hashlib.sha256(source.encode()).hexdigest()[:16], 16) % count


def in_shard(listed: Sequence[Listed], index: int, count: int) -> list[Listed]:
    return [item for item in listed if shard_of(item.source, count) == index]


def unread_documents(unread: dict[str, str]) -> list[dict[str, Any]]:
    """Return files left unread in the write core's form: their source and the digest their body hashes to, no text."""
    return [{"page_content": "", "metadata": {"source": source}, "unread": digest} for source, digest in unread.items()]


async def unchanged_sources(
    store: StoreConfig,
    listed: Sequence[Listed],
    *,
    key: str,
    chunk_size: int | None,
    chunk_overlap: int,
    id_key: str | None,
    max_concurrency: int,
) -> dict[str, str]:
    """
    Return the listed sources that need not be read (source -> their entry's digest).

    Costs, when the collection and its ledger exist: one read of the ledger's entries, one of its
    listing rows, and the ledger's verification of the matching entries (``Ledger.verify``). Nothing
    when they do not (every file is read).
    """
    if not any(item.listing is not None for item in listed):
        return {}
    async with connect(store) as connection:
        with connection.errors(action=f"read the source ledger of '{connection.name}'"):
            if not await connection.exists():
                return {}
            session = await connection.open(write=False, metrics=False)
        try:
            with session.errors(action=f"read the source ledger of '{session.name}'"):
                options = digest_options(
                    chunk_size=chunk_size, chunk_overlap=chunk_overlap, id_key=id_key, identity=digest_identity(session)
                )
                return await _unchanged(session, listed, key, digest_prefix(key, options), max_concurrency)
        finally:
            await session.close()


async def _unchanged(
    session: Session, listed: Sequence[Listed], key: str, prefix: str, max_concurrency: int
) -> dict[str, str]:
    ledger = Ledger(session, key)
    if not await ledger.exists() or not carries_digest(session.schema):
        return {}
    await ledger.check_ours()
    entries = await ledger.read()
    listings = await ledger.read_listings()
    candidates: dict[str, Entry] = {}
    for item in listed:
        source = source_key(item.source)
        entry = entries.get(source)
        if entry is not None and item.listing is not None:
            if listings.get(source) == listing_digest(prefix, item.listing, entry.digest):
                candidates[source] = entry
    intact: set[str] = set()
    if candidates:  # the ledger's own verification (its audit, rows read back only when it finds something amiss)
        digests = {source: entry.digest for source, entry in candidates.items()}
        intact = set((await ledger.check(digests, whole_scope=False, max_concurrency=max_concurrency)).skipped)
    log.info(
        "%s: %d of %d listed files unchanged by their listing and verified: not read",
        session.name,
        len(intact),
        len(listed),
    )
    return {json.loads(source): candidates[source].digest for source in sorted(intact)}
