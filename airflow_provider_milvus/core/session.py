"""One run's connection: settings, one async client on this loop, embeddings and the collection's schema."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from airflow_provider_milvus.core.collection import NewCollection, aread_schema, check_embedding_identity
from airflow_provider_milvus.core.filters import to_literal
from airflow_provider_milvus.core.limits import MAX_QUERY_ROWS
from airflow_provider_milvus.core.schema import CollectionSchema, FieldChoice
from airflow_provider_milvus.exceptions import MilvusProviderError, describe_milvus_error

log = logging.getLogger(__name__)
T = TypeVar("T")

# Texts -> vectors the same model made already (a rebuild's live version): asked before the embedding API.
KnownVectors = Callable[[list[str]], Awaitable[dict[str, list[float]]]]

# Rows a write on Milvus Lite flushes at a time, while it goes on (see ``Session.flush_after_write``).
FLUSH_EVERY_ROWS = 16_384

# The dense field's size in the schema a new collection is checked against before the model is probed.
DIMENSION_STAND_IN = 8

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from pymilvus import AsyncMilvusClient, MilvusClient

    from airflow_provider_milvus.core.jobs import StoreConfig
    from airflow_provider_milvus.settings import MilvusConnectionSettings


@dataclass
class Session:
    """Everything a job needs on the running loop; ``scope`` limits it to one tenant."""

    settings: MilvusConnectionSettings
    client: AsyncMilvusClient
    embeddings: Embeddings | None
    schema: CollectionSchema
    secrets: list[str]
    tenant: str | None = None
    created: bool = False  # this run created the collection: it holds nothing to look up
    # Milvus before 2.4 (2.3.5 included) routes upserted rows by the wrong field in a partition-key
    # collection, so filters on the partition key never find them (milvus-io/milvus#30607, fixed by
    # #30772/#30773): writes there delete and insert instead.
    upsert_misroutes_partition_key: bool = False
    # Milvus Lite answers every query over rows it has not flushed by rebuilding a table of them (count(*)
    # over 34,380 unflushed rows: 0.17 s; flushed: 0.013 s), and flushes by itself only at 128 MB: writes
    # there flush every FLUSH_EVERY_ROWS rows (while later batches are still being embedded) and at the
    # end, so the next run's ledger audit reads sealed segments.
    flush_after_write: bool = False
    unflushed_rows: int = 0
    # Milvus Lite passes over every row of the collection for each query, so each page of a query
    # iterator costs a pass (100,000 ledger entries in 7 pages: 7 passes over the ledger): ``query_all``
    # asks it once for small rows, without a limit (real servers cap a query's rows, so they page).
    one_pass_queries: bool = False
    # Which model makes this run's vectors (kind of connection, model, dimensions); None without one.
    embedding_identity: dict[str, Any] | None = None
    round_trips: Counter[str] = field(default_factory=Counter)  # Milvus requests by phase
    known_vectors: KnownVectors | None = None  # a rebuild's: stored vectors for texts, before embedding
    _sync_client: MilvusClient | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.schema.name

    @property
    def timeout(self) -> float:
        return self.settings.timeout

    @property
    def scope(self) -> str:
        """The tenant filter (a partition-key expression, never ``partition_names``), or ''."""
        if self.tenant is None or not self.schema.partition_key:
            return ""
        return f"{self.schema.partition_key} == {to_literal(self.tenant)}"

    @property
    def everything(self) -> str:
        """A filter matching every row in scope (iterators and deletes need an expression)."""
        if self.scope:
            return self.scope
        primary = self.schema.primary
        return f"{primary} >= {-(1 << 63)}" if self.schema.int_ids else f'{primary} != ""'

    def scoped(self, expr: str | None) -> str:
        parts = [p for p in (expr, self.scope) if p]
        return " and ".join(f"({p})" for p in parts) if len(parts) > 1 else (parts[0] if parts else "")

    def errors(self, *, action: str) -> contextlib.AbstractContextManager[None]:
        return describe_milvus_error(self.settings, action=action, secrets=self.secrets)

    async def count(self, expr: str, *, phase: str = "lookup") -> int:
        self.round_trips[phase] += 1
        rows = await self.client.query(
            self.name, filter=expr, output_fields=["count(*)"], consistency_level="Strong", timeout=self.timeout
        )
        return int(rows[0]["count(*)"]) if rows else 0

    async def query(
        self, expr: str, output_fields: list[str], limit: int, *, collection: str | None = None, phase: str = "lookup"
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` rows of this collection (or of ``collection``, e.g. the source ledger)."""
        self.round_trips[phase] += 1
        rows = await self.client.query(
            collection or self.name,
            filter=expr,
            output_fields=output_fields,
            limit=limit,
            consistency_level="Strong",
            timeout=self.timeout,
        )
        return list(rows)

    async def read_all(
        self,
        expr: str,
        output_fields: list[str],
        *,
        collection: str | None = None,
        phase: str = "lookup",
        small_rows: bool = False,
    ) -> list[dict[str, Any]]:
        """Every row ``expr`` matches: one query when they fit in one, else paged (``small_rows``: see ``query_all``)."""
        if small_rows and self.one_pass_queries:
            return await self.query_all(expr, output_fields, collection=collection, phase=phase, small_rows=True)
        rows = await self.query(expr, output_fields, MAX_QUERY_ROWS, collection=collection, phase=phase)
        if len(rows) < MAX_QUERY_ROWS:
            return rows
        return await self.query_all(expr, output_fields, collection=collection, phase=phase)

    async def query_all(
        self,
        expr: str,
        output_fields: list[str],
        *,
        page: int = MAX_QUERY_ROWS,
        collection: str | None = None,
        phase: str = "lookup",
        small_rows: bool = False,
    ) -> list[dict[str, Any]]:
        """
        Every row ``expr`` matches, past the ``MAX_QUERY_ROWS`` one query returns (sync iterator in a thread).

        ``small_rows``: rows of keys and digests (the source ledger's), which on Milvus Lite come in one query
        without a limit. Rows that may carry texts are paged there too: one answer must stay under Lite's
        256 MB message limit.
        """
        from pymilvus import MilvusClient

        if small_rows and self.one_pass_queries:
            self.round_trips[phase] += 1
            rows = await self.client.query(
                collection or self.name,
                filter=expr,
                output_fields=output_fields,
                consistency_level="Strong",
                timeout=self.timeout,
            )
            return list(rows)

        def iterate() -> list[dict[str, Any]]:
            if self._sync_client is None:
                self._sync_client = MilvusClient(**self.settings.client_kwargs())
            iterator = self._sync_client.query_iterator(
                collection or self.name, batch_size=page, filter=expr, output_fields=output_fields, timeout=self.timeout
            )
            rows: list[dict[str, Any]] = []
            try:
                while batch := iterator.next():
                    self.round_trips[phase] += 1
                    rows.extend(batch)
            finally:
                iterator.close()
            return rows

        return await asyncio.to_thread(iterate)

    async def load(self) -> None:
        """Load the collection for reads: ``Connection.open`` does, except for a collection this run created."""
        await _load(self.client, self.name, within_seconds=self.timeout)

    async def wrote(self, rows: int) -> None:
        """Count rows just written; on Milvus Lite, flush them once ``FLUSH_EVERY_ROWS`` have gathered."""
        if self.flush_after_write:
            self.unflushed_rows += rows
            if self.unflushed_rows >= FLUSH_EVERY_ROWS:
                self.unflushed_rows = 0
                await self._flush(self.name)

    async def settle(self, *others: str) -> None:
        """After a write that changed rows: flush this collection and ``others`` on Milvus Lite, else nothing."""
        if self.flush_after_write:
            self.unflushed_rows = 0
            for name in (self.name, *others):
                await self._flush(name)

    async def _flush(self, name: str) -> None:
        self.round_trips["flush"] += 1
        await self.client.flush(name, timeout=self.timeout)

    async def close(self) -> None:
        """Close the sync client of ``query_all``; the async client belongs to the ``Connection``."""
        if self._sync_client is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._sync_client.close)


