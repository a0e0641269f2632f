"""Rebuild behind an alias on the nightly corpus: what a chunking-only change and a model change cost.

``python -m bench.rebuild [--files 1000] [--latency 0.1] [--standalone | --milvus-uri URI]`` (wrap it in
``flock /tmp/bench.lock`` on a shared machine). Corpus: bench/nightly.py's ``build_corpus`` (text files from
this venv's site-packages, nothing downloaded). Embeddings: the loopback test server in a child process
(``bench.embedding_service``), dense, ``--latency`` per request; it counts every text it embeds. Runs:

1. plain first ingest: ``MilvusAddDocumentsOperator`` into a new collection (chunk 500/50, ``replace_by``);
2. first rebuild: ``MilvusRebuildCollectionOperator`` builds ``<alias>_v1`` (same chunking) and creates the alias;
3. chunk-size-only rebuild (400/40, same model): builds ``_v2``; the live ``_v1`` supplies the vectors of
   texts it holds, so only chunk texts that did not exist before should reach the embedding server;
4. model change (400/40, another model name): builds ``_v3``, every chunk embedded again.

"new texts" is computed independently with the operator's splitter: chunks of the new chunking whose text no
chunk of the live version has. Results: ``bench/results/rebuild[-<tag>].md``, written by this script.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.embedding_service import EmbeddingService
from bench.machine import describe_commit, load_average
from bench.milvus_backend import milvus_backend
from bench.nightly import build_corpus
from bench.operators import EMBEDDING_CONN_ID, MILVUS_CONN_ID, configure_connections

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FIRST, SECOND = (500, 50), (400, 40)
BATCH_SIZE, MAX_CONCURRENCY = 200, 16  # the benchmark's tuned write settings (bench/run_benchmark.py TUNED)


def chunk_texts(folder: Path, chunk_size: int, chunk_overlap: int) -> list[str]:
    """The operator's loader and splitter: the text of every chunk (after de-duplication), in order."""
    from airflow_provider_milvus.core.documents import SplitOptions, prepare_chunks
    from airflow_provider_milvus.core.files import load_documents

    prepared = prepare_chunks(load_documents(str(folder)), split=SplitOptions(chunk_size, chunk_overlap))
    return [c["text"] for c in prepared.chunks]


def timed_execute(operator: Any) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    result = operator.execute(context={})
    return time.perf_counter() - started, result


def run(args: argparse.Namespace) -> str:
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator
    from airflow_provider_milvus.operators.rebuild import MilvusRebuildCollectionOperator

    suffix = uuid.uuid4().hex[:6]
    plain, alias = f"bench_rebuild_plain_{suffix}", f"bench_rebuild_{suffix}"
    common = dict(
        milvus_conn_id=MILVUS_CONN_ID,
        embedding_conn_id=EMBEDDING_CONN_ID,
        replace_by="source",
        batch_size=BATCH_SIZE,
        max_concurrency=MAX_CONCURRENCY,
        deferrable=False,
    )
    rows: list[dict[str, Any]] = []
    commit, load_at_start = describe_commit(), load_average()
    with (
        tempfile.TemporaryDirectory(prefix="bench-rebuild-") as workdir,
        EmbeddingService(
            dimensions=args.dimensions, latency=args.latency, latency_per_input=args.latency_per_input
        ) as embeddings,
        milvus_backend(uri=args.milvus_uri, standalone=args.standalone) as backend,
    ):
        configure_connections(backend.uri, embeddings.base_url)
        folder = Path(workdir) / "corpus"
        corpus_bytes = build_corpus(folder, args.files)
        old_texts = set(chunk_texts(folder, *FIRST))
        new_chunks = chunk_texts(folder, *SECOND)
        new_texts = sum(1 for text in new_chunks if text not in old_texts)
        print(f"corpus: {args.files} files, {corpus_bytes / 1e6:.1f} MB; backend: {backend.description}", flush=True)

        # Warm-up (imports, first connection, first collection), not measured: the first run would pay it.
        MilvusAddDocumentsOperator(
            task_id="warm_up",
            collection_name=f"{plain}_warm_up",
            documents=[{"page_content": "warm up", "metadata": {"source": "warm-up"}}],
            **common,
        ).execute(context={})

        def measure(label: str, operator: Any, expected: str) -> None:
            embeddings.reset()
            seconds, summary = timed_execute(operator)
            stats = embeddings.stats()
            row = {
                "run": label,
                "seconds": seconds,
                "chunks": summary.get("rows", summary.get("chunks")),
                "requests": stats["requests"],
                "inputs": stats["inputs"],
                "embedded": summary.get("embedded", 0),
                "reused": summary.get("known_vectors", 0),
                "expected": expected,
            }
            rows.append(row)
            print(f"  {row}", flush=True)

        measure(
            "plain first ingest (add operator, 500/50)",
            MilvusAddDocumentsOperator(
                task_id="plain",
                collection_name=plain,
                source_url=str(folder),
                chunk_size=FIRST[0],
                chunk_overlap=FIRST[1],
                **common,
            ),
            "every chunk",
        )
        rebuild = dict(
            collection_name=alias, source_url=str(folder), sample_queries=["how to configure logging"], **common
        )
        measure(
            "first rebuild -> _v1 (500/50)",
            MilvusRebuildCollectionOperator(task_id="v1", chunk_size=FIRST[0], chunk_overlap=FIRST[1], **rebuild),
            "every chunk",
        )
        measure(
            "chunk-size-only rebuild -> _v2 (400/40, same model)",
            MilvusRebuildCollectionOperator(task_id="v2", chunk_size=SECOND[0], chunk_overlap=SECOND[1], **rebuild),
            f"{new_texts:,} new chunk texts (of {len(new_chunks):,} chunks)",
        )
        measure(
            "model change -> _v3 (400/40, another model)",
            MilvusRebuildCollectionOperator(
                task_id="v3",
                chunk_size=SECOND[0],
                chunk_overlap=SECOND[1],
                embedding_model="bench-embedding-other",
                **rebuild,
            ),
            "every chunk",
        )
        from pymilvus import MilvusClient

        client = MilvusClient(uri=backend.uri)
        try:
            for name in client.list_collections():
                if name.startswith((plain, alias)):  # the warm-up's collection too
                    if name == alias:
                        continue
                    client.drop_collection(name)
            client.drop_alias(alias)
        finally:
            client.close()
        return report(args, backend.description, commit, load_at_start, corpus_bytes, rows, new_texts)


