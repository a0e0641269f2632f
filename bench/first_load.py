"""First loads at the embedding bound (issue 25): the nightly corpus's first, unchanged and 1%-edited runs.

Ours (``MilvusAddDocumentsOperator`` with ``source_url``, as ``bench/nightly.py`` runs it) and, when its
virtualenv exists (``bash bench/peers/make_llamaindex_venv.sh``), LlamaIndex's ``IngestionPipeline``
(``bench/peers/llamaindex_peer.py``, run in ``.venv-llamaindex``) at equal concurrency and at its
defaults - on the same 1,000-file corpus, the same Milvus server and the same loopback embedding
endpoint (``testing/servers/embeddings_server.py``, a fixed latency per request and none per input).

The embedding bound of a run is ``embedding requests x latency / concurrency``: the wall time the embedding
API alone would take at that concurrency; "of bound" is bound / wall time (100% = nothing but embedding).

    flock /tmp/bench.lock python -m bench.first_load --results-dir /tmp/first-load   # look first
    flock /tmp/bench.lock python -m bench.first_load                                  # bench/results/first-load.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.embedding_service import API_KEY, MODEL, EmbeddingService
from bench.machine import PACKAGES, _cpu_model, _version, describe_commit, load_average
from bench.measure import RssSampler
from bench.milvus_backend import milvus_backend
from bench.nightly import CHUNK_OVERLAP, CHUNK_SIZE, RUNS, _drop, build_corpus, mutate, ours
from bench.operators import configure_connections

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
LLAMAINDEX_PYTHON = ROOT / ".venv-llamaindex" / "bin" / "python"
PEER_SCRIPT = Path(__file__).resolve().parent / "peers" / "llamaindex_peer.py"


@dataclass
class Row:
    system: str
    settings: str
    run: str
    seconds: float
    chunks: int
    requests: int
    inputs: int
    concurrency: int | None  # embedding requests at once (None: unbounded)
    latency: float
    peak_in_flight: int = 0
    peak_rss_mb: float | None = None
    notes: str = ""

    @property
    def bound(self) -> float | None:
        """Embedding requests x latency / concurrency (at the concurrency actually reached when unbounded)."""
        concurrency = self.concurrency or self.peak_in_flight
        return self.requests * self.latency / concurrency if concurrency and self.requests else None


def run_ours(folder: Path, collection: str, args: argparse.Namespace, embeddings: EmbeddingService, run: str) -> Row:
    embeddings.reset()
    with RssSampler() as rss:
        seconds, summary = ours(folder, collection, args.batch_size, args.max_concurrency)
    stats = embeddings.stats()
    trips = summary.get("round_trips", {})
    return Row(
        "ours (operator)",
        f"batch_size={args.batch_size}, max_concurrency={args.max_concurrency}",
        run,
        seconds,
        chunks=summary["chunks"],
        requests=stats["requests"],
        inputs=stats["inputs"],
        concurrency=args.max_concurrency,
        latency=args.latency,
        peak_in_flight=stats.get("peak_in_flight", 0),
        peak_rss_mb=rss.peak / 2**20,
        notes=f"written {summary['written']}, deleted {summary.get('stale_deleted', 0) + summary.get('vanished_deleted', 0)}"
        f", Milvus writes {trips.get('write', 0)}",
    )


def run_llamaindex(
    folder: Path,
    collection: str,
    state: Path,
    uri: str,
    embeddings: EmbeddingService,
    run: str,
    *,
    equal: bool,
    args: argparse.Namespace,
) -> Row:
    """One pipeline run in the peer's virtualenv (its docstore persisted in ``state`` across runs)."""
    command = [
        str(LLAMAINDEX_PYTHON),
        str(PEER_SCRIPT),
        "--folder", str(folder),
        "--uri", uri,
        "--collection", collection,
        "--embedding-url", embeddings.base_url,
        "--api-key", API_KEY,
        "--model", MODEL,
        "--dimensions", str(embeddings.dimensions),
        "--state", str(state),
        "--chunk-size", str(CHUNK_SIZE),
        "--chunk-overlap", str(CHUNK_OVERLAP),
    ]  # fmt: skip
    if equal:
        command += ["--batch-size", str(args.batch_size), "--concurrency", str(args.max_concurrency)]
    embeddings.reset()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    if completed.returncode:
        raise RuntimeError(f"LlamaIndex peer failed:\n{completed.stdout}\n{completed.stderr}")
    outcome = json.loads(completed.stdout.strip().splitlines()[-1])
    stats = embeddings.stats()
    return Row(
        "LlamaIndex IngestionPipeline",
        outcome["settings"],
        run,
        outcome["seconds"],
        chunks=outcome["chunks"],
        requests=stats["requests"],
        inputs=stats["inputs"],
        concurrency=args.max_concurrency if equal else None,
        latency=args.latency,
        peak_in_flight=stats.get("peak_in_flight", 0),
        peak_rss_mb=outcome.get("peak_rss_mb"),
        notes=outcome.get("notes", ""),
    )


