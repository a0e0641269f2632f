"""
Decide from the listing which files of ``source_url`` to read, and split a listing into shards.

A file whose listing metadata (``core/files.py``: ETag or version id and size; local: size and
``mtime_ns``) hashes, under this run's split, id and embedding options, to its listing row in the
source ledger (``core/ledger.py``) still has the body that entry's digest was computed from: it is
not read. It travels to the write core as an *unread* document (its source, that digest and its path,
no text). The write core verifies every entry once (``Ledger.check``): an unread source whose entry
holds is skipped; one whose entry does not (rows lost or rewritten since) is read by the core and
written like any changed file. Runs in the worker, before reading; the ledger is read while the folder
is listed (``list_with_ledger``).

Shards: ``shard_of`` puts each source in one of ``count`` shards by a hash of its name, so every
task of a mapped ingest lists the same folder and keeps a disjoint part of it (docs/sharding.md).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
    from airflow_provider_milvus.core.session import Connection

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


@dataclass(frozen=True)
class LedgerListing:
    """What the source ledger recorded at the last listing: each source's entry digest and its listing row."""

    prefix: str  # the digests' options (``digest_prefix``): a row of other options never matches
    digests: dict[str, str]  # source key -> the entry's digest
    listings: dict[str, str]  # source key -> the listing row's digest (``listing_digest``)

    def unchanged(self, listed: Sequence[Listed]) -> dict[str, str]:
        """Return the listed sources whose listing matches their ledger entry (source -> the entry's digest)."""
        unchanged: dict[str, str] = {}
        for item in listed:
            if item.listing is None:
                continue
            key = source_key(item.source)
            digest = self.digests.get(key)
            if digest is not None and self.listings.get(key) == listing_digest(self.prefix, item.listing, digest):
                unchanged[item.source] = digest
        return unchanged


async def list_with_ledger(
    list_files: Callable[[], list[Listed]],
    store: StoreConfig,
    *,
    key: str,
    chunk_size: int | None,
    chunk_overlap: int,
    id_key: str | None,
) -> tuple[list[Listed], LedgerListing | None]:
    """
    List the files (``list_files``, in a thread) while the source ledger's entries and listing rows are read.

    The two wait on different servers (object storage, Milvus), so a nightly run pays the longer of them,
    not both. The Milvus and embedding connections are read before the listing starts: a task reads
    connections over one channel to Airflow's supervisor, which Airflow 3.0 does not lock across threads.
    """
    async with connect(store) as connection:
        reading = asyncio.create_task(
            _read_ledger_listing(connection, key=key, chunk_size=chunk_size, chunk_overlap=chunk_overlap, id_key=id_key)
        )
        try:
            listed = await asyncio.to_thread(list_files)
        except BaseException:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            raise
        return listed, await reading


async def _read_ledger_listing(
    connection: Connection, *, key: str, chunk_size: int | None, chunk_overlap: int, id_key: str | None
) -> LedgerListing | None:
    """
    Read the source ledger's entries and listing rows under this run's options; None without a ledger.

    Costs, when the collection and its ledger exist: one read of the ledger's entries and one of its
    listing rows. The entries are not verified against the collection here: the write core verifies
    every entry once (``Ledger.check``) and reads the files whose entries fail it, so a nightly run
    audits the collection once, not twice.
    """
    with connection.errors(action=f"read the source ledger of '{connection.name}'"):
        if not await connection.exists():
            return None
        session = await connection.open(write=False, metrics=False, server_version=True)
    try:
        with session.errors(action=f"read the source ledger of '{session.name}'"):
            ledger = Ledger(session, key)
            if not await ledger.exists() or not carries_digest(session.schema):
                return None
            await ledger.check_ours()
            entries, listings = await asyncio.gather(ledger.read(), ledger.read_listings())
            options = digest_options(
                chunk_size=chunk_size, chunk_overlap=chunk_overlap, id_key=id_key, identity=digest_identity(session)
            )
            digests = {source: entry.digest for source, entry in entries.items()}
            return LedgerListing(digest_prefix(key, options), digests, listings)
    finally:
        await session.close()
