"""
Decide from the listing which files of ``source_url`` to read, and split a listing into shards.

A file whose listing metadata (``core/files.py``: ETag or version id and size; local: size and
``mtime_ns``) hashes, under this run's split, id and embedding options, to its listing row in the
source ledger (``core/ledger.py``) still has the body that entry's digest was computed from: it is
not read. It travels to the write core as an *unread* document (its source, that digest and its path,
no text). The write core verifies every entry once (``Ledger.check``): an unread source whose entry
holds is skipped; one whose entry does not (rows lost or rewritten since) is read by the core and
written like any changed file. Runs in the worker, before reading.

Shards: ``shard_of`` puts each source in one of ``count`` shards by a hash of its name, so every
task of a mapped ingest lists the same folder and keeps a disjoint part of it (docs/sharding.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.ledger import (
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


def unread_documents(listed: Sequence[Listed], unread: dict[str, str]) -> list[dict[str, Any]]:
    """
    Return the files left unread in the write core's form, with no text.

    Each carries its source, the digest its ledger entry names (``unread``), its listing metadata and
    where to read it should the entry fail the core's verification.
    """
    return [
        {
            "page_content": "",
            "metadata": {"source": item.source},
            "unread": unread[item.source],
            "path": item.url,
            "listing": item.listing,
        }
        for item in listed
        if item.source in unread
    ]


async def unchanged_sources(
    store: StoreConfig,
    listed: Sequence[Listed],
    *,
    key: str,
    chunk_size: int | None,
    chunk_overlap: int,
    id_key: str | None,
) -> dict[str, str]:
    """
    Return the listed sources whose listing matches their ledger entry (source -> the entry's digest).

    Costs, when the collection and its ledger exist: one read of the ledger's entries and one of its
    listing rows; nothing when they do not (every file is read). The entries are not verified against
    the collection here: the write core verifies every entry once (``Ledger.check``) and reads the files
    whose entries fail it, so a nightly run audits the collection once, not twice.
    """
    if not any(item.listing is not None for item in listed):
        return {}
    async with connect(store) as connection:
        with connection.errors(action=f"read the source ledger of '{connection.name}'"):
            if not await connection.exists():
                return {}
            session = await connection.open(write=False, metrics=False, server_version=True)
        try:
            with session.errors(action=f"read the source ledger of '{session.name}'"):
                options = digest_options(
                    chunk_size=chunk_size, chunk_overlap=chunk_overlap, id_key=id_key, identity=digest_identity(session)
                )
                return await _unchanged(session, listed, key, digest_prefix(key, options))
        finally:
            await session.close()


async def _unchanged(session: Session, listed: Sequence[Listed], key: str, prefix: str) -> dict[str, str]:
    ledger = Ledger(session, key)
    if not await ledger.exists() or not carries_digest(session.schema):
        return {}
    await ledger.check_ours()
    entries, listings = await asyncio.gather(ledger.read(), ledger.read_listings())
    unchanged: dict[str, str] = {}
    for item in listed:
        entry = entries.get(source_key(item.source))
        if entry is not None and item.listing is not None:
            if listings.get(source_key(item.source)) == listing_digest(prefix, item.listing, entry.digest):
                unchanged[item.source] = entry.digest
    log.info(
        "%s: %d of %d listed files unchanged by their listing: not read", session.name, len(unchanged), len(listed)
    )
    return unchanged
