"""First loads at the embedding bound (issue 25): the nightly corpus's first, unchanged and 1%-edited runs.

Ours (``MilvusAddDocumentsOperator`` with ``source_url``, as ``bench/nightly.py`` runs it) and, when its
virtualenv exists (``bash bench/peers/make_llamaindex_venv.sh``), LlamaIndex's ``IngestionPipeline``
(``bench/peers/llamaindex_peer.py``, run in ``.venv-llamaindex``) at equal concurrency and at its
defaults - on the same 1,000-file corpus, the same Milvus server and the same loopback embedding
endpoint (``testing/servers/embeddings_server.py``, a fixed latency per request and none per input).

The embedding bound of a run is ``embedding requests x latency / concurrency``: the wall time the embedding
API alone would take at that concurrency; "of bound" is bound / wall time (100% = nothing but embedding).
The test server is Python on the same shared 2 cores, so a request takes it more than its nominal latency:
each row also gives the server's measured service time per request (body read to answer written, the
latency's sleep included), the bound computed from it (requests x measured service / concurrency), the
seconds before the first embedding request and after the last answer (reading, splitting, planning;
the last writes, the ledger), and the share of the embedding span spent with ``concurrency`` requests in
flight. An "embedding stage alone" row sends the same number of requests of the corpus's texts through
the provider's own embedding client (``build_embeddings``) at the same batch size and concurrency, with no
Milvus, no reading and no splitting: what the server and client deliver together on this machine.

    flock /tmp/bench.lock python -m bench.first_load --results-dir /tmp/first-load   # look first
    flock /tmp/bench.lock python -m bench.first_load                                  # bench/results/first-load.md
    flock /tmp/bench.lock python -m bench.first_load --standalone --tag standalone   # .../first-load-standalone.md
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
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
    service: float | None = None  # the server's measured mean service time per request (s)
    before_first: float | None = None  # from the start of the run to the first request's arrival (s)
    after_last: float | None = None  # from the last answer to the end of the run (s)
    at_full: float | None = None  # share of the embedding span with ``concurrency`` requests in flight

    @property
    def bound(self) -> float | None:
        """Embedding requests x latency / concurrency (at the concurrency actually reached when unbounded)."""
        concurrency = self.concurrency or self.peak_in_flight
        return self.requests * self.latency / concurrency if concurrency and self.requests else None

    @property
    def measured_bound(self) -> float | None:
        """Embedding requests x the server's measured service time / concurrency."""
        concurrency = self.concurrency or self.peak_in_flight
        if not (concurrency and self.requests and self.service):
            return None
        return self.requests * self.service / concurrency

    def timed(self, stats: dict[str, Any], started: float, ended: float) -> Row:
        """Fill the server-side measurements of a run that ran from ``started`` to ``ended`` (time.time())."""
        requests = int(stats.get("requests", 0))
        if not requests or "service_seconds" not in stats:
            return self
        self.service = float(stats["service_seconds"]) / requests
        self.before_first = float(stats["first_arrival"]) - started
        self.after_last = ended - float(stats["last_answer"])
        levels = list(stats["seconds_at_in_flight"])
        span = float(stats["last_answer"]) - float(stats["first_arrival"])
        full = sum(levels[self.concurrency :]) if self.concurrency else levels[-1]
        self.at_full = full / span if span > 0 else None
        return self


def run_ours(folder: Path, collection: str, args: argparse.Namespace, embeddings: EmbeddingService, run: str) -> Row:
    embeddings.reset()
    started = time.time()
    with RssSampler() as rss:
        seconds, summary = ours(folder, collection, args.batch_size, args.max_concurrency)
    ended = time.time()
    stats = embeddings.stats()
    trips = summary.get("round_trips", {})
    return _counted_row(
        "ours (operator)",
        f"batch_size={args.batch_size}, max_concurrency={args.max_concurrency}",
        run,
        seconds,
        chunks=summary["chunks"],
        stats=stats,
        args=args,
        peak_rss=rss.peak,
        notes=f"written {summary['written']}, deleted {summary.get('stale_deleted', 0) + summary.get('vanished_deleted', 0)}"
        f", Milvus writes {trips.get('write', 0)}",
    ).timed(stats, started, ended)


def _counted_row(
    system: str,
    settings: str,
    run: str,
    seconds: float,
    *,
    chunks: int,
    stats: dict[str, Any],
    args: argparse.Namespace,
    peak_rss: int,
    notes: str,
) -> Row:
    """A row of one run, with what the embedding server counted during it."""
    return Row(
        system,
        settings,
        run,
        seconds,
        chunks=chunks,
        requests=stats["requests"],
        inputs=stats["inputs"],
        concurrency=args.max_concurrency,
        latency=args.latency,
        peak_in_flight=stats.get("peak_in_flight", 0),
        peak_rss_mb=peak_rss / 2**20,
        notes=notes,
    )


