"""Profile the operator core (method c) with pyinstrument: ``python -m bench.profile_core [--n 10000]``.

Runs one ingest of ``n`` chunks, one 100-query search (nq-batched, the benchmark's search tuning) and
one 100-id delete against fresh servers (same settings as the benchmark) and writes text profiles to
bench/results/profile-*.txt. The ingest is run a second time under cProfile, into a fresh collection,
for its client CPU summed by package (``profile-ingest-<n>-cpu.txt``): the wall-time profile shows
waiting, this shows what the client process burns on 2 shared cores. ``--standalone`` profiles against
Milvus standalone 2.3.5 instead.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import argparse
import cProfile
import pstats
import re
from collections import defaultdict
from pathlib import Path

from pyinstrument import Profiler

from bench import operators
from bench.embedding_service import EmbeddingService
from bench.milvus_backend import milvus_backend
from bench.run_benchmark import RESULTS_DIR, TUNED, quiet_logs
from bench.workloads import TUTORIAL_CORPUS, delete_ids, documents, queries


def profiled(path: Path, run) -> float:
    profiler = Profiler(interval=0.001, async_mode="enabled")
    profiler.start()
    seconds = run()
    profiler.stop()
    path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
    return seconds


def cpu_by_package(path: Path, run) -> float:
    """Run under cProfile; write own CPU time (tottime) summed by top-level package, largest first."""
    profile = cProfile.Profile()
    profile.enable()
    seconds = run()
    profile.disable()
    totals: dict[str, float] = defaultdict(float)
    for (filename, _, _), (_, _, tottime, _, _) in pstats.Stats(profile).stats.items():  # type: ignore[attr-defined]
        totals[_package(filename)] += tottime
    cpu = sum(totals.values())
    lines = [f"ingest wall {seconds:.3f} s, client CPU (cProfile tottime) {cpu:.3f} s", "", "package  CPU s  share"]
    lines += [f"{name}  {t:.3f}  {t / cpu:.0%}" for name, t in sorted(totals.items(), key=lambda kv: -kv[1])[:20]]
    path.write_text("\n".join(lines) + "\n")
    return seconds


def _package(filename: str) -> str:
    for pattern in (r"site-packages/([^/]+)", r"/(airflow_provider_milvus|bench)/", r"python3\.\d+/([^/]+)"):
        if match := re.search(pattern, filename):
            return match.group(1).removesuffix(".py")
    return "C built-ins (called from the packages above)" if filename == "~" else filename


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--latency-per-input", type=float, default=0.0005)
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the text files go")
    args = parser.parse_args()
    quiet_logs()
    docs = documents(args.n)
    with (
        EmbeddingService(dimensions=32, latency=args.latency, latency_per_input=args.latency_per_input) as emb,
        milvus_backend(uri=None, standalone=args.standalone) as backend,
    ):
        operators.configure_connections(backend.uri, emb.base_url)
        operators.prepare("profile_ingest")
        operators.prepare("profile_small", documents(TUTORIAL_CORPUS))
        runs = {
            f"ingest-{args.n}": lambda: operators.add("profile_ingest", docs, TUNED),
            "search-100": lambda: operators.search("profile_small", queries(100), TUNED),
            "delete-100": lambda: operators.delete("profile_small", delete_ids(100, start=0), TUNED),
        }
        suffix = "-standalone" if args.standalone else ""
        for name, run in runs.items():
            path = args.results_dir / f"profile-{name}{suffix}.txt"
            seconds = profiled(path, run)
            print(f"{name}: {seconds:.3f} s -> {path}")
        operators.prepare("profile_ingest_cpu")
        path = args.results_dir / f"profile-ingest-{args.n}-cpu{suffix}.txt"
        seconds = cpu_by_package(path, lambda: operators.add("profile_ingest_cpu", docs, TUNED))
        print(f"ingest-{args.n} under cProfile: {seconds:.3f} s -> {path}")


if __name__ == "__main__":
    main()