def measure(args: argparse.Namespace) -> tuple[list[Row], dict[str, str]]:
    rows: list[Row] = []
    peer = LLAMAINDEX_PYTHON.exists() and not args.no_peer
    commit, load_at_start = describe_commit(), load_average()
    with (
        EmbeddingService(dimensions=args.dimensions, latency=args.latency, latency_per_input=0.0) as embeddings,
        milvus_backend(uri=None, standalone=args.standalone) as backend,
        tempfile.TemporaryDirectory(prefix="bench-first-load-") as tmp,
    ):
        configure_connections(backend.uri, embeddings.base_url)
        work = Path(tmp)
        corpus_bytes = build_corpus(work / "ours", args.files)
        systems = [("ours", None)] + ([("llamaindex-equal", True), ("llamaindex-default", False)] if peer else [])
        for name, _ in systems[1:]:
            shutil.copytree(work / "ours", work / name)
        suffix = uuid.uuid4().hex[:6]
        collections = {name: f"bench_first_{name.replace('-', '_')}_{suffix}" for name, _ in systems}
        print(f"corpus: {args.files} files, {corpus_bytes / 1e6:.1f} MB; Milvus: {backend.description}", flush=True)
        try:
            for run in RUNS:
                if run == RUNS[2]:
                    changes = {repr(mutate(work / name)) for name, _ in systems}
                    assert len(changes) == 1, "every system gets the same edit"
                for name, equal in systems:
                    if equal is None:
                        row = run_ours(work / name, collections[name], args, embeddings, run)
                    else:
                        row = run_llamaindex(
                            work / name, collections[name], work / f"{name}-state", backend.uri, embeddings, run,
                            equal=equal, args=args,
                        )  # fmt: skip
                    rows.append(row)
                    print(f"  {row.system:<30} {row.run:<24} {row.seconds:6.2f} s  {row.settings}  chunks {row.chunks:,}"
                          f"  requests {row.requests}  bound {row.bound or 0:.2f} s  {row.notes}", flush=True)  # fmt: skip
        finally:
            _drop(backend.uri, list(collections.values()))
        meta = {
            "command": " ".join(["python -m bench.first_load", *sys.argv[1:]]),
            "commit": commit,
            "load average (1/5/15 min) at start / end": f"{load_at_start} / {load_average()}"
            " (the shared 2-core machine: other work ran beside it)",
            "machine": f"{os.cpu_count()} cores ({_cpu_model()})",
            "versions": ", ".join(f"{p} {_version(p)}" for p in PACKAGES)
            + (f"; peer: {_peer_versions()}" if peer else ""),
            "backend": backend.description,
            "embeddings": f"testing.servers.embeddings_server in a child process, {args.dimensions} dims, "
            f"{args.latency * 1000:.0f} ms per request, nothing per input",
            "corpus": f"bench/nightly.py's corpus: {args.files} site-packages text files, {corpus_bytes / 1e6:.1f} MB, "
            f"chunk_size={CHUNK_SIZE}, chunk_overlap={CHUNK_OVERLAP}",
        }
    return rows, meta


def _peer_versions() -> str:
    names = (
        "llama-index-core",
        "llama-index-vector-stores-milvus",
        "llama-index-embeddings-openai",
        "pymilvus",
        "openai",
    )
    script = f"from importlib.metadata import version; print(', '.join(n + ' ' + version(n) for n in {names!r}))"
    completed = subprocess.run([str(LLAMAINDEX_PYTHON), "-c", script], capture_output=True, text=True, check=False)
    return completed.stdout.strip() or "unknown"


def render(rows: list[Row], meta: dict[str, str]) -> str:
    lines = ["# First loads at the embedding bound (issue 25)", "", "Written by `python -m bench.first_load`.", ""]
    lines += [f"- {key}: {value}" for key, value in meta.items()]
    lines += [
        "",
        "Embedding bound = embedding requests x latency / concurrency (for an unbounded run: the peak of requests "
        "in flight); of bound = bound / wall time.",
        "",
        "| system | settings | run | wall s | embedding bound s | of bound | chunks | embedding requests | inputs "
        "| peak in flight | peak RSS MB | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        bound = r.bound
        of_bound = f"{bound / r.seconds:.0%}" if bound else "–"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "–"
        lines.append(
            f"| {r.system} | {r.settings} | {r.run} | {r.seconds:.2f} | {bound or 0:.2f} | {of_bound} | {r.chunks:,} "
            f"| {r.requests:,} | {r.inputs:,} | {r.peak_in_flight} | {rss} | {r.notes} |"
        )
    return "\n".join(lines) + "\n"


DOCS = ROOT / "docs" / "benchmark.md"
START, END = "<!-- first-load:start: written by python -m bench.first_load, do not edit -->", "<!-- first-load:end -->"


def publish(text: str) -> None:
    """Copy the results (header and table) into docs/benchmark.md between its first-load markers."""
    docs = DOCS.read_text()
    head, rest = docs.split(START, 1)
    _, tail = rest.split(END, 1)
    body = "\n".join(text.splitlines()[2:])  # without the title: the section has its own
    DOCS.write_text(f"{head}{START}\n{body.strip()}\n{END}{tail}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="embedding latency per request (s)")
    parser.add_argument("--dimensions", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-concurrency", type=int, default=4)
    parser.add_argument("--standalone", action="store_true", help="Milvus 2.3.5 standalone instead of Lite")
    parser.add_argument("--no-peer", action="store_true", help="skip LlamaIndex even if its venv exists")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--tag", default="", help="results file suffix, e.g. 'standalone'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from bench.run_benchmark import quiet_logs

    args = parse_args(argv)
    quiet_logs()
    started = time.monotonic()
    rows, meta = measure(args)
    meta["wall time"] = f"{time.monotonic() - started:.0f} s"
    text = render(rows, meta)
    args.results_dir.mkdir(parents=True, exist_ok=True)
    name = f"first-load{'-' + args.tag if args.tag else ''}"
    (args.results_dir / f"{name}.md").write_text(text)
    if args.results_dir == RESULTS_DIR and not args.tag:
        publish(text)
    (args.results_dir / f"{name}.json").write_text(
        json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1)
    )
    print("\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