@dataclass
class Connection:
    """A connected client and the task's embeddings, before any collection is opened."""

    config: StoreConfig
    settings: MilvusConnectionSettings
    client: AsyncMilvusClient
    embeddings: Embeddings | None
    secrets: list[str]
    identity: dict[str, Any] | None  # the embeddings' identity (kind of connection, model, dimensions)

    @property
    def name(self) -> str:
        return self.config.collection_name

    def errors(self, *, action: str) -> contextlib.AbstractContextManager[None]:
        # secrets: the dimension probe calls the embedding API, whose errors may echo its key.
        return describe_milvus_error(self.settings, action=action, secrets=self.secrets)

    async def exists(self) -> bool:
        return bool(await self.client.has_collection(self.name, timeout=self.settings.timeout))

    async def expected_schema(self, options: NewCollection, *, vector_dimension: int | None) -> CollectionSchema:
        """
        Return the schema ``options`` would create, refused as an existing one would be (a missing partition key).

        Check first, create after: a write checks its input against this before ``create_collection``,
        so input the new collection would refuse leaves no collection behind.
        """
        stand_in = vector_dimension or (DIMENSION_STAND_IN if self.embeddings is not None else None)
        # With embedding_function the dense field's size is the function's and the stand-in is ignored.
        expected = await asyncio.to_thread(options.expected_schema, self.name, stand_in, _choice(self.config))
        _check_usable(expected, self.config, self.embeddings)
        return expected

    async def create_collection(self, options: NewCollection, *, vector_dimension: int | None) -> bool:
        """
        Create the missing collection as ``options`` say, recording the embedding identity.

        Returns False when another task created it meanwhile (then it may hold that task's rows already).

        Its vector size comes from ``vector_dimension`` (precomputed vectors) or one probe of the model;
        with ``options.embedding_function`` from the function, and no model is probed (Milvus embeds).
        A write calls this as its own step, after every check of the input against ``options``.
        """
        embeddings = None if options.embedding_function is not None else self.embeddings
        return await _create(options, self.settings, embeddings, vector_dimension, self.name, self.identity)

    async def open(self, *, write: bool, metrics: bool, created: bool = False, server_version: bool = False) -> Session:
        """
        Read the schema and load the collection; refuse a partition key it lacks or another embedding model.

        ``metrics=False`` skips reading the indexes' metrics, which only searches need (Milvus Lite
        describes indexes slowly); ``write`` also asks the server's version (a 2.3 upsert workaround,
        Milvus Lite's flushes and one-pass reads), as ``server_version`` does for a read of a whole ledger.
        A collection this run ``created`` is not loaded here: the write core loads it (``Session.load``)
        while its first rows are embedded and written, and reads it only after.
        """
        config, client = self.config, self.client
        # A write has just checked (or made) the collection: no second has_collection.
        schema = await aread_schema(client, self.name, _choice(config), metrics=metrics, exists=created or write)
        _check_usable(schema, config, self.embeddings)
        embeddings, identity, secrets = embedding_side(schema, self.embeddings, self.identity, self.secrets)
        # The schema names the physical collection: an alias switched meanwhile does not split this run.
        if not created:
            await _load(client, schema.name, within_seconds=self.settings.timeout)
        # Only writes and whole-ledger reads are affected: searches and deletes skip asking the server's version.
        version = await client.get_server_version() if write or server_version else ""
        return Session(
            self.settings,
            client,
            embeddings,
            schema,
            secrets,
            tenant=config.partition_key_value,
            created=created,
            upsert_misroutes_partition_key=bool(schema.partition_key) and _before_2_4(version),
            flush_after_write=_is_milvus_lite(version),
            one_pass_queries=_is_milvus_lite(version),
            embedding_identity=identity,
        )


