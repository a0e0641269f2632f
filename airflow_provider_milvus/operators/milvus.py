"""
Deferrable operators that add, upsert, delete and search Milvus with bounded async fan-out.

Every operator builds a plain-data job and runs the same async core either in the worker
(``asyncio.run``) or, deferred, in the triggerer (``MilvusOperationTrigger``).
"""

from __future__ import annotations

import ast
import functools
import json
import warnings
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.checks import check_job
from airflow_provider_milvus.core.collection import NewCollection
from airflow_provider_milvus.core.delete import check_given_ids
from airflow_provider_milvus.core.documents import (
    SplitOptions,
    check_ids,
    check_split,
    estimate_chunks,
    normalize_documents,
)
from airflow_provider_milvus.core.files import check_encoding, list_sources, read_documents
from airflow_provider_milvus.core.inline import run_in_worker, run_inline
from airflow_provider_milvus.core.listing import (
    CHANGE_DETECTION,
    LedgerListing,
    in_shard,
    list_with_ledger,
    unread_documents,
)
from airflow_provider_milvus.core.operations import (
    DeleteJob,
    Job,
    SearchJob,
    StoreConfig,
    WriteJob,
)
from airflow_provider_milvus.core.queries import normalize_queries, top_k_problem
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.lineage import operator_lineage_for
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger
from airflow_provider_milvus.version_compat import BaseOperator

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from airflow.sdk import Context

DEFAULT_TIMEOUT = timedelta(hours=2)
# Jobs this small finish in well under a second: running them inline avoids the 3.3 scheduler race
# that can fail a task whose trigger fires within seconds of deferring (apache/airflow #72716).
DEFAULT_INLINE_MAX_ITEMS = 100
# Inline job payloads above this go to the staging location instead of the trigger row.
MAX_INLINE_KWARGS_BYTES = 16 * 1024

_STORE_FIELDS = (
    "milvus_conn_id",
    "collection_name",
    "embedding_conn_id",
    "embedding_model",
    "staging_url",
    "text_field",
    "vector_field",
    "partition_key_value",
)


