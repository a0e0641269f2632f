"""Method (c): the operators' async core, called exactly as ``BaseMilvusOperator.run`` calls it.

Jobs are built like the operators' ``execute`` builds them (normalised documents; the core splits and
ids them), and the run is ``asyncio.run(asyncio.wait_for(run_job(op, job.to_dict()), timeout))`` through
real Airflow connections given as ``AIRFLOW_CONN_*`` environment variables. The timed span includes the
whole run (splitting and ids, connection lookup, session open, fan-out, close).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.embedding_service import API_KEY, MODEL
from bench.measure import timed
from bench.workloads import SEARCH_K, seed_document

if TYPE_CHECKING:
    from langchain_core.documents import Document

MILVUS_CONN_ID = "bench_milvus"
EMBEDDING_CONN_ID = "bench_embeddings"
RUN_TIMEOUT_S = 7200.0  # the operators' default timeout (2 h)


@dataclass(frozen=True)
class Tuning:
    """The operator arguments a user tunes (defaults: the operators' own)."""

    write_batch_size: int = 100
    write_max_concurrency: int = 8
    search_batch_size: int = 16
    search_max_concurrency: int = 8
    delete_max_concurrency: int = 8

    def describe(self) -> str:
        return (
            f"write batch_size={self.write_batch_size} max_concurrency={self.write_max_concurrency}; "
            f"search batch_size={self.search_batch_size} max_concurrency={self.search_max_concurrency}; "
            f"delete max_concurrency={self.delete_max_concurrency}"
        )


def configure_connections(milvus_uri: str, embedding_url: str) -> None:
    """The Airflow connections a deployment would define, as environment variables."""
    os.environ[f"AIRFLOW_CONN_{MILVUS_CONN_ID.upper()}"] = json.dumps({"conn_type": "milvus", "host": milvus_uri})
    os.environ[f"AIRFLOW_CONN_{EMBEDDING_CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "openai",
            "host": embedding_url,
            "password": API_KEY,
            "extra": {"model": MODEL},
        }
    )


def _store(collection: str) -> Any:
    from airflow_provider_milvus.core.operations import StoreConfig

    return StoreConfig(milvus_conn_id=MILVUS_CONN_ID, collection_name=collection, embedding_conn_id=EMBEDDING_CONN_ID)


def _run(job: Any) -> Any:
    from airflow_provider_milvus.core.operations import run_job

    return asyncio.run(asyncio.wait_for(run_job(job.operation, job.to_dict()), RUN_TIMEOUT_S))


def _write_job(collection: str, docs: list[Document], tuning: Tuning) -> Any:
    from airflow_provider_milvus.core.documents import normalize_documents
    from airflow_provider_milvus.core.operations import WriteJob

    return WriteJob(
        store=_store(collection),
        batch_size=tuning.write_batch_size,
        max_concurrency=tuning.write_max_concurrency,
        documents=normalize_documents(docs),
        id_key="id",
    )


def prepare(collection: str, docs: list[Document] = ()) -> None:
    """Create the collection (first use, as the add operator does) with a seed document + ``docs``, untimed."""
    _run(_write_job(collection, [seed_document(), *docs], Tuning(write_batch_size=1000)))


def add(collection: str, docs: list[Document], tuning: Tuning, *, expect_written: int | None = None) -> float:
    with timed() as timer:
        result = _run(_write_job(collection, docs, tuning))
    expected = len(docs) if expect_written is None else expect_written
    assert result["written"] == expected, result
    return timer.seconds


def search(
    collection: str,
    queries: list[str] | list[list[float]],
    tuning: Tuning,
    *,
    consistency_level: str | None = None,
) -> float:
    """One ``MilvusSearchToXComOperator`` (k=3) of text queries, or of query vectors (no embedding call)."""
    from airflow_provider_milvus.core.operations import SearchJob

    with timed() as timer:
        job = SearchJob(
            store=_store(collection),
            batch_size=tuning.search_batch_size,
            max_concurrency=tuning.search_max_concurrency,
            queries=list(queries),
            k=SEARCH_K,
            search_type="similarity",
            consistency_level=consistency_level,
        )
        hits = _run(job)
    assert len(hits) == len(queries), "missing search results"
    assert all(hits), "empty search results"
    return timer.seconds


def delete(collection: str, ids: list[str], tuning: Tuning) -> float:
    """One ``MilvusDeleteByExprOperator(expr="id in {ids}", expr_params={"ids": [...]})``."""
    from airflow_provider_milvus.core.operations import DeleteJob

    with timed() as timer:
        job = DeleteJob(
            store=_store(collection),
            max_concurrency=tuning.delete_max_concurrency,
            expr="id in {ids}",
            expr_params={"ids": list(ids)},
        )
        result = _run(job)
    assert result["deleted"] == len(ids), result
    return timer.seconds
