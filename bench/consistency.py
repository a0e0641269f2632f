"""What consistency level costs a search: ``python -m bench.consistency [--standalone]``.

Per consistency level, median of ``--repeat``: the limit's Milvus stage of "search 100" (7 nq-batched
requests of precomputed vectors at once, on a 1,000-entity collection created like the provider's), and
the whole operator core (``SearchJob(consistency_level=...)``: embeddings over loopback HTTP at 100 ms
per request, then the searches). The provider's collections default to Strong (a search task must see
an ingest that finished in another process); langchain-milvus, the tutorial's sync loop, creates its
collections with Session. Writes bench/results/consistency[-standalone].txt.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path

from bench import operators
from bench.embedding_service import EmbeddingService
from bench.limits import SEARCH_OUTPUT, _batches, create_collection, flush, rows_for
from bench.milvus_backend import milvus_backend
from bench.run_benchmark import RESULTS_DIR, TUNED, quiet_logs
from bench.workloads import SEARCH_K, TUTORIAL_CORPUS, documents, queries

LEVELS = ("Strong", "Bounded", "Session", "Eventually")
DIMENSIONS, BATCH, CONCURRENCY = 32, 16, 8


def search_seconds(uri: str, collection: str, vectors: list[list[float]], level: str) -> float:
    async def run() -> float:
        from pymilvus import AsyncMilvusClient

        client = AsyncMilvusClient(uri=uri)
        try:
            await client.list_collections()  # connected before timing, like the limit
            started = time.perf_counter()
            await asyncio.gather(
                *(
                    client.search(
                        collection, list(chunk), limit=SEARCH_K, output_fields=SEARCH_OUTPUT, consistency_level=level
                    )
                    for chunk in _batches(vectors, BATCH)
                )
            )
            return time.perf_counter() - started
        finally:
            await client.close()

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    quiet_logs()
    from pymilvus import MilvusClient

    from testing.servers.embeddings_server import embed_text

    vectors = [embed_text(q, DIMENSIONS) for q in queries(100)]
    with (
        milvus_backend(uri=None, standalone=args.standalone) as backend,
        EmbeddingService(dimensions=DIMENSIONS, latency=0.1, latency_per_input=0.0005) as embeddings,
    ):
        operators.configure_connections(backend.uri, embeddings.base_url)
        create_collection(backend.uri, "consistency", DIMENSIONS)
        client = MilvusClient(uri=backend.uri)
        client.insert("consistency", rows_for(documents(TUTORIAL_CORPUS), DIMENSIONS))
        client.close()
        flush(backend.uri, "consistency")
        lines = [
            f"search 100 queries (nq={BATCH}, {len(_batches(vectors, BATCH))} requests at once) over "
            f"{TUTORIAL_CORPUS:,} entities; {backend.description}; median of {args.repeat}",
            "Milvus stage: precomputed vectors, raw AsyncMilvusClient.search; operator core: SearchJob with the "
            "benchmark's search tuning, embeddings over loopback HTTP at 100 ms per request",
            "",
            "consistency level  Milvus stage s  operator core s",
        ]
        texts = queries(100)
        for level in LEVELS:
            raw = [search_seconds(backend.uri, "consistency", vectors, level) for _ in range(args.repeat)]
            core = [operators.search("consistency", texts, TUNED, consistency_level=level) for _ in range(args.repeat)]
            lines.append(f"{level:<17}  {statistics.median(raw):13.3f}  {statistics.median(core):15.3f}")
    path = args.results_dir / f"consistency{'-standalone' if args.standalone else ''}.txt"
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), f"\n-> {path}", sep="\n")


if __name__ == "__main__":
    main()
