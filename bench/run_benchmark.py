"""Benchmark CLI: ``python -m bench.run_benchmark [--quick] [--sizes 1000,10000,100000] [--latency 0.1]
[--latency-per-input S] [--milvus-uri URI | --standalone]``.

Measures, in one run against the same servers: (a) the tutorial's sync loop, (b) its unbounded
per-item gather, (c) the operators' async core, (d) the limit. Writes bench/results/latest.{md,json}
and throughput.png, and prints which targets are met.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile

# Airflow reads AIRFLOW_HOME at import time; give the benchmark a throwaway one before anything imports it.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import argparse
import logging
import time
from pathlib import Path

from bench.embedding_service import EmbeddingService
from bench.machine import describe_commit, describe_machine, load_average
from bench.milvus_backend import milvus_backend
from bench.nightly import run_nightly
from bench.operators import Tuning, configure_connections
from bench.report import targets, write_results
from bench.suite import GATHER, LIMIT, OPERATOR, SYNC, Suite
from bench.workloads import TUTORIAL_ADDS, TUTORIAL_DELETES, TUTORIAL_SEARCHES, Workload

RESULTS_DIR = Path(__file__).resolve().parent / "results"
BIG_SEARCH_BATCH = 64  # tuned as a user would for 1,000 queries: fewer, larger nq requests
MEASURE_SYNC_UP_TO = 1_000  # the sync loop and the unbounded gather are extrapolated beyond this N
MEASURE_GATHER_UP_TO = 1_000
# Operator arguments tuned as a user would (best wall time at 10k chunks on the reference 2-core machine,
# see docs/benchmark.md); the operators' own defaults are batch_size=100, max_concurrency=8.
TUNED = Tuning(write_batch_size=200, write_max_concurrency=16, search_batch_size=16, search_max_concurrency=8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tutorial sizes + 1k ingest, one repetition")
    parser.add_argument("--sizes", default="1000,10000,100000", help="ingest sizes (chunks)")
    parser.add_argument("--latency", type=float, default=0.1, help="embedding latency per request (s)")
    parser.add_argument("--latency-per-input", type=float, default=0.0005, help="extra latency per input (s)")
    parser.add_argument("--dimensions", type=int, default=32, help="embedding dimensions")
    parser.add_argument("--milvus-uri", help="use this Milvus instead of a fresh Milvus Lite server")
    parser.add_argument("--standalone", action="store_true", help="start a Milvus 2.3.5 standalone server")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions below 100k items (median)")
    parser.add_argument("--batch-size", type=int, default=TUNED.write_batch_size, help="write batch_size")
    parser.add_argument(
        "--max-concurrency", type=int, default=TUNED.write_max_concurrency, help="write max_concurrency"
    )
    parser.add_argument(
        "--search-concurrency", type=int, default=TUNED.search_max_concurrency, help="search max_concurrency"
    )
    parser.add_argument("--search-batch-size", type=int, default=TUNED.search_batch_size, help="search batch_size")
    parser.add_argument(
        "--big-search", default="1000,100000", help="QUERIES,ENTITIES of the large search workload ('' to skip)"
    )
    parser.add_argument(
        "--big-search-batch-size",
        type=int,
        default=BIG_SEARCH_BATCH,
        help="search batch_size for the large search workload",
    )
    parser.add_argument("--nightly-files", type=int, default=1000, help="files of the nightly corpus (0 to skip)")
    parser.add_argument(
        "--db-sizes",
        default="100,1000",
        help="corpus sizes (files) for the metadata-DB growth runs via airflow dags test ('' to skip)",
    )
    parser.add_argument("--only-nightly", action="store_true", help="run only the nightly corpus workload")
    parser.add_argument(
        "--only-ingest",
        action="store_true",
        help="only the ingest sizes, (c) and (d): no tutorial workloads, no (a)/(b)",
    )
    parser.add_argument("--tag", help="results file suffix (default: 'standalone' with --standalone, else none)")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeat, args.big_search = "1000", 1, "200,5000"
        args.nightly_files, args.db_sizes = min(args.nightly_files, 100), ""
    if args.tag is None:
        args.tag = "standalone" if args.standalone else ""
    return args


def quiet_logs() -> None:
    """Airflow configures logging on import; keep per-request and progress logs out of the output."""
    import airflow.sdk  # noqa: F401 - configures logging

    for name in ("httpx", "httpx2", "openai", "airflow_provider_milvus", "langchain_milvus", "pymilvus"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # OpenAI async clients left open by finished event loops (the tutorial's stores and the provider's
    # sessions alike) log "Task exception was never retrieved ... Event loop is closed" when collected.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


def run(args: argparse.Namespace) -> int:
    quiet_logs()
    tuning = Tuning(
        write_batch_size=args.batch_size,
        write_max_concurrency=args.max_concurrency,
        search_batch_size=args.search_batch_size,
        search_max_concurrency=args.search_concurrency,
    )
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.monotonic()
    commit, load_at_start = describe_commit(), load_average()
    with (
        EmbeddingService(
            dimensions=args.dimensions, latency=args.latency, latency_per_input=args.latency_per_input
        ) as embeddings,
        milvus_backend(uri=args.milvus_uri, standalone=args.standalone) as backend,
    ):
        configure_connections(backend.uri, embeddings.base_url)
        suite = Suite(backend.uri, embeddings, tuning, repeat=args.repeat)
        print(
            f"Milvus: {backend.description}; embeddings: {embeddings.base_url} "
            f"(latency {args.latency}s + {args.latency_per_input}s/input)\nTuning: {tuning.describe()}",
            flush=True,
        )
        if args.only_nightly:
            sizes = []
        elif not args.only_ingest:
            for n in TUTORIAL_ADDS:
                suite.run_write(Workload("add", n), (SYNC, GATHER, OPERATOR, LIMIT))
            suite.run_search(Workload("search", TUTORIAL_SEARCHES))
            suite.run_search_by_vector(Workload("search_by_vector", TUTORIAL_SEARCHES))
            if args.big_search:
                n_queries, n_entities = (int(x) for x in args.big_search.split(","))
                # (a) and (b) on the first 100 queries, extrapolated; one repetition (Milvus Lite takes ~0.7 s
                # per search request over 100k entities whatever nq is, see docs/benchmark.md).
                suite.run_search(
                    Workload(f"search@{n_entities // 1000}k", n_queries),
                    n_entities,
                    measure_sync_up_to=100,
                    measure_gather_up_to=100,
                    batch_size=args.big_search_batch_size,
                    repeat=1,
                )
            for n in TUTORIAL_DELETES:
                suite.run_delete(Workload("delete", n))
        for n in sizes:
            workload = Workload("ingest", n)
            measured = tuple(
                m
                for m, up_to in ((SYNC, MEASURE_SYNC_UP_TO), (GATHER, MEASURE_GATHER_UP_TO))
                if n <= up_to and not (args.quick and m == SYNC) and not args.only_ingest
            )
            suite.run_write(workload, measured)
            for method in () if args.only_ingest else (SYNC, GATHER):
                if method not in measured:
                    base = suite.find("ingest", MEASURE_SYNC_UP_TO, method) or suite.find("add", 100, method)
                    suite.extrapolate(workload, method, base)
        nightly = None
        if args.nightly_files:
            with tempfile.TemporaryDirectory(prefix="bench-nightly-") as workdir:
                nightly = run_nightly(
                    backend.uri,
                    embeddings,
                    files=args.nightly_files,
                    batch_size=tuning.write_batch_size,
                    max_concurrency=tuning.write_max_concurrency,
                    workdir=Path(workdir),
                    db_sizes=tuple(int(x) for x in args.db_sizes.split(",") if x),
                )
        meta = describe_machine(args, backend, embeddings, tuning, commit=commit, load_at_start=load_at_start)
    meta["benchmark wall time"] = f"{time.monotonic() - started:.0f} s"
    found = targets(suite.rows)
    text = write_results(suite.rows, found, meta, args.results_dir, tag=args.tag, nightly=nightly)
    print("\n" + text)
    return 0


def main(argv: list[str] | None = None) -> int:
    # A kill (SIGTERM) unwinds like Ctrl-C, so the Milvus Lite server and the embedding service this run
    # started are stopped with it (their context managers' exits run).
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    return run(parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
