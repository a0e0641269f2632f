"""Jobs: what an operator asks the async core to do, as plain data that travels in trigger kwargs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

SEARCH_TYPES = ("similarity", "similarity_score", "mmr")
CONSISTENCY_LEVELS = ("Strong", "Bounded", "Session", "Eventually")


@dataclass(frozen=True)
class StoreConfig:
    """Which collection, reached how, embedded how, scoped to which tenant."""

    milvus_conn_id: str = "milvus_default"
    collection_name: str = ""
    embedding_conn_id: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None
    text_field: str | None = None
    vector_field: str | None = None
    partition_key_value: str | None = None
    new_collection: dict[str, Any] | None = None


@dataclass(frozen=True)
class Job:
    """Base of all jobs: plain data that round-trips through trigger kwargs."""

    operation: ClassVar[str]
    store: StoreConfig
    max_concurrency: int = 8  # requests in flight at once

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies every chunk (~10% of a 10k ingest).
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["store"] = dataclasses.asdict(self.store)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        values = dict(data)
        values["store"] = StoreConfig(**values["store"])
        return cls(**values)


@dataclass(frozen=True)
class WriteJob(Job):
    """
    Split, id and write documents ``[{"page_content", "metadata"[, "vector"]}]`` given inline or staged.

    Splitting runs in the core, after the source ledger has named the sources it can skip, so an
    unchanged source is never split. Chunks already stored with the same content are skipped unless
    ``force``; ``replace_by`` removes a source's chunks that were not written now; ``delete_missing``
    also removes sources absent from this input (a full sync of a corpus); ``track_sources`` keeps the
    per-source ledger that lets unchanged sources be skipped whole.
    """

    operation: ClassVar[str] = "write"
    batch_size: int = 100  # chunks per Milvus request (and per embedding request)
    documents: list[dict[str, Any]] | None = None
    documents_ref: str | None = None
    ids: list[str | int] | None = None
    id_key: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int = 0
    replace_by: str | None = None
    delete_missing: bool = False
    force: bool = False
    track_sources: bool = True
    # Where documents passed unread (source_url files whose listing is unchanged) are read, should their
    # source ledger entry fail the core's verification.
    source_conn_id: str | None = None
    source_encoding: str = "utf-8"


@dataclass(frozen=True)
class DeleteJob(Job):
    """
    Delete what ``expr`` (with ``expr_params``) matches, or the rows whose primary keys are ``ids``.

    ``ids`` may be staged (``ids_ref``); either way the delete is guarded against emptying the collection.
    A delete is one request (ids are looked up 1,000 per query): it has no batch size.
    """

    operation: ClassVar[str] = "delete"
    expr: str = ""
    expr_params: dict[str, Any] = field(default_factory=dict)
    ids: list[str | int] | None = None
    ids_ref: str | None = None
    allow_delete_all: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class SearchJob(Job):
    """Search ``queries`` (or a staged list), ``batch_size`` per Milvus request: texts, or vectors searched as they are."""

    operation: ClassVar[str] = "search"
    batch_size: int = 16  # queries per Milvus request (and per embedding request)
    queries: list[str] | list[list[float]] | None = None
    queries_ref: str | None = None
    k: int = 4
    search_type: str = "similarity_score"
    expr: str | None = None
    expr_params: dict[str, Any] = field(default_factory=dict)
    fetch_k: int = 20
    lambda_mult: float = 0.5
    output_fields: list[str] | None = None
    search_params: dict[str, Any] | None = None
    consistency_level: str | None = None  # None: the collection's own (Strong for collections made here)


@dataclass(frozen=True)
class RebuildJob(Job):
    """
    Rebuild the collection an alias (``store.collection_name``) names into ``<alias>_v<N>``, then switch the alias.

    The new version is filled from ``documents`` as a ``WriteJob`` would fill a new collection (same
    splitting, ids, ``replace_by`` and source ledger, ``store.new_collection`` options), validated
    (row count equals the chunks written, at least ``min_count`` rows, each of ``sample_queries`` finds a
    hit), and only then made live. ``keep_versions`` earlier versions stay for rollback; older ones are
    dropped. ``reuse_vectors``: with the live version's embedding model, texts it stores already take
    its vectors instead of the embedding API's.
    """

    operation: ClassVar[str] = "rebuild"
    batch_size: int = 100  # chunks per Milvus request (and per embedding request)
    documents: list[dict[str, Any]] | None = None
    documents_ref: str | None = None
    ids: list[str | int] | None = None
    id_key: str | None = None
    chunk_size: int | None = None
    chunk_overlap: int = 0
    replace_by: str | None = None
    track_sources: bool = True
    sample_queries: list[str] = field(default_factory=list)
    min_count: int = 0
    keep_versions: int = 1
    reuse_vectors: bool = True


@dataclass(frozen=True)
class RollbackJob(Job):
    """Point the alias ``store.collection_name`` back at an earlier validated version (``to_version``, or the latest)."""

    operation: ClassVar[str] = "rollback"
    to_version: int | None = None