class BaseMilvusOperator(BaseOperator):
    """
    Shared settings of the Milvus operators.

    :param milvus_conn_id: Milvus connection (type ``milvus``).
    :param collection_name: Collection to work on.
    :param embedding_conn_id: OpenAI-compatible connection (type ``openai``) for dense embeddings;
        none (and none on the Milvus connection) means Milvus's built-in BM25 full-text search.
    :param embedding_model: Embedding model name; defaults to the Milvus connection's.
    :param embedding_dimensions: Output size for models that support it.
    :param text_field: The VARCHAR field holding the text, when the collection has several candidates.
    :param vector_field: The dense vector field to use, when the collection has several.
    :param partition_key_value: Scope the task to one tenant of a partition-key collection: writes set
        the field, searches, deletes and counts filter on it.
    :param batch_size: Items per Milvus request (and per embedding request) of writes and searches.
    :param max_concurrency: At most this many batches in flight at once.
    :param deferrable: Run in the triggerer instead of occupying a worker slot.
    :param timeout: Deferral timeout (always set: Airflow 3.3 does not enforce ``execution_timeout``
        while deferred); also bounds the inline run.
    :param inline_max_items: A deferrable job with at most this many items runs inline instead; 0 always defers.
    :param staging_url: Where bulk inputs and large results are staged for the triggerer (local dir or
        object storage URL); defaults to ``[milvus] staging_url`` or a temp dir.
    """

    template_fields: Sequence[str] = _STORE_FIELDS
    ui_color = "#e6f2ff"
    reads_collection = False  # lineage: searches read the collection, other operators change it

    def __init__(
        self,
        *,
        milvus_conn_id: str = MilvusHook.default_conn_name,
        collection_name: str,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
        text_field: str | None = None,
        vector_field: str | None = None,
        partition_key_value: str | None = None,
        batch_size: int = 100,
        max_concurrency: int = 8,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        timeout: timedelta | float = DEFAULT_TIMEOUT,
        inline_max_items: int = DEFAULT_INLINE_MAX_ITEMS,
        staging_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if batch_size < 1 or max_concurrency < 1:
            raise ValueError("batch_size and max_concurrency must be at least 1")
        self.milvus_conn_id = milvus_conn_id
        self.collection_name = collection_name
        self.embedding_conn_id = embedding_conn_id
        self.embedding_model = embedding_model
        self.embedding_dimensions = embedding_dimensions
        self.text_field = text_field
        self.vector_field = vector_field
        self.partition_key_value = partition_key_value
        self.batch_size = batch_size
        self.max_concurrency = max_concurrency
        self.deferrable = deferrable
        self.timeout = timeout if isinstance(timeout, timedelta) else timedelta(seconds=timeout)
        self.inline_max_items = inline_max_items
        self.staging_url = staging_url

    def store_config(self, **overrides: Any) -> StoreConfig:
        return StoreConfig(
            milvus_conn_id=self.milvus_conn_id,
            collection_name=self.collection_name,
            embedding_conn_id=self.embedding_conn_id,
            embedding_model=self.embedding_model,
            embedding_dimensions=self.embedding_dimensions,
            text_field=self.text_field or None,
            vector_field=self.vector_field or None,
            partition_key_value=self.partition_key_value,  # "" is refused (check_job), never "no tenant"
            **overrides,
        )

    def run(self, job: Job, *, items: int | None) -> Any:
        """Defer ``job`` to the triggerer, or run the same core here when not deferrable or tiny."""
        check_job(job)  # names and tenant: refused here, before deferring or connecting
        if self.deferrable and (items is None or items > self.inline_max_items):
            staging_url = self.staging_url or staging.default_staging_url()
            staging.check_staging(staging_url)  # a bad location fails here, not later in the triggerer
            job, staged = self._externalize(job, staging_url)
            size = "" if items is None else f" of {items} items"
            self.log.info("Deferring %s%s to the triggerer (timeout %s)", job.operation, size, self.timeout)
            self.defer(
                trigger=MilvusOperationTrigger(operation=job.operation, job=job.to_dict(), staging_url=staging_url),
                method_name="execute_complete",
                timeout=self.timeout,
                kwargs={"staged": staged},
            )
        result = run_inline(job, timeout=self.timeout)
        return self.finish(result)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, staged: list[str] | None = None
    ) -> Any:
        """Resume after the trigger: raise its error, or return its (possibly staged) result."""
        for reference in staged or []:
            staging.remove(reference)
        if not event or event.get("status") not in ("success", "error"):
            raise MilvusProviderError(f"Unexpected trigger event: {event!r}")
        if event["status"] == "error":
            raise MilvusProviderError(event.get("message", "the trigger reported an error"))
        if "result_ref" in event:
            result = staging.load_json(event["result_ref"])
            staging.remove(event["result_ref"])
        else:
            result = event.get("result")
        return self.finish(result)

    def finish(self, result: Any) -> Any:
        self.log.info("Milvus result: %s", _short(result))
        return result

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage (apache-airflow-providers-openlineage): the collection as input (search) or output."""
        return operator_lineage_for(self, is_input=self.reads_collection)

    def _externalize(self, job: Job, staging_url: str) -> tuple[Job, list[str]]:
        """Move bulk fields out of the trigger kwargs (plaintext DB rows) into the staging location."""
        for inline_name, ref_name in (("documents", "documents_ref"), ("queries", "queries_ref")):
            payload = getattr(job, inline_name, None)
            if payload is not None and len(json.dumps(payload)) > MAX_INLINE_KWARGS_BYTES:
                reference = staging.stage_json(
                    payload, staging_url=staging_url, name_hint=f"{self.task_id}-{inline_name}"
                )
                data = job.to_dict() | {inline_name: None, ref_name: reference}
                return type(job).from_dict(data), [reference]
        return job, []


class _BaseWriteOperator(BaseMilvusOperator):
    """Split, id and write documents; re-running the same input writes the same primary keys."""

    template_fields: Sequence[str] = (
        *_STORE_FIELDS,
        "documents",
        "source_url",
        "source_glob",
        "ids",
        "id_key",
        "replace_by",
        "new_collection",
    )

    def __init__(
        self,
        *,
        documents: Any = None,
        source_url: str | None = None,
        source_glob: str | list[str] = "**/*",
        source_conn_id: str | None = None,
        source_encoding: str = "utf-8",
        change_detection: str = "listing",
        shard_index: int | None = None,
        shard_count: int | None = None,
        ids: list[str | int] | None = None,
        id_key: str | None = None,
        chunk_size: int | None = None,
        chunk_overlap: int = 0,
        replace_by: str | None = None,
        delete_missing: bool = False,
        force: bool = False,
        track_sources: bool = True,
        new_collection: NewCollection | dict[str, Any] | None = None,
        full_text_search: bool | None = None,
        text_max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_split(chunk_size, chunk_overlap)  # refused when the DAG is parsed, not when the task runs
        self.documents = documents
        self.source_url = source_url
        self.source_glob = source_glob
        self.source_conn_id = source_conn_id
        self.source_encoding = check_encoding(source_encoding)
        if change_detection not in CHANGE_DETECTION:
            raise ValueError(f"change_detection={change_detection!r}: use 'listing' (the default) or 'content'.")
        self.change_detection = change_detection
        self.shard_index, self.shard_count = _check_shard(shard_index, shard_count, source_url, delete_missing)
        self.ids = ids
        self.id_key = id_key
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.replace_by = replace_by
        self.delete_missing = delete_missing
        self.force = force
        self.track_sources = track_sources
        self.new_collection = new_collection.to_dict() if isinstance(new_collection, NewCollection) else new_collection
        self.full_text_search = full_text_search
        self.text_max_length = text_max_length

    def execute(self, context: Context) -> Any:
        # Checked here, so bad input fails in the worker; the core splits (after skipping unchanged sources).
        ids = _native(self.ids)
        if self.source_url:
            documents, unread = self._read_source(ids)
        else:
            documents, unread = normalize_documents(_native(self.documents)), []
        split = SplitOptions(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
        check_ids(documents, ids, split)
        if not documents and not unread:
            if self.delete_missing:
                raise MilvusProviderError(
                    "No documents, and delete_missing=True would delete every source of "
                    f"'{self.collection_name}'. Refusing: check the input (an empty listing is more often a "
                    "broken mount than an empty corpus)."
                )
            self.log.info("No documents given: nothing to write to '%s'", self.collection_name)
            return {
                "operation": WriteJob.operation,
                "collection": self.collection_name,
                "documents": 0,
                "chunks": 0,
                "written": 0,
                "unchanged": 0,
                "embedded": 0,
            }
        job = WriteJob(
            store=self.store_config(new_collection=self._new_collection()),
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            documents=documents + unread,
            ids=ids,
            id_key=self.id_key or None,
            chunk_size=split.chunk_size,
            chunk_overlap=split.chunk_overlap,
            replace_by=self.replace_by or None,
            delete_missing=self.delete_missing,
            force=self.force,
            track_sources=self.track_sources,
            source_conn_id=self.source_conn_id or None,
            source_encoding=self.source_encoding,
        )
        return self.run(job, items=estimate_chunks(documents, split) + len(unread))

    def _all_documents(self) -> list[dict[str, Any]]:
        """Every document of the input, each file of ``source_url`` read (for a rebuild, which skips nothing)."""
        if not self.source_url:
            return normalize_documents(_native(self.documents))
        if _native(self.documents):
            raise MilvusProviderError("Pass documents or source_url, not both.")
        listed = list_sources(self.source_url, glob=_native(self.source_glob), conn_id=self.source_conn_id or None)
        return normalize_documents(read_documents(listed, encoding=self.source_encoding))

    def _read_source(self, ids: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """
        List ``source_url`` (this shard of it), read the files the listing cannot vouch for, and name the rest.

        Returns the documents read (each with its listing metadata, recorded in the source ledger) and
        the unread ones (``core/listing.py``). Listing decides only with the source ledger on
        (``replace_by="source"``, ``track_sources``), without ``force`` or ``ids``, and
        ``change_detection="listing"``; otherwise every file is read, as ``change_detection="content"`` does.
        """
        if _native(self.documents):
            raise MilvusProviderError("Pass documents or source_url, not both.")
        list_files = functools.partial(
            list_sources, self.source_url or "", glob=_native(self.source_glob), conn_id=self.source_conn_id or None
        )
        by_listing = self.change_detection == "listing" and self.replace_by == "source" and self.track_sources
        known: LedgerListing | None = None
        if by_listing and not self.force and ids is None:
            listed, known = run_in_worker(
                list_with_ledger(
                    list_files,
                    self.store_config(),
                    key="source",
                    chunk_size=self.chunk_size,
                    chunk_overlap=self.chunk_overlap,
                    id_key=self.id_key or None,
                )
            )
        else:
            listed = list_files()
        if self.shard_count:
            listed = in_shard(listed, self.shard_index or 0, self.shard_count)
            self.log.info("Shard %d of %d: %d files", self.shard_index, self.shard_count, len(listed))
        unread = known.unchanged(listed) if known is not None else {}
        to_read = [item for item in listed if item.source not in unread]
        documents = normalize_documents(read_documents(to_read, encoding=self.source_encoding))
        if by_listing:
            listings = {item.source: item.listing for item in to_read}
            for document in documents:
                if listings.get(document["metadata"]["source"]):
                    document["listing"] = listings[document["metadata"]["source"]]
        self.log.info("%d files listed: %d read, %d unchanged by their listing", len(listed), len(to_read), len(unread))
        return documents, unread_documents(listed, unread)

    def _new_collection(self) -> dict[str, Any]:
        options = NewCollection.from_value(_native(self.new_collection)).to_dict()
        if self.full_text_search is not None:
            options["full_text_search"] = self.full_text_search
        if self.text_max_length is not None:
            options["text_max_length"] = self.text_max_length
        return options


class MilvusAddDocumentsOperator(_BaseWriteOperator):
    """
    Add documents to a collection (created on first use), embedding only what is new or changed.

    Ids never depend on the input's order: they come from ``ids``, ``metadata[id_key]``, or a hash of
    source + text. Chunks stored already with the same content are skipped (nothing embedded), so
    a nightly re-run of an unchanged corpus writes nothing. Writes are Milvus upserts: re-running
    never duplicates.

    :param documents: Strings or ``{"page_content"|"text", "metadata"[, "vector"]}`` dicts (or an XCom of
        them). A ``vector`` is written as it is, without calling the embedding API.
    :param source_url: Instead of ``documents``: a file or folder (local path, ``file://``, ``s3://``, ...)
        read in the worker, one document per file with ``source`` = its path relative to the folder.
    :param source_glob: Files of the folder to read, e.g. ``**/*.md`` or ``["**/*.md", "**/*.txt"]``.
    :param source_conn_id: Airflow connection for ``source_url``'s object storage.
    :param change_detection: How ``source_url`` files are found unchanged. ``"listing"`` (default): a file
        whose listing metadata (object storage: ETag or version id and size; local: size and modification
        time in ns) is what the source ledger recorded, under the same split and embedding options, and whose
        rows verify, is not read at all (with ``replace_by="source"``). ``"content"``: every file is read and
        hashed, for filesystems whose modification times cannot be trusted.
    :param shard_index: With ``shard_count``: write only this shard (0 to ``shard_count - 1``) of
        ``source_url``'s files, split by a hash of each source; map it over the shards
        (``.expand(shard_index=...)``). A shard refuses ``delete_missing``: see docs/sharding.md.
    :param shard_count: How many disjoint shards the listing is split into.
    :param source_encoding: The text encoding of the files under ``source_url`` (default ``utf-8``; e.g.
        ``cp1252`` or ``latin-1`` for legacy corpora). A file that does not decode fails the task, naming it.
    :param ids: One id per document (no splitting).
    :param id_key: Metadata key holding each document's id (``<id>#<chunk>`` when splitting).
    :param chunk_size: Split documents with a recursive character splitter into chunks this long (1 or
        more); unset (None) keeps each document whole.
    :param chunk_overlap: Characters shared by neighbouring chunks.
    :param replace_by: Metadata key (e.g. ``source``): older chunks with the same value that this input no
        longer has are deleted, so a changed file leaves no stale chunks. Required for auto-id collections.
    :param delete_missing: With ``replace_by``: also delete every entity whose value is absent from this
        input (the input is the whole corpus, e.g. files deleted since the last run).
    :param force: Rewrite (and re-embed) every chunk, even unchanged ones.
    :param track_sources: With ``replace_by``: keep one row per source (its digest and chunk count) in the
        companion collection ``<collection_name>__sources``, so a re-run skips unchanged sources without
        splitting them or reading their chunks back. Off: every chunk is compared with what is stored.
    :param new_collection: How to create the collection if it does not exist (``NewCollection`` or a dict:
        metric_type, index_type, index_params, partition_key_field, scalar_fields, dynamic_field, ...;
        ``embedding_function`` makes Milvus embed server-side: docs/server-side-embedding.md).
    :param full_text_search: Shortcut for ``new_collection["full_text_search"]``.
    :param text_max_length: Shortcut for ``new_collection["text_max_length"]``.
    """


class MilvusUpsertOperator(_BaseWriteOperator):
    """
    Upsert records by their own ids: existing entities are replaced (text and metadata), missing ones inserted.

    Takes the same parameters as ``MilvusAddDocumentsOperator`` and requires ``ids`` or ``id_key``
    (or ``replace_by`` on an auto-id collection).
    """

    def execute(self, context: Context) -> Any:
        if not self.ids and not self.id_key and not self.replace_by:
            raise MilvusProviderError(
                "MilvusUpsertOperator needs ids or id_key (upserts replace records by their id), or replace_by "
                "on a collection with auto_id."
            )
        return super().execute(context)


class MilvusDeleteByExprOperator(BaseMilvusOperator):
    """
    Delete the entities a Milvus boolean filter matches, or the ones with the given primary keys.

    ``ids`` is LangChain's ``delete(ids=...)``: the ids are resolved against the collection's own
    primary key field and type (INT64 or VARCHAR), so nobody quotes ``doc_id in [...]`` by hand. Ids
    that do not exist (or belong to another tenant) are counted as ``not_found`` and listed in
    ``missing_ids`` (the first 1,000), never counted as deleted.

    A deferrable delete by filter always defers: its size is unknown until Milvus counts the matches.
    A delete by ids runs inline when it has at most ``inline_max_items`` ids.

    :param expr: Filter expression, e.g. ``source in {sources}``; ``{name}`` placeholders take ``expr_params``.
    :param expr_params: Values for the placeholders, encoded as literals so data cannot change the expression.
    :param ids: Instead of ``expr``: primary keys to delete (a list or an XCom of one). Integers or integer
        strings for an INT64 key, strings (or integers, as their decimal string) for a VARCHAR key;
        repeated ids count once. An empty list deletes nothing.
    :param allow_delete_all: Allow an empty filter, or a filter or ids that match every entity.
    :param dry_run: Only count what would be deleted (and, with ``ids``, which are not found).

    A delete is one request and takes no ``batch_size`` (deprecated here, ignored with a warning): ids
    are looked up 1,000 per query, at most ``max_concurrency`` queries at a time.
    """

    template_fields: Sequence[str] = (*_STORE_FIELDS, "expr", "expr_params", "ids")

    def __init__(
        self,
        *,
        expr: str | None = None,
        expr_params: dict[str, Any] | None = None,
        ids: Sequence[str | int] | str | None = None,
        allow_delete_all: bool = False,
        dry_run: bool = False,
        **kwargs: Any,
    ) -> None:
        if kwargs.pop("batch_size", None) is not None:
            warnings.warn(
                "MilvusDeleteByExprOperator ignores batch_size (a delete is one request); drop the argument.",
                AirflowProviderDeprecationWarning,
                stacklevel=2,
            )
        super().__init__(**kwargs)
        if ids is not None and (expr or expr_params):
            raise ValueError("Pass expr (a filter, with expr_params) or ids, not both.")
        if ids is None and expr is None:
            raise ValueError(
                "Pass expr (a filter) or ids (primary keys) to delete; expr='' with allow_delete_all=True empties "
                "the collection."
            )
        self.expr = expr
        self.expr_params = expr_params
        self.ids = ids
        self.allow_delete_all = allow_delete_all
        self.dry_run_only = dry_run  # BaseOperator.dry_run is a method

    def execute(self, context: Context) -> Any:
        ids = None if self.ids is None else check_given_ids(_native(self.ids))  # a bad XCom fails in the worker
        params = _native(self.expr_params) or {}
        if not isinstance(params, dict):
            raise MilvusProviderError(f"expr_params must be a dict, got {type(params).__name__}.")
        job = DeleteJob(
            store=self.store_config(),
            max_concurrency=self.max_concurrency,
            expr=self.expr or "",
            expr_params=params,
            ids=ids,
            allow_delete_all=self.allow_delete_all,
            dry_run=self.dry_run_only,
        )
        return self.run(job, items=None if ids is None else len(ids))

    def _externalize(self, job: Job, staging_url: str) -> tuple[Job, list[str]]:
        """Many ids go to the staging location, not the trigger row, like documents and queries."""
        ids = getattr(job, "ids", None)
        if ids is None or len(json.dumps(ids)) <= MAX_INLINE_KWARGS_BYTES:
            return job, []
        reference = staging.stage_json(ids, staging_url=staging_url, name_hint=f"{self.task_id}-ids")
        return DeleteJob.from_dict(job.to_dict() | {"ids": None, "ids_ref": reference}), [reference]


class MilvusSearchToXComOperator(BaseMilvusOperator):
    """
    Search one query or many, by text or by vector, and return JSON hits for downstream tasks.

    ``batch_size`` queries (default 16) go to Milvus in one request (and to the embedding API in one),
    at most ``max_concurrency`` requests at a time. Returns ``[{"id", "page_content", "metadata",
    "score"}, ...]`` for a single query (a string or one vector) and a list of such lists for a list
    of queries. ``score`` is None unless ``search_type="similarity_score"``; higher always means more
    relevant (L2 distances become ``1 / (1 + d)``).

    Query vectors computed upstream (another model, common-ai's ``LlamaIndexEmbeddingOperator``, a
    stored record's vector) are searched as they are, for every ``search_type``, batched like text
    and without any embedding call: the langchain-milvus ``*_by_vector`` searches. They search the
    collection's dense field (``vector_field`` when there are several), also on a hybrid collection,
    whose BM25 field needs text; a BM25-only collection refuses them. Their size is checked against
    the dense field before any search request.

    :param queries: A query string, a query vector (a list of numbers), a ``{"vector": [...]}`` item,
        or a list of any one of these kinds (or an XCom of them, e.g. ``embed.output["chunks"]``).
        Text and vectors cannot be mixed in one task.
    :param k: Hits per query (1 to 16384, checked when the task is built).
    :param search_type: ``similarity``, ``similarity_score`` or ``mmr`` (needs dense embeddings).
    :param expr: Optional filter, with ``{name}`` placeholders filled from ``expr_params``.
    :param fetch_k: Candidates fetched for MMR, and by each of a hybrid search's dense and BM25 sub-searches.
    :param lambda_mult: MMR diversity (0 = most diverse, 1 = most relevant).
    :param output_fields: Fields returned in each hit's metadata (default: every scalar field and the
        dynamic field; never vectors).
    :param search_params: Index search parameters, e.g. ``{"ef": 64}`` (HNSW) or ``{"nprobe": 16}`` (IVF).
    :param consistency_level: ``Strong``, ``Bounded``, ``Session`` or ``Eventually`` for these searches;
        default: the collection's own (Strong for collections this provider creates, so a search sees the
        ingest that finished upstream). On a real Milvus, Strong waits for the server's timestamp (about
        0.4 s per request on 2.3.5): ``Bounded`` suits searches that do not follow a write.
    """

    reads_collection = True
    template_fields: Sequence[str] = (
        *_STORE_FIELDS,
        "queries",
        "expr",
        "expr_params",
        "search_type",
        "output_fields",
        "search_params",
        "consistency_level",
    )

    def __init__(
        self,
        *,
        queries: str | Sequence[Any] | dict[str, Any],
        k: int = 4,
        search_type: str = "similarity_score",
        expr: str | None = None,
        expr_params: dict[str, Any] | None = None,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        output_fields: list[str] | None = None,
        search_params: dict[str, Any] | None = None,
        consistency_level: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("batch_size", SearchJob.batch_size)
        super().__init__(**kwargs)
        # Here, not at run time: k=0 would fail in Milvus only after connecting ("limit value 0 is illegal").
        problem = top_k_problem(k) or top_k_problem(fetch_k, "fetch_k")
        if problem:
            raise ValueError(problem)
        self.queries = queries
        self.k = k
        self.search_type = search_type
        self.expr = expr
        self.expr_params = expr_params
        self.fetch_k = fetch_k
        self.lambda_mult = lambda_mult
        self.output_fields = output_fields
        self.search_params = search_params
        self.consistency_level = consistency_level

    def execute(self, context: Context) -> Any:
        # Checked in the worker, before any request: non-numeric vectors, empty queries, text mixed with vectors.
        queries = normalize_queries(_native(self.queries))
        job = SearchJob(
            store=self.store_config(),
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            queries=queries.items,
            k=self.k,
            search_type=self.search_type,
            expr=self.expr or None,
            expr_params=_native(self.expr_params) or {},
            fetch_k=self.fetch_k,
            lambda_mult=self.lambda_mult,
            output_fields=_native(self.output_fields),
            search_params=_native(self.search_params),
            consistency_level=self.consistency_level or None,
        )
        return self.run(job, items=len(queries.items))

    def finish(self, result: Any) -> Any:
        hits = super().finish(result)
        return hits[0] if hits and normalize_queries(_native(self.queries)).single else hits


def _check_shard(
    index: int | None, count: int | None, source_url: str | None, delete_missing: bool
) -> tuple[int | None, int | None]:
    """Check a shard: ``shard_index`` of ``shard_count`` shards of ``source_url``'s listing, never deleting missing sources."""
    if index is None and count is None:
        return None, None
    if (
        not isinstance(index, int)
        or not isinstance(count, int)
        or isinstance(index, bool)
        or count < 1
        or not 0 <= index < count
    ):
        raise ValueError(
            f"shard_index={index!r}, shard_count={count!r}: give both, with 0 <= shard_index < shard_count."
        )
    if not source_url:
        raise ValueError("shard_index and shard_count split source_url's listing: pass source_url.")
    if delete_missing:
        raise ValueError(
            "delete_missing=True on a shard would delete the sources of every other shard. Shards only write; "
            "remove vanished sources once, after all shards, with one unsharded run over the same source_url "
            "and delete_missing=True (it reads no unchanged file): see docs/sharding.md."
        )
    return index, count


def _native(value: Any) -> Any:
    """Accept Jinja-rendered strings of lists/dicts (``"{{ ti.xcom_pull(...) }}"``) as the objects."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        for parse in (json.loads, ast.literal_eval):
            try:
                return parse(value)
            except (ValueError, SyntaxError):
                continue
    return value


def _short(result: Any, limit: int = 500) -> str:
    text = json.dumps(result, default=str)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
