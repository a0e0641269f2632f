"""
The source ledger: one row per source in a companion collection, so a re-run skips unchanged sources whole.

A write with ``replace_by`` records, in ``<collection>__sources``, each source's digest and how many
chunks it has in the collection. The digest covers the source's documents as given, the
``replace_by`` key, the split and id options and the embedding identity; every row written for the
source carries it too (``source_digest``, in the dynamic field or a VARCHAR field of that name).

The ledger is verified, never trusted on a count alone. Before a source is skipped, an audit of the
whole scope asks two things at once: ``count(*)`` of the scope, and every row that is *not* exactly
tracked, i.e. lacks an entry's ``replace_by`` value or an entry's digest (``not (key in [...] and
source_digest in [...])``, usually no row). The sources such a row names are suspects; the rest of the
count are paired rows, which must equal the entries' chunks. Two requests for any number of sources
(plus the ledger read), and no row of a tracked source is read. When the audit finds anything amiss,
the sources' rows are read back (primary key, value, digest) and each source is judged on its own.

What a count cannot see: paired rows are counted, not attributed to their source. A row copied from a
tracked source under a new primary key, or a duplicate primary key on a real Milvus, both carrying a
tracked value and digest, can balance as many rows of tracked sources lost at the same time (by a
writer outside this package: this package's deletes and rewrites invalidate the entries they touch);
so can an outside edit that swaps a row's value to another tracked source's while keeping its digest.
Collections that cannot carry the digest (no dynamic field, no ``source_digest`` field) fall back
to the chunk-by-chunk comparison. Entries of sources about to be rewritten are removed before the
write and recorded after it, so an entry only describes rows a finished run wrote.

Files read from ``source_url`` also get a *listing row* (key ``<replace_by>#listing``, same scope and
source): the hash of the digest prefix (split, id and embedding options), the file's listing metadata
(ETag or version id and size; local: size and mtime) and the entry's digest. A later run whose listing
gives the same hash under the same options knows the body still hashes to that digest without reading
it (``core/listing.py``); the entry is still verified against the collection before the source is
skipped. Listing rows live in the ledger's existing fields, so ledgers made by earlier releases need no
migration: an entry without a listing row is read once and then gets one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.filters import to_literal
from airflow_provider_milvus.core.gather import batched, bounded_gather
from airflow_provider_milvus.core.limits import MAX_QUERY_ROWS
from airflow_provider_milvus.core.schema import VARCHAR
from airflow_provider_milvus.core.session import in_sync_client
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient, MilvusClient

    from airflow_provider_milvus.core.jobs import WriteJob
    from airflow_provider_milvus.core.schema import CollectionSchema
    from airflow_provider_milvus.core.session import Session

log = logging.getLogger(__name__)

SUFFIX = "__sources"
VERSION = "2"  # part of every digest: a change in how chunks are derived invalidates all entries
BATCH = 1000  # sources per verification, upsert or delete request
VERIFY_ROWS = 8000  # rows expected per verification query; one query returns at most MAX_QUERY_ROWS
LISTING_SUFFIX = "#listing"  # listing rows' key: "#" cannot occur in a replace_by field name
DIGEST_FIELD = "source_digest"  # every row of a tracked source carries its source's digest here
MARKER = "airflow-provider-milvus source ledger"  # a collection property of every ledger made here
# The ledger's fields as created here: (name, type); describe_collection reports types as numbers.
LEDGER_FIELDS = {"id": 21, "key": 21, "scope": 21, "source": 21, "digest": 21, "chunks": 5, "vector": 101}


@dataclass(frozen=True)
class Entry:
    """One source as the last finished run wrote it: the digest of its documents and its chunk count."""

    digest: str
    chunks: int


@dataclass
class Check:
    """What the ledger lets this run skip, and what it says about the rest of the scope."""

    skipped: dict[str, Entry] = field(default_factory=dict)  # by source key (``source_key``)
    known: dict[str, Entry] = field(default_factory=dict)  # every readable entry of this key and scope
    complete: bool = False  # every entry verified and the ledger accounts for every row in scope


@dataclass(frozen=True)
class Audit:
    """What two requests say about a scope: its row count, and its rows that are not exactly tracked."""

    stored: int  # rows in scope
    expected: int  # rows the entries account for
    paired: int  # rows carrying an entry's source value and an entry's digest: stored - len(untracked)
    suspects: frozenset[str] = frozenset()  # sources named by an untracked row (its value or digest)
    capped: bool = False  # more untracked rows than one query returns: nothing can be concluded

    @property
    def balanced(self) -> bool:
        """Every entry's rows look intact: as many paired rows as entries' chunks, no suspect, not capped."""
        return not self.capped and not self.suspects and self.paired == self.expected

    @property
    def finding(self) -> str:
        if self.capped:
            return f"at least {MAX_QUERY_ROWS} rows in scope are not tracked"
        named = f", {len(self.suspects)} sources named by rows without their digest" if self.suspects else ""
        return f"{self.paired} tracked rows where the ledger expects {self.expected}{named}"


def judge(
    entries: dict[str, Entry], stored: int, untracked: Sequence[dict[str, Any]], *, key: str, capped: bool = False
) -> Audit:
    """
    Judge an audit's two answers (pure).

    ``untracked`` holds the rows lacking an entry's value or an entry's digest: a row with a tracked
    value but another digest (or none), or with a tracked digest but another value, makes its source
    a suspect; the rest belong to no entry (another application's rows). ``stored`` minus their number
    is the count of paired rows, which must equal the entries' chunks.
    """
    owners = {entry.digest: source for source, entry in entries.items()}
    suspects = set()
    for row in untracked:
        value = row.get(key)
        if value is not None and source_key(value) in entries:
            suspects.add(source_key(value))
        digest = row.get(DIGEST_FIELD)
        if isinstance(digest, str) and digest in owners:
            suspects.add(owners[digest])
    expected = sum(entry.chunks for entry in entries.values())
    return Audit(stored, expected, stored - len(untracked), frozenset(suspects), capped)


def ledger_name(collection: str) -> str:
    return f"{collection}{SUFFIX}"


def carries_digest(schema: CollectionSchema) -> bool:
    """Rows can carry their source's digest: in the dynamic field, or a VARCHAR field named ``source_digest``."""
    spec = schema.scalars.get(DIGEST_FIELD)
    if spec is not None:
        return spec.type == VARCHAR and (spec.max_length or 0) >= 64
    return schema.dynamic


def source_key(value: Any) -> str:
    """Return a source's identity in the ledger: its JSON, so the number 1 and the string "1" stay apart."""
    return json.dumps(value, sort_keys=True)


def digest_options(
    *, chunk_size: int | None, chunk_overlap: int, id_key: str | None, identity: dict[str, Any]
) -> dict[str, Any]:
    """Return the options every digest covers besides the documents: split, id key and the embedding identity."""
    return {"chunk_size": chunk_size, "chunk_overlap": chunk_overlap, "id_key": id_key, "embedding": identity}


def digest_identity(session: Session) -> dict[str, Any]:
    """Return the embedding identity a write's digests cover: the model's, or BM25 (or none) without one."""
    return session.embedding_identity or {"kind": "bm25" if session.schema.bm25_field else None}


def digest_prefix(key: str, options: dict[str, Any]) -> str:
    """Return what every digest of this key and these options starts with (the version, key, split, id and embedding options)."""
    return json.dumps({"version": VERSION, "key": key, **options}, sort_keys=True, default=str)


def listing_digest(prefix: str, listing: str, digest: str) -> str:
    """Return a listing row's digest, which binds a file's listing metadata, under these options, to its body's digest."""
    return hashlib.sha256(f"{prefix}\x1e{listing}\x1e{digest}".encode()).hexdigest()


def source_digests(
    documents: Sequence[dict[str, Any]],
    ids: Sequence[Any] | None,
    *,
    key: str,
    options: dict[str, Any],
) -> dict[str, str]:
    """
    SHA-256 per source over its documents (in any order) and what turns them into rows (CPU work).

    ``options`` holds the split and id options and the embedding identity; the ``replace_by`` key goes
    in too, so a run with another key never counts a source as unchanged.
    """
    parts: dict[str, list[str]] = {}
    for position, doc in enumerate(documents):
        given_id = ids[position] if ids is not None else None
        parts.setdefault(source_key(doc["metadata"][key]), []).append(
            json.dumps([doc["page_content"], doc["metadata"], doc.get("vector"), given_id], sort_keys=True)
        )
    prefix = digest_prefix(key, options)
    digests = {}
    for source, docs in parts.items():
        digest = hashlib.sha256(prefix.encode())
        for doc_json in sorted(docs):
            digest.update(b"\x1e" + doc_json.encode())
        digests[source] = digest.hexdigest()
    return digests


def intact_sources(entries: dict[str, Entry], rows: Iterable[dict[str, Any]], *, key: str, primary: str) -> set[str]:
    """
    Return the sources whose stored rows are exactly their entry's (pure).

    As many rows as the entry's chunk count, all with distinct primary keys (a real Milvus keeps
    duplicate keys) and all carrying the entry's digest.
    """
    by_source: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        value = row.get(key)
        if value is not None:
            by_source.setdefault(source_key(value), []).append(row)
    intact = set()
    for source, entry in entries.items():
        stored = by_source.get(source, [])
        if (
            len(stored) == entry.chunks
            and len({r[primary] for r in stored}) == len(stored)
            and all(r.get(DIGEST_FIELD) == entry.digest for r in stored)
        ):
            intact.add(source)
    return intact


async def check_ledger_is_ours(client: AsyncMilvusClient, collection: str, *, request_timeout: float) -> None:
    """Refuse, before anything is written, a ``<collection>__sources`` this package did not make (no-op if absent)."""
    name = ledger_name(collection)
    if not await client.has_collection(name, timeout=request_timeout):
        return
    description = await client.describe_collection(name, timeout=request_timeout)
    fields = {f["name"]: f for f in description.get("fields", [])}
    types = {field_name: int(f["type"]) for field_name, f in fields.items()}
    digest_size = int(fields.get("digest", {}).get("params", {}).get("max_length", 0) or 0)
    properties = description.get("properties") or {}
    # Ledgers made before the marker existed are recognised by their exact schema.
    if types == LEDGER_FIELDS and digest_size >= 64 and properties.get("ledger") in (None, MARKER):
        return
    raise MilvusProviderError(
        f"Collection '{name}' exists but is not this package's source ledger for '{collection}' "
        f"(fields {sorted(fields)}, expected {sorted(LEDGER_FIELDS)}). Rename or drop '{name}', write to "
        "a collection of another name, or pass track_sources=False. Nothing was written."
    )


async def forget_earlier_collection(client: AsyncMilvusClient, collection: str, *, request_timeout: float) -> None:
    """
    Remove every entry of the ledger of ``collection``, which does not exist: they describe an earlier one.

    Called just before creating the collection, never after: shards of one new collection start together,
    and once it exists another shard may already have recorded its entries (a creator that forgot after
    creating removed them, and the cleanup then read those files again).
    """
    name = ledger_name(collection)
    if not await client.has_collection(name, timeout=request_timeout):
        return
    await client.load_collection(name, timeout=request_timeout)
    await client.delete(name, filter='id != ""', timeout=request_timeout)
    log.info("%s: the entries of an earlier collection '%s' forgotten before creating it", name, collection)


class Ledger:
    """The ledger rows of one collection, ``replace_by`` key and tenant, read and written through a session."""

    def __init__(self, session: Session, key: str) -> None:
        self.session = session
        self.key = key
        self.scope = session.tenant if session.schema.partition_key and session.tenant is not None else ""
        self.name = ledger_name(session.name)
        self._exists: bool | None = None
        self._loaded = False

    @property
    def _where(self) -> str:
        return f"key == {to_literal(self.key)} and scope == {to_literal(self.scope)}"

    def _id(self, source: str, *, key: str | None = None) -> str:
        return hashlib.sha256(f"{key or self.key}\x1f{self.scope}\x1f{source}".encode()).hexdigest()[:32]

    @property
    def _listing_key(self) -> str:
        return f"{self.key}{LISTING_SUFFIX}"

    async def exists(self) -> bool:
        if self._exists is None:
            self._exists = bool(await self.session.client.has_collection(self.name, timeout=self.session.timeout))
        return self._exists

    async def _load(self) -> bool:
        """Load the ledger collection for reading, once (concurrent readers may both ask); False if it is missing."""
        if not await self.exists():
            return False
        if not self._loaded:
            await self.session.client.load_collection(self.name, timeout=self.session.timeout)
            self._loaded = True
        return True

    async def check_ours(self) -> None:
        """Refuse, before anything is written, a ``<collection>__sources`` this package did not make."""
        if await self.exists():
            await check_ledger_is_ours(self.session.client, self.session.name, request_timeout=self.session.timeout)

    async def read(self) -> dict[str, Entry]:
        """Every readable entry of this key and scope; unreadable rows are ignored and counted in the log."""
        if not await self._load():
            return {}
        fields = ["source", "digest", "chunks"]
        rows = await self.session.read_all(self._where, fields, collection=self.name, phase="ledger", small_rows=True)
        entries: dict[str, Entry] = {}
        unreadable = 0
        for row in rows:
            try:
                source = source_key(json.loads(row["source"]))
                digest, chunks = row["digest"], int(row["chunks"])
                if not isinstance(digest, str) or chunks < 0:
                    raise ValueError(digest)
            except (KeyError, TypeError, ValueError):
                unreadable += 1
                continue
            entries[source] = Entry(digest, chunks)
        if unreadable:
            log.warning(
                "%s: ignored %d unreadable source ledger rows (key %r); their sources are compared chunk by chunk",
                self.name,
                unreadable,
                self.key,
            )
        return entries

    async def audit(self, entries: dict[str, Entry]) -> Audit:
        """
        Count the scope and read its rows that are not exactly tracked: two requests, whatever the size.

        A row is exactly tracked when its ``replace_by`` value is a source of ``entries`` and it carries
        the digest of one of them. The read returns every other row (another application's, an
        untracked write's, a row that lost or never had its digest, one whose value was edited),
        usually none: Milvus Lite answers a filtered ``count(*)`` by materialising every matching row,
        so only a filter that matches what should *not* be there is cheap on both servers.
        """
        values = [json.loads(source) for source in entries]
        digests = sorted({entry.digest for entry in entries.values()})
        tracked = f"{self.key} in {to_literal(values)} and {DIGEST_FIELD} in {to_literal(digests)}"
        fields = [self.session.schema.primary, *self._row_fields()]
        stored, untracked = await asyncio.gather(
            self.session.count(self.session.scope, phase="ledger"),
            self.session.query(self.session.scoped(f"not ({tracked})"), fields, MAX_QUERY_ROWS, phase="ledger"),
        )
        return judge(entries, stored, untracked, key=self.key, capped=len(untracked) >= MAX_QUERY_ROWS)

    def _row_fields(self) -> list[str]:
        """Output fields that hold a row's ``replace_by`` value and digest (``$meta`` for dynamic ones)."""
        schema = self.session.schema
        fields = [name for name in (self.key, DIGEST_FIELD) if name in schema.scalars]
        if schema.dynamic and len(fields) < 2:
            fields.append("$meta")
        return fields

    async def read_back(self, entries: dict[str, Entry], *, stored: int, max_concurrency: int) -> set[str]:
        """
        Read primary keys and digests of these sources' rows; return the intact sources.

        Only when the audit found something amiss. One ``key in [...]`` query per ~8,000 expected rows
        (1,000 sources at most); when that would take more than two queries and the sources hold at
        least half of the scope (``stored`` rows), one scan of the scope in pages of 16,384 rows instead.
        """
        schema = self.session.schema
        fields = [schema.primary, *self._row_fields()]
        groups: list[list[str]] = []
        expected = 0
        for source, entry in entries.items():
            if not groups or len(groups[-1]) >= BATCH or (groups[-1] and expected + entry.chunks > VERIFY_ROWS):
                groups.append([])
                expected = 0
            groups[-1].append(source)
            expected += entry.chunks

        expected_rows = sum(entry.chunks for entry in entries.values())
        if len(groups) > 2 and stored <= 2 * expected_rows:  # many sources: one scan of the scope
            rows = await self.session.query_all(self.session.everything, fields, phase="ledger", small_rows=True)
            return intact_sources(entries, rows, key=self.key, primary=schema.primary)

        async def verify(sources: list[str]) -> set[str]:
            values = [json.loads(s) for s in sources]
            expr = self.session.scoped(f"{self.key} in {to_literal(values)}")
            rows = await self.session.read_all(expr, fields, phase="ledger", small_rows=True)
            return intact_sources({s: entries[s] for s in sources}, rows, key=self.key, primary=schema.primary)

        results = await bounded_gather(groups, verify, max_concurrency=max_concurrency)
        return set().union(*results) if results else set()

    async def check(self, digests: dict[str, str], *, whole_scope: bool, max_concurrency: int) -> Check:
        """
        Find the sources whose digest matches their entry and whose rows are exactly the entry's.

        The audit decides for every entry at once; only when it finds something amiss are rows read
        back, of the sources with an unchanged digest (``whole_scope``, i.e. ``delete_missing``: of
        every entry). ``complete``: every entry is intact and the scope holds no other row, so
        vanished sources come from the ledger alone.
        """
        known = await self.read()
        check = Check(known=known)
        if not known:
            return check
        candidates = {s: known[s] for s, digest in digests.items() if s in known and known[s].digest == digest}
        audit = await self.audit(known)
        if audit.balanced:
            intact = set(known)
        else:
            log.info("%s: source ledger audit: %s; reading the sources' rows back", self.session.name, audit.finding)
            checked = known if whole_scope else candidates
            intact = await self.read_back(checked, stored=audit.stored, max_concurrency=max_concurrency)
            if audit.paired > audit.expected and not audit.suspects and len(intact) == len(checked):
                # Queries return one row per primary key; count(*) on a real Milvus counts every copy.
                log.warning(
                    "%s: %d tracked rows more than the source ledger's that no read attributes to a source "
                    "(duplicate primary keys?); a run with force=True rewrites every source",
                    self.session.name,
                    audit.paired - audit.expected,
                )
        check.skipped = {s: entry for s, entry in candidates.items() if s in intact}
        check.complete = whole_scope and len(intact) == len(known) and audit.stored == audit.expected
        if len(check.skipped) < len(candidates):
            log.info(
                "%s: %d of %d sources with an unchanged digest no longer hold exactly their ledger rows: "
                "compared chunk by chunk",
                self.session.name,
                len(candidates) - len(check.skipped),
                len(candidates),
            )
        return check

    async def forget(self, sources: Iterable[str]) -> None:
        """Remove entries (before their sources are rewritten, or after they vanished)."""
        ids = [i for source in sources for i in (self._id(source), self._id(source, key=self._listing_key))]
        if not ids or not await self.exists():
            return

        async def delete(batch: Sequence[str]) -> None:
            self.session.round_trips["ledger"] += 1
            await self.session.client.delete(self.name, ids=list(batch), timeout=self.session.timeout)

        await bounded_gather(batched(ids, BATCH), delete, max_concurrency=4)

    async def read_listings(self) -> dict[str, str]:
        """Read the listing rows of this key and scope: source key -> listing digest (``listing_digest``)."""
        if not await self._load():
            return {}
        where = f"key == {to_literal(self._listing_key)} and scope == {to_literal(self.scope)}"
        fields = ["source", "digest"]
        rows = await self.session.read_all(where, fields, collection=self.name, phase="ledger", small_rows=True)
        listings = {}
        for row in rows:
            try:
                listings[source_key(json.loads(row["source"]))] = str(row["digest"])
            except (KeyError, TypeError, ValueError):
                continue  # unreadable: that source is read
        return listings

    async def record_listings(self, listings: dict[str, str]) -> None:
        """Upsert listing rows (source key -> listing digest), after the entries they are bound to."""
        await self.record({s: Entry(digest, 0) for s, digest in listings.items()}, key=self._listing_key)

    async def create(self) -> None:
        """Create the ledger collection unless it exists (a concurrent creator winning the race is fine)."""
        if not await self.exists():
            await in_sync_client(self.session.settings, lambda client: _create_ledger(client, self.name))
            self._exists = True

    async def record(self, entries: dict[str, Entry], *, key: str | None = None) -> None:
        """Upsert entries (of ``key``: listing rows); the ledger collection is created on first use."""
        if not entries:
            return
        await self.create()
        rows = [
            {
                "id": self._id(source, key=key),
                "key": key or self.key,
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


async def forget_digests(session: Session, digests: Iterable[Any]) -> int:
    """
    Remove the entries (of any key and scope) whose digest is among ``digests``.

    A delete or an untracked write through this package calls it with the digests of the rows it
    removed or replaced, so the next tracked run re-checks exactly those sources.
    """
    wanted = sorted({d for d in digests if isinstance(d, str) and d})
    name = ledger_name(session.name)
    if not wanted or not await session.client.has_collection(name, timeout=session.timeout):
        return 0
    for batch in batched(wanted, BATCH):
        session.round_trips["ledger"] += 1
        await session.client.delete(name, filter=f"digest in {to_literal(list(batch))}", timeout=session.timeout)
    log.info("%s: %d source ledger entries invalidated (their rows were changed)", name, len(wanted))
    return len(wanted)


async def forget_matching(session: Session, expr: str) -> None:
    """
    Before a delete through this package: remove the entries of the sources whose rows ``expr`` matches.

    Reads the digests those rows carry (one query); more matches than one query returns forget the
    whole scope. Costs one ``has_collection`` when the collection has no ledger.
    """
    name = ledger_name(session.name)
    if not carries_digest(session.schema) or not await session.client.has_collection(name, timeout=session.timeout):
        return
    field = DIGEST_FIELD if DIGEST_FIELD in session.schema.scalars else "$meta"
    rows = await session.query(expr, [session.schema.primary, field], MAX_QUERY_ROWS, phase="ledger")
    if len(rows) == MAX_QUERY_ROWS:
        await forget_scope(session)
        return
    await forget_digests(session, (row.get(DIGEST_FIELD) for row in rows))


async def forget_scope(session: Session) -> None:
    """Remove every entry of the session's scope (a change too large to name its sources)."""
    name = ledger_name(session.name)
    if not await session.client.has_collection(name, timeout=session.timeout):
        return
    everything = not (session.schema.partition_key and session.tenant is not None)  # no tenant: every scope
    expr = 'id != ""' if everything else f"scope == {to_literal(session.tenant)}"
    session.round_trips["ledger"] += 1
    await session.client.delete(name, filter=expr, timeout=session.timeout)
    log.info("%s: every entry of the scope invalidated", name)


class SourceTracking:
    """
    The source ledger's part in one write (``replace_by`` with ``track_sources``).

    Which sources to skip whole, which stored sources to look up, the digest each written row
    carries, and the entries to forget before and record after the write.
    """

    def __init__(self, job: WriteJob, ledger: Ledger | None, values: dict[str, Any], digests: dict[str, str]) -> None:
        self.job = job
        self.ledger = ledger
        self.values = values  # source key -> replace_by value, every source of the input
        self.digests = digests  # empty when rows cannot carry them (or no tracking)
        self.check = Check()
        self.prefix = ""  # digest_prefix of this run's key and options
        self.listings: dict[str, str] = {}  # source key -> listing metadata, of the files read from source_url
        self.unread: dict[str, str] = {}  # source key -> ledger digest, of the files not read (core/listing.py)
        self.unverified: set[Any] = set()  # replace_by values of unread files whose entries failed verification

    @classmethod
    async def start(
        cls, session: Session, job: WriteJob, documents: list[dict[str, Any]], *, identity: dict[str, Any]
    ) -> SourceTracking:
        """Check the ledger is ours, then verify its entries against the collection (``identity``: the embedding's)."""
        key = job.replace_by or ""
        values = {source_key(d["metadata"][key]): d["metadata"][key] for d in documents} if key else {}
        unread = {source_key(d["metadata"][key]): d["unread"] for d in documents if d.get("unread")} if key else {}
        if not (key and job.track_sources):
            refuse_unread(unread, "the source ledger is off (replace_by and track_sources)")
            return cls(job, None, values, {})
        ledger = Ledger(session, key)
        await ledger.check_ours()
        if not carries_digest(session.schema):
            refuse_unread(unread, "the collection's rows cannot carry their source's digest")
            log.warning(
                "%s %s: the collection has no dynamic field and no VARCHAR field '%s', so its rows cannot carry "
                "their source's digest: the source ledger is off and every source is compared chunk by chunk",
                job.operation,
                session.name,
                DIGEST_FIELD,
            )
            return cls(job, None, values, {})
        options = digest_options(
            chunk_size=job.chunk_size, chunk_overlap=job.chunk_overlap, id_key=job.id_key, identity=identity
        )
        read = [d for d in documents if not d.get("unread")] if unread else documents
        digests = await asyncio.to_thread(source_digests, read, job.ids, key=key, options=options)
        digests.update(unread)  # what the listing says their unread bodies hash to; verified below
        tracking = cls(job, ledger, values, digests)
        tracking.prefix = digest_prefix(key, options)
        tracking.listings = {source_key(d["metadata"][key]): d["listing"] for d in read if d.get("listing")}
        tracking.unread = unread
        # A collection this run created holds nothing to check: the entries of an earlier collection of this
        # name went just before it was created (``forget_earlier_collection``).
        if job.force and not session.created:
            tracking.check = Check(known=await ledger.read())
        elif not session.created:
            whole_scope = job.delete_missing
            tracking.check = await ledger.check(digests, whole_scope=whole_scope, max_concurrency=job.max_concurrency)
        # Unread on their listing, but their rows no longer match their entries: the write core reads them.
        tracking.unverified = {values[s] for s in set(unread) - set(tracking.check.skipped)}
        if tracking.check.skipped:
            log.info(
                "%s %s: %d unchanged sources skipped whole (source ledger, verified)",
                job.operation,
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

    def stamp(self, chunks: list[dict[str, Any]]) -> None:
        """Give each chunk its source's digest, which its row will carry."""
        if not self.digests:
            return
        key = self.job.replace_by or ""
        for chunk in chunks:
            chunk["digest"] = self.digests[source_key(chunk["metadata"][key])]

    def to_split(self, documents: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any] | None]:
        """Return the documents (and their ``ids``) of the sources not skipped."""
        if not self.skipped:
            return documents, self.job.ids
        key = self.job.replace_by or ""
        kept = [i for i, d in enumerate(documents) if source_key(d["metadata"][key]) not in self.skipped]
        ids = self.job.ids
        return [documents[i] for i in kept], None if ids is None else [ids[i] for i in kept]

    async def create_ledger(self) -> None:
        """Create the ledger this write will record in, if it has none yet (a first run: while it embeds)."""
        if self.ledger is not None:
            await self.ledger.create()

    async def before_write(self) -> None:
        if self.ledger is not None:
            await self.ledger.forget(s for s in self.values if s in self.check.known and s not in self.skipped)

    @property
    def ledger_names(self) -> list[str]:
        """The ledger collection this write keeps, if any."""
        return [self.ledger.name] if self.ledger is not None else []

    async def after_write(self, chunks: list[dict[str, Any]]) -> None:
        if self.ledger is None:
            return
        key = self.job.replace_by or ""
        sizes = Counter(source_key(c["metadata"][key]) for c in chunks)
        await self.ledger.record({s: Entry(self.digests[s], sizes[s]) for s in sizes})
        # After their entries: a listing row binds the file's listing metadata to the digest just recorded.
        written = sizes.keys() | self.skipped.keys()
        await self.ledger.record_listings(
            {s: listing_digest(self.prefix, meta, self.digests[s]) for s, meta in self.listings.items() if s in written}
        )
        if self.job.delete_missing:  # their rows are gone now
            await self.ledger.forget(s for s in self.check.known if s not in self.values)


def refuse_unread(unread: Collection[Any], reason: str) -> None:
    """Refuse, before anything is written, sources passed unread (listing unchanged) that this run cannot skip."""
    if unread:
        shown = ", ".join(sorted(map(str, unread))[:3])
        raise MilvusProviderError(
            f"{len(unread)} sources were not read because their listing was unchanged ({shown}, ...), but {reason}. "
            "Nothing was written; re-run the task (or use change_detection='content')."
        )


def _create_ledger(client: MilvusClient, name: str) -> None:
    """Create the ledger collection unless it exists; a concurrent creator winning the race is not an error."""
    from pymilvus import DataType, MilvusClient

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
        client.create_collection(
            name, schema=schema, index_params=index, consistency_level="Strong", properties={"ledger": MARKER}
        )
    except Exception as error:
        if "exist" not in str(error).lower():  # another task created it first
            raise
