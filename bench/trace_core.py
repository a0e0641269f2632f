"""Where an operator run's wall time goes, call by call: ``python -m bench.trace_core [--standalone]``.

A sampling profiler shows CPU; a run of the core on a fast server is mostly waiting. This wraps every
``AsyncMilvusClient`` method, the embedding calls, ``asyncio.to_thread`` and the connection lookup
with timers and prints a timeline (start, duration) of one 100-query search, one 100-id delete and
one unchanged 10k-chunk re-write, the benchmark's workloads. Writes bench/results/trace-*.txt.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import argparse
import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import operators
from bench.embedding_service import EmbeddingService
from bench.milvus_backend import milvus_backend
from bench.run_benchmark import RESULTS_DIR, TUNED, quiet_logs
from bench.workloads import TUTORIAL_CORPUS, delete_ids, documents, queries

EVENTS: list[tuple[float, float, str]] = []
T0 = [0.0]


def _async_timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await fn(*args, **kwargs)
        finally:
            EVENTS.append((started - T0[0], time.perf_counter() - started, name))

    return wrapper


def _sync_timer(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            EVENTS.append((started - T0[0], time.perf_counter() - started, name))

    return wrapper


def instrument() -> None:
    from langchain_openai import OpenAIEmbeddings
    from pymilvus import AsyncMilvusClient

    from airflow_provider_milvus import settings
    from airflow_provider_milvus.core import session

    for name in (
        "has_collection",
        "describe_collection",
        "list_indexes",
        "describe_index",
        "load_collection",
        "query",
        "search",
        "hybrid_search",
        "delete",
        "upsert",
        "insert",
        "close",
    ):
        setattr(AsyncMilvusClient, name, _async_timer(f"milvus.{name}", getattr(AsyncMilvusClient, name)))
    for name in ("aembed_documents", "aembed_query"):
        setattr(OpenAIEmbeddings, name, _async_timer(f"embeddings.{name}", getattr(OpenAIEmbeddings, name)))
    from airflow_provider_milvus.core import write
    from airflow_provider_milvus.operators import milvus as operator_module

    for module, name in (
        (operator_module, "load_documents"),
        (write, "plan_write"),
        (write, "_write"),
        (write, "_delete_ids"),
    ):
        fn = getattr(module, name, None)
        if fn is None:  # moved or renamed since: trace the rest
            continue
        label = f"{'operator' if module is operator_module else module.__name__.rsplit('.', 1)[-1]}.{name}"
        timer = _async_timer(label, fn) if asyncio.iscoroutinefunction(fn) else _sync_timer(label, fn)
        setattr(module, name, timer)
    session.Session.query_all = _async_timer("session.query_all", session.Session.query_all)
    session.aget_settings = _async_timer("settings.aget_settings (connection lookup)", settings.aget_settings)
    session._aembeddings = _async_timer("session._aembeddings (lookup + build_embeddings)", session._aembeddings)
    original_to_thread = asyncio.to_thread

    async def to_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        label = getattr(fn, "__qualname__", repr(fn))
        return await _async_timer(f"to_thread({label})", original_to_thread)(fn, *args, **kwargs)

    asyncio.to_thread = to_thread  # type: ignore[assignment]


def timeline(run: Callable[[], float]) -> str:
    EVENTS.clear()
    T0[0] = time.perf_counter()
    seconds = run()
    lines = [
        f"total {seconds:.3f} s (timer inside the bench call); calls by start time:",
        f"{'start s':>8} {'took s':>8}  call",
    ]
    for start, took, name in sorted(EVENTS):
        lines.append(f"{start:8.3f} {took:8.3f}  {name}")
    totals: dict[str, tuple[int, float]] = {}
    for _, took, name in EVENTS:
        count, total = totals.get(name, (0, 0.0))
        totals[name] = (count + 1, total + took)
    lines.append("\nper call type: count, summed seconds (overlapping calls add up)")
    for name, (count, total) in sorted(totals.items(), key=lambda item: -item[1][1]):
        lines.append(f"{count:6d} {total:8.3f}  {name}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--nightly-files", type=int, default=0, help="also trace the nightly corpus runs (ours)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the text files go")
    args = parser.parse_args()
    quiet_logs()
    suffix = "-standalone" if args.standalone else ""
    with (
        EmbeddingService(dimensions=32, latency=0.1, latency_per_input=0.0005) as emb,
        milvus_backend(uri=None, standalone=args.standalone) as backend,
    ):
        operators.configure_connections(backend.uri, emb.base_url)
        operators.prepare("trace_small", documents(TUTORIAL_CORPUS))
        docs = documents(args.n)
        operators.prepare("trace_ingest", docs)
        instrument()
        runs = {
            "search-100": lambda: operators.search("trace_small", queries(100), TUNED),
            "delete-100": lambda: operators.delete("trace_small", delete_ids(100, start=0), TUNED),
            f"rewrite-unchanged-{args.n}": lambda: operators.add("trace_ingest", docs, TUNED, expect_written=0),
        }
        if args.nightly_files:
            import shutil

            from bench.nightly import build_corpus, mutate, ours

            folder = Path(tempfile.mkdtemp(prefix="bench-trace-corpus-"))
            build_corpus(folder, args.nightly_files)

            def nightly(mutate_first: bool) -> float:
                if mutate_first:
                    mutate(folder)
                return ours(folder, "trace_nightly", TUNED.write_batch_size, TUNED.write_max_concurrency)[0]

            runs |= {
                f"nightly-{args.nightly_files}-first": lambda: nightly(False),
                f"nightly-{args.nightly_files}-unchanged": lambda: nightly(False),
                f"nightly-{args.nightly_files}-edited": lambda: nightly(True),
            }
            atexit_cleanup = lambda: shutil.rmtree(folder, ignore_errors=True)
        else:
            atexit_cleanup = None
        for name, run in runs.items():
            path = args.results_dir / f"trace-{name}{suffix}.txt"
            path.write_text(timeline(run))
            print(f"{name} -> {path}")
        if atexit_cleanup:
            atexit_cleanup()


if __name__ == "__main__":
    main()