@contextlib.asynccontextmanager
async def connect(config: StoreConfig, *, embed: bool = True) -> AsyncIterator[Connection]:
    """Read the connection, build the embeddings (unless ``embed=False``: deletes need no model), connect."""
    # The first import of pymilvus (grpc, pandas, pyarrow) takes seconds: never on the triggerer's loop.
    await asyncio.to_thread(importlib.import_module, "pymilvus")
    from pymilvus import AsyncMilvusClient

    from airflow_provider_milvus.settings import aget_settings

    if not config.collection_name:
        raise MilvusProviderError("collection_name is empty.")
    settings = await aget_settings(config.milvus_conn_id)
    embeddings, embedding_secrets, identity = await _aembeddings(config, settings) if embed else (None, [], None)
    client = AsyncMilvusClient(**settings.client_kwargs())
    try:
        yield Connection(config, settings, client, embeddings, settings.secrets + embedding_secrets, identity)
    finally:
        with contextlib.suppress(Exception):
            await client.close()
        await _aclose_embeddings(embeddings)


@contextlib.asynccontextmanager
async def open_session(
    config: StoreConfig, *, create: bool = False, embed: bool = True, metrics: bool = True
) -> AsyncIterator[Session]:
    """
    Connect and open an existing collection (searches, deletes); ``create`` only marks a write.

    Writes create a missing collection as a step of their own (``Connection.create_collection``).
    """
    async with connect(config, embed=embed) as connection:
        with connection.errors(action=f"open collection '{connection.name}'"):
            session = await connection.open(write=create, metrics=metrics)
        try:
            yield session
        finally:
            await session.close()


async def _create(
    options: NewCollection,
    settings: MilvusConnectionSettings,
    embeddings: Embeddings | None,
    dimension: int | None,
    name: str,
    identity: dict[str, Any] | None,
) -> bool:
    if dimension is None and embeddings is not None:
        dimension = len(await embeddings.aembed_query("dimension probe"))
    return await in_sync_client(
        settings, lambda client: options.create(client, name, dimension, identity=identity, load=False)
    )