def run_embedding_alone(folder: Path, inputs: int, args: argparse.Namespace, embeddings: EmbeddingService) -> Row:
    """``inputs`` texts of the corpus (500-character slices) through the provider's embedding client, nothing else."""
    import asyncio
    from types import SimpleNamespace

    from airflow_provider_milvus.core.gather import batched, bounded_gather
    from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings

    texts: list[str] = []
    for path in sorted(folder.rglob("*")):
        if len(texts) >= inputs:
            break
        if path.is_file():
            text = path.read_text(errors="replace")
            step = CHUNK_SIZE - CHUNK_OVERLAP
            texts += [text[i : i + CHUNK_SIZE] for i in range(0, max(len(text) - CHUNK_OVERLAP, 1), step)]
    texts = (texts * -(-inputs // max(len(texts), 1)))[:inputs]  # the server keeps nothing: repeats cost the same
    batches = batched(texts, args.batch_size)
    conn = SimpleNamespace(conn_type="openai", host=embeddings.base_url, password=API_KEY, extra_dejson={})
    client = build_embeddings(EmbeddingSettings(conn_id="bench", model=MODEL, dimensions=args.dimensions), conn)

    async def embed(batch: Sequence[str]) -> None:
        await client.aembed_documents(list(batch))

    async def run_all() -> None:
        await bounded_gather(batches, embed, max_concurrency=args.max_concurrency)

    embeddings.reset()
    started, clock = time.time(), time.perf_counter()
    with RssSampler() as rss:
        asyncio.run(run_all())
    seconds, ended = time.perf_counter() - clock, time.time()
    stats = embeddings.stats()
    return _counted_row(
        "embedding stage alone",
        f"the provider's embedding client, batch {args.batch_size}, {args.max_concurrency} at once "
        "(bounded_gather); no Milvus, no reading or splitting",
        "first",
        seconds,
        chunks=len(texts),
        stats=stats,
        args=args,
        peak_rss=rss.peak,
        notes="the corpus's files cut in 500-character slices, as many inputs as ours' first run",
    ).timed(stats, started, ended)


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
    started = time.time()
    completed = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    ended = time.time()
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
        notes=outcome.get("notes", "") + "; before first / after last include the peer's imports",
    ).timed(stats, started, ended)


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
                    _print(row)
                if run == RUNS[0]:  # the same requests with nothing but the embedding client around them
                    rows.append(run_embedding_alone(work / "ours", rows[0].inputs, args, embeddings))
                    _print(rows[-1])
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


def _print(row: Row) -> None:
    print(f"  {row.system:<30} {row.run:<24} {row.seconds:6.2f} s  {row.settings}  chunks {row.chunks:,}"
          f"  requests {row.requests}  bound {row.bound or 0:.2f} s  measured bound {row.measured_bound or 0:.2f} s"
          f"  server {(row.service or 0) * 1000:.0f} ms/request  before first {row.before_first or 0:.2f} s"
          f"  after last {row.after_last or 0:.2f} s  {row.notes}", flush=True)  # fmt: skip


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
        "in flight); of bound = bound / wall time. The test server does more than sleep its latency (it reads, "
        "parses, computes and encodes in Python, on the same 2 shared cores): server ms/request is its measured "
        "mean service time per request (body read to answer written), and the measured bound = embedding "
        "requests x that time / concurrency - what the server could deliver on this machine during that run. "
        "Before first / after last: seconds from the start of the run to the first embedding request's arrival "
        "and from the last answer to the end (the run's work outside the embedding span); at full concurrency: "
        "the share of the embedding span with `concurrency` requests in flight at the server.",
        "",
        "| system | settings | run | wall s | embedding bound s | of bound | server ms/request (measured) "
        "| measured bound s | of measured bound | before first s | after last s | at full concurrency | chunks "
        "| embedding requests | inputs | peak in flight | peak RSS MB | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        bound, measured = r.bound, r.measured_bound
        of_bound = f"{bound / r.seconds:.0%}" if bound else "–"
        of_measured = f"{measured / r.seconds:.0%}" if measured else "–"
        rss = f"{r.peak_rss_mb:.0f}" if r.peak_rss_mb else "–"
        service = f"{r.service * 1000:.0f}" if r.service else "–"
        before = f"{r.before_first:.2f}" if r.before_first is not None else "–"
        after = f"{r.after_last:.2f}" if r.after_last is not None else "–"
        full = f"{r.at_full:.0%}" if r.at_full is not None else "–"
        lines.append(
            f"| {r.system} | {r.settings} | {r.run} | {r.seconds:.2f} | {bound or 0:.2f} | {of_bound} | {service} "
            f"| {measured or 0:.2f} | {of_measured} | {before} | {after} | {full} | {r.chunks:,} "
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