def report(
    args: argparse.Namespace,
    backend: str,
    commit: str,
    load_at_start: str,
    corpus_bytes: int,
    rows: list[dict[str, Any]],
    new_texts: int,
) -> str:
    plain = rows[0]["seconds"]
    lines = [
        "# Rebuild behind an alias: chunking-only change vs model change (nightly corpus)",
        "",
        "Written by `bench/rebuild.py`; regenerate with "
        f"`flock /tmp/bench.lock .venv/bin/python -m bench.rebuild --files {args.files}"
        f"{' --standalone' if args.standalone else ''}`.",
        "",
        f"- machine: the shared 2-core machine ({os.cpu_count()} cores seen, shared with other helpers' work); "
        f"load average at start / end: {load_at_start} / {load_average()}",
        f"- commit: {commit}",
        f"- backend: {backend}",
        f"- corpus: {args.files} files of the nightly corpus (bench/nightly.py), {corpus_bytes / 1e6:.1f} MB",
        f"- embeddings: loopback test server, {args.dimensions} dims, dense, latency {args.latency}s/request + "
        f"{args.latency_per_input}s/input; inputs counted at the server",
        f"- operators: batch_size={BATCH_SIZE}, max_concurrency={MAX_CONCURRENCY}, replace_by=source, inline; "
        "rebuilds validate with one sample query (its embedding is counted in the inputs) and probe the model "
        "once for the new collection's dimension",
        "",
        "| run | wall time (s) | vs plain first ingest | rows | embedding requests | texts embedded (server) "
        "| embedded (summary) | vectors reused from the live version | expected to embed |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        lines.append(
            f"| {row['run']} | {row['seconds']:.1f} | {row['seconds'] / plain:.2f}x | {row['chunks']:,} | "
            f"{row['requests']:,} | {row['inputs']:,} | {row['embedded']:,} | {row['reused']:,} | {row['expected']} |"
        )
    chunk_only = rows[2]
    lines += [
        "",
        f"The chunk-size-only rebuild embedded {chunk_only['embedded']:,} chunks; {new_texts:,} chunks of the new "
        "chunking have a text the live version did not hold"
        + (
            " (equal)."
            if chunk_only["embedded"] == new_texts
            else f" (differs by {chunk_only['embedded'] - new_texts:+,})."
        )
        + " The rest took the live version's stored vectors.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.1, help="embedding latency per request (s)")
    parser.add_argument("--latency-per-input", type=float, default=0.0005, help="extra latency per input (s)")
    parser.add_argument("--dimensions", type=int, default=32)
    parser.add_argument("--milvus-uri")
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--tag", help="results file suffix (default: 'standalone' with --standalone, else none)")
    args = parser.parse_args()
    import logging

    logging.getLogger().setLevel(logging.WARNING)
    text = run(args)
    tag = args.tag or ("standalone" if args.standalone else "")
    path = RESULTS_DIR / (f"rebuild-{tag}.md" if tag else "rebuild.md")
    path.write_text(text)
    print(text)
    print(f"written: {path}")


if __name__ == "__main__":
    main()
