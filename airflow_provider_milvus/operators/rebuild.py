"""
Change the embedding model, chunking, schema or index without downtime: versioned collections behind an alias.

``MilvusRebuildCollectionOperator`` builds ``<alias>_v<N>`` from the corpus, validates it and switches the
alias atomically; ``MilvusRollbackAliasOperator`` points the alias back. Both run the async core
(``core/rebuild.py``) inline or deferred, like the other operators. Guide: docs/rebuild.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.documents import (
    SplitOptions,
    check_ids,
    check_split,
    estimate_chunks,
)
from airflow_provider_milvus.core.jobs import RebuildJob, RollbackJob
from airflow_provider_milvus.core.rebuild import check_rebuild
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import _STORE_FIELDS, BaseMilvusOperator, _BaseWriteOperator, _native

if TYPE_CHECKING:
    from airflow.sdk import Context


class MilvusRebuildCollectionOperator(_BaseWriteOperator):
    """
    Rebuild the collection behind an alias into a new version, validate it, then switch the alias atomically.

    ``collection_name`` is the alias the DAGs search and write (``docs``); the versions behind it are
    ``docs_v1``, ``docs_v2``, ... The new version (highest + 1) is created with this task's embedding model,
    ``chunk_size`` / ``chunk_overlap`` and ``new_collection`` options, filled from ``documents`` or
    ``source_url`` like ``MilvusAddDocumentsOperator`` fills a new collection, and validated: its rows equal
    the corpus's chunks, at least ``min_count``, and each of ``sample_queries`` finds a hit. Only then does
    the alias move (``create_alias`` the first time). Searches see the old version or the new one, never
    a half-built one. A failed or cancelled rebuild leaves the alias where it was and drops the new version.

    With the live version's embedding model (same connection kind, model and dimensions), chunks whose text
    the live version stores already take its vector: a chunking-only change embeds only new texts.

    The first rebuild of a name that is a plain collection (not an alias) is refused with the one-time
    migration steps (docs/rebuild.md). Run one rebuild per alias at a time.

    Takes the parameters of ``MilvusAddDocumentsOperator`` (except ``delete_missing`` and ``force``: a
    version is always built whole) and:

    :param sample_queries: Queries that must each return at least one hit from the new version.
    :param min_count: The new version must hold at least this many rows.
    :param keep_versions: Earlier versions kept for rollback (the one live before, then the newest
        validated ones); older versions and their source ledgers are dropped. 0 drops the previous version
        right after the switch (searches still running on it may fail).
    :param reuse_vectors: Reuse the live version's vectors for unchanged texts when the model is the same.

    ``chunk_size``, ``chunk_overlap``, ``min_count`` and ``keep_versions`` may be templates (a manually
    triggered DAG's params): they are checked when the DAG is parsed if given as numbers, else when the task runs.
    """

    template_fields: Sequence[str] = (
        *_BaseWriteOperator.template_fields,
        "sample_queries",
        "chunk_size",
        "chunk_overlap",
        "min_count",
        "keep_versions",
    )

    def __init__(
        self,
        *,
        chunk_size: int | str | None = None,
        chunk_overlap: int | str = 0,
        sample_queries: list[str] | str | None = None,
        min_count: int | str = 0,
        keep_versions: int | str = 1,
        reuse_vectors: bool = True,
        **kwargs: Any,
    ) -> None:
        if kwargs.get("delete_missing") or kwargs.get("force") or kwargs.get("shard_count") is not None:
            raise ValueError(
                "A rebuild always builds the whole new version: delete_missing, force and shards do not apply."
            )
        super().__init__(**kwargs)
        self.chunk_size: Any = chunk_size
        self.chunk_overlap: Any = chunk_overlap
        self.sample_queries = sample_queries
        self.min_count: Any = min_count
        self.keep_versions: Any = keep_versions
        self.reuse_vectors = reuse_vectors
        if not any(isinstance(v, str) for v in (chunk_size, chunk_overlap, min_count, keep_versions, sample_queries)):
            check_split(chunk_size, chunk_overlap)  # bad parameters fail when the DAG is parsed
            check_rebuild(self._job([]))

    def execute(self, context: Context) -> Any:
        self.chunk_size = _integer(self.chunk_size, "chunk_size") if self.chunk_size not in (None, "") else None
        self.chunk_overlap = _integer(self.chunk_overlap, "chunk_overlap")
        self.min_count = _integer(self.min_count, "min_count")
        self.keep_versions = _integer(self.keep_versions, "keep_versions")
        check_split(self.chunk_size, self.chunk_overlap)
        documents = self._all_documents()
        ids = _native(self.ids)
        split = SplitOptions(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)
        check_ids(documents, ids, split)
        if not documents:
            raise MilvusProviderError(
                f"No documents to rebuild '{self.collection_name}' from: the new version would be empty. Check "
                "the input (an empty listing is more often a broken mount than an empty corpus). Nothing was created."
            )
        job = self._job(documents, ids=ids, split=split)
        check_rebuild(job)
        return self.run(job, items=estimate_chunks(documents, split))

    def _job(
        self, documents: list[dict[str, Any]], *, ids: Any = None, split: SplitOptions | None = None
    ) -> RebuildJob:
        queries = _native(self.sample_queries)
        return RebuildJob(
            store=self.store_config(new_collection=self._new_collection()),
            batch_size=self.batch_size,
            max_concurrency=self.max_concurrency,
            documents=documents,
            ids=ids,
            id_key=self.id_key or None,
            chunk_size=split.chunk_size if split else self.chunk_size,
            chunk_overlap=split.chunk_overlap if split else self.chunk_overlap,
            replace_by=self.replace_by or None,
            track_sources=self.track_sources,
            sample_queries=list(queries) if isinstance(queries, (list, tuple)) else queries or [],
            min_count=self.min_count,
            keep_versions=self.keep_versions,
            reuse_vectors=self.reuse_vectors,
        )


class MilvusRollbackAliasOperator(BaseMilvusOperator):
    """
    Point an alias back at an earlier version kept by ``MilvusRebuildCollectionOperator`` (atomic, like the switch).

    :param collection_name: The alias.
    :param to_version: The version number to point at (``docs_v3`` -> 3); default: the newest validated
        version older than the live one.
    """

    template_fields: Sequence[str] = (*_STORE_FIELDS, "to_version")

    def __init__(self, *, to_version: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.to_version = to_version

    def execute(self, context: Context) -> Any:
        to_version = _native(self.to_version)
        if to_version is not None and (isinstance(to_version, bool) or not str(to_version).isdigit()):
            raise MilvusProviderError(f"to_version must be a version number (3 for '<alias>_v3'), got {to_version!r}.")
        job = RollbackJob(store=self.store_config(), to_version=int(to_version) if to_version is not None else None)
        return self.run(job, items=1)


def _integer(value: Any, name: str) -> int:
    """Read a rendered template's integer ("500" without ``render_template_as_native_obj``)."""
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        raise MilvusProviderError(f"{name} must be a whole number >= 0, got {value!r:.60}.")
    return int(value)
