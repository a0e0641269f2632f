"""Load: 100k-chunk ingest and 1,000 concurrent searches stay under the concurrency bound with flat memory.

Slow: ``pytest tests/faults -m slow``.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusSearchToXComOperator,
)

from tests.faults.conftest import assert_exact_ids, documents

MiB = 1024 * 1024


def _measure_rss(fn: Callable[[], Any]) -> tuple[Any, int, int]:
    """Run ``fn``; return (result, peak RSS growth, RSS growth at the end) in bytes, sampled every 20 ms."""
    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        result = fn()
    finally:
        done.set()
        sampler.join()
    gc.collect()
    end = process.memory_info().rss
    return result, max(peak, end) - baseline, end - baseline


@pytest.mark.slow
def test_100k_chunk_ingest_stays_under_concurrency_bound_with_flat_memory(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    n, max_concurrency = 100_000, 4
    docs = documents(n, prefix="load")
    embeddings.latency = 0.01  # requests overlap, so the bound is really exercised

    def ingest() -> dict:
        return MilvusAddDocumentsOperator(
            task_id="ingest",
            milvus_conn_id=shared_conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            documents=docs,
            id_key="doc_id",
            batch_size=500,
            max_concurrency=max_concurrency,
        ).execute(context={})

    started = time.monotonic()
    result, peak_growth, end_growth = _measure_rss(ingest)
    elapsed = time.monotonic() - started
    peak_in_flight = embeddings.stats.peak_in_flight
    assert result["written"] == n
    assert 1 < peak_in_flight <= max_concurrency, peak_in_flight

    # The same ingest again (the idempotent re-run): memory must not keep growing run over run.
    _, rerun_peak, rerun_end = _measure_rss(ingest)
    figures.measure(
        "load: 100k-chunk ingest",
        f"{elapsed:.0f} s, peak in flight {peak_in_flight}/{max_concurrency}, RSS peak +{peak_growth / MiB:.0f} MiB "
        f"(end +{end_growth / MiB:.0f} MiB); re-run peak +{rerun_peak / MiB:.0f} MiB, end +{rerun_end / MiB:.0f} MiB",
    )
    assert peak_growth < 1024 * MiB, f"ingest grew RSS by {peak_growth / MiB:.0f} MiB"
    assert rerun_end < 100 * MiB, f"a second identical ingest kept {rerun_end / MiB:.0f} MiB"
    assert_exact_ids(milvus_lite.uri, collection_name, {d["metadata"]["doc_id"] for d in docs}, figures)


@pytest.mark.slow
def test_1000_concurrent_searches_stay_under_concurrency_bound_with_flat_memory(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    docs = documents(5_000, prefix="corpus")
    MilvusAddDocumentsOperator(
        task_id="seed",
        milvus_conn_id=shared_conn,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=docs,
        id_key="doc_id",
        batch_size=500,
    ).execute(context={})
    embeddings.reset_stats()
    embeddings.latency = 0.005
    queries, max_concurrency, k = [f"topic {i % 97} word{i % 13}" for i in range(1_000)], 8, 5

    def search() -> list:
        return MilvusSearchToXComOperator(
            task_id="search",
            milvus_conn_id=shared_conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            queries=queries,
            k=k,
            max_concurrency=max_concurrency,
        ).execute(context={})

    started = time.monotonic()
    hits, peak_growth, _ = _measure_rss(search)
    elapsed = time.monotonic() - started
    peak_in_flight = embeddings.stats.peak_in_flight
    assert len(hits) == len(queries)
    assert all(len(h) == k for h in hits)
    assert 1 < peak_in_flight <= max_concurrency, peak_in_flight
    _, rerun_peak, rerun_end = _measure_rss(search)
    figures.measure(
        "load: 1,000 concurrent searches",
        f"{elapsed:.0f} s, peak in flight {peak_in_flight}/{max_concurrency}, RSS peak +{peak_growth / MiB:.0f} MiB; "
        f"re-run peak +{rerun_peak / MiB:.0f} MiB, end +{rerun_end / MiB:.0f} MiB",
    )
    assert peak_growth < 512 * MiB
    assert rerun_end < 50 * MiB, f"1,000 more searches kept {rerun_end / MiB:.0f} MiB"