async def in_sync_client(settings: MilvusConnectionSettings, work: Callable[[MilvusClient], T]) -> T:
    """
    Run ``work`` with a short-lived sync client, in a thread; the client is closed after it.

    Collections (this package's and the source ledger's) are created this way: the async
    ``create_collection`` waits on an index RPC Milvus Lite lacks.
    """
    from pymilvus import MilvusClient

    def run() -> T:
        client = MilvusClient(**settings.client_kwargs())
        try:
            return work(client)
        finally:
            client.close()

    return await asyncio.to_thread(run)


def _choice(config: StoreConfig) -> FieldChoice:
    return FieldChoice(text_field=config.text_field, vector_field=config.vector_field)


async def _load(client: AsyncMilvusClient, name: str, *, within_seconds: float) -> None:
    """
    Load ``name``, waiting (up to ``within_seconds``) for a collection another task is still creating.

    Creating a collection is three requests (create, index, load): a concurrent task that finds it
    between the first two is refused with "index not found" until the creator's index exists.
    """
    from pymilvus import MilvusException

    deadline = time.monotonic() + within_seconds
    while True:
        try:
            await client.load_collection(name, timeout=within_seconds)
            return
        except MilvusException as error:
            if "index not found" not in str(error) or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _is_milvus_lite(version: str) -> bool:
    return version.strip().startswith("milvus_lite")


def _before_2_4(version: str) -> bool:
    """``v2.3.5`` -> True; Milvus Lite (``milvus_lite-3.2.2``) and unparsable versions -> False."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.\d+.*", version.strip())
    return match is not None and (int(match.group(1)), int(match.group(2))) < (2, 4)


def embedding_side(
    schema: CollectionSchema, embeddings: Embeddings | None, identity: dict[str, Any] | None, secrets: list[str]
) -> tuple[Embeddings | None, dict[str, Any] | None, list[str]]:
    """
    Return the embeddings, identity and secrets a session uses: the client's, or none when Milvus embeds.

    A collection whose dense field a ``TEXT_EMBEDDING`` function fills is written with text and searched
    with query text: the session gets no client-side model (so none can be called) and the function's
    identity; an embedding connection configured anyway is ignored, with a warning.
    """
    server = schema.server_embedding
    if server is None:
        check_embedding_identity(schema, identity)
        return embeddings, identity, secrets
    if embeddings is not None:
        log.warning(
            "Collection '%s' computes its vectors in Milvus (function '%s': %s model %r from '%s'); the "
            "embedding connection configured for this task is not used.",
            schema.name,
            server.name,
            server.provider,
            server.model,
            server.input,
        )
    return None, server.identity(schema.dense.dim), [*secrets, *server.secrets]


def _check_usable(schema: CollectionSchema, config: StoreConfig, embeddings: Embeddings | None) -> None:
    if embeddings is not None:
        schema.dense
    if config.partition_key_value is not None and not schema.partition_key:
        raise MilvusProviderError(
            f"partition_key_value={config.partition_key_value!r} was given, but collection '{schema.name}' has "
            "no partition-key field. Drop partition_key_value, or use a collection with a partition key."
        )


async def _aclose_embeddings(embeddings: Embeddings | None) -> None:
    """Close the OpenAI client's HTTP pool on this loop; left to GC it fails later ("Event loop is closed")."""
    client = getattr(getattr(embeddings, "async_client", None), "_client", None)
    if client is not None:
        with contextlib.suppress(Exception):
            await client.close()


async def _aembeddings(
    config: StoreConfig, settings: MilvusConnectionSettings
) -> tuple[Embeddings | None, list[str], dict[str, Any] | None]:
    """Build the embeddings; return them, their connection's secrets and their identity (what makes the vectors)."""
    from airflow_provider_milvus.embeddings import (
        EmbeddingSettings,
        build_embeddings,
        embedding_identity,
        embedding_secrets,
    )
    from airflow_provider_milvus.version_compat import BaseHook

    chosen = EmbeddingSettings.choose(
        settings,
        conn_id=config.embedding_conn_id,
        model=config.embedding_model,
        dimensions=config.embedding_dimensions,
    )
    if chosen is None:
        return None, [], None
    conn = await BaseHook.aget_connection(chosen.conn_id)
    # Sync: imports langchain_openai on first use and builds two SSL contexts (~0.1 s each).
    embeddings = await asyncio.to_thread(build_embeddings, chosen, conn)
    return embeddings, embedding_secrets(conn), embedding_identity(chosen, conn, embeddings)
