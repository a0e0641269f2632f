"""
Milvus requests of an unchanged nightly run with the verified source ledger (issue 20), at 1,000 and 10,000 sources.

Starts Milvus Lite (gRPC) and the loopback embeddings server, ingests a corpus of N one-file sources
(``chunks`` paragraphs each, one chunk per paragraph), then re-runs it unchanged, with and without
``delete_missing``, and prints each run's ``round_trips`` (Milvus requests by phase), wall time and
embedding inputs, under a header naming the command, commit, machine and load. An unchanged run's
ledger requests are the ledger read and the audit (``count(*)`` of the scope and a query for its rows
that are not exactly tracked). Run from the repository root::

    python -m bench.ledger_requests --sources 1000,10000 --chunks 3 > bench/results/ledger-requests.txt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid


def corpus(sources: int, chunks: int) -> list[dict]:
    return [
        {
            "page_content": "\n\n".join(
                f"File {f} paragraph {p}: " + " ".join(f"w{(f * 7 + p * 3 + i) % 997}" for i in range(25))
                for p in range(chunks)
            ),
            "metadata": {"source": f"docs/file{f:05d}.md"},
        }
        for f in range(sources)
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", default="1000,10000")
    parser.add_argument("--chunks", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ledger-requests-"))
    from airflow_provider_milvus.local_server import start_local_server, stop_local_server
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

    from testing.servers.embeddings_server import EmbeddingServer

    data_dir = tempfile.mkdtemp(prefix="ledger-requests-milvus-")
    server = start_local_server(data_dir)
    try:
        with EmbeddingServer(dimensions=32, api_key="sk-bench") as embeddings:
            os.environ["AIRFLOW_CONN_BENCH_MILVUS"] = json.dumps(
                {"conn_type": "milvus", "host": server.uri, "extra": {"timeout": 60}}
            )
            os.environ["AIRFLOW_CONN_BENCH_EMBEDDINGS"] = json.dumps(
                {"conn_type": "openai", "host": embeddings.base_url, "password": "sk-bench", "extra": {"model": "m"}}
            )
            from importlib.metadata import version

            from bench.machine import describe_commit, load_average

            print(f"# python -m bench.ledger_requests {' '.join(sys.argv[1:])}")
            print(f"# commit {describe_commit()}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
            print(
                f"# Milvus Lite {version('milvus-lite')} (gRPC, {server.uri}), pymilvus {version('pymilvus')}; "
                f"{os.cpu_count()} cores shared with other work, load {load_average()} at start"
            )
            print(f"# each source {args.chunks} chunks (chunk_size=200); round_trips = Milvus requests by phase")
            for sources in (int(n) for n in args.sources.split(",")):
                collection = f"ledger_{uuid.uuid4().hex[:8]}"
                documents = corpus(sources, args.chunks)
                for label, options in (
                    ("first", {}),
                    ("unchanged", {}),
                    ("unchanged, delete_missing", {"delete_missing": True}),
                ):
                    embeddings.reset_stats()
                    started = time.monotonic()
                    summary = MilvusAddDocumentsOperator(
                        task_id="ingest",
                        milvus_conn_id="bench_milvus",
                        embedding_conn_id="bench_embeddings",
                        collection_name=collection,
                        documents=documents,
                        replace_by="source",
                        chunk_size=200,
                        batch_size=500,
                        max_concurrency=4,
                        **options,
                    ).execute(context={})
                    print(
                        f"{sources:>6} sources, {label:<26} {time.monotonic() - started:7.2f} s  "
                        f"chunks {summary['chunks']:>6}  written {summary['written']:>6}  "
                        f"skipped_sources {summary['skipped_sources']:>6}  embedded {embeddings.stats.inputs:>6}  "
                        f"round_trips {json.dumps(summary['round_trips'], sort_keys=True)}",
                        flush=True,
                    )
    finally:
        stop_local_server(data_dir)


if __name__ == "__main__":
    main()
