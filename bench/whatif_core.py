"""Measure proposed core changes from the outside, without editing the core: ``python -m bench.whatif_core``.

1. Search 100 over 1k (the benchmark's workload), as is vs with ``OpenAIEmbeddings`` given
   ``http_client`` / ``http_async_client`` built on one process-wide SSL context (``langchain_openai``
   patched where ``embeddings.py`` imports it): each default construction builds two SSL contexts.
2. The unchanged re-run's lookup (``delete_missing``: every stored row of the scope) on a collection of
   ``--rows`` chunks: all output fields (text + metadata, what the core reads to compare content) vs only
   the primary key and ``source`` (what a stored content digest would need), via the same sync
   ``query_iterator`` the core uses.

3. Client CPU per embedding input: langchain-openai (the OpenAI SDK already asks for base64 and decodes it
   with numpy) vs a raw httpx POST + numpy decode.

Writes bench/results/whatif[-standalone].txt.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="bench-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import argparse
import statistics
import time

from bench import limits, operators
from bench.embedding_service import EmbeddingService
from bench.machine import describe_commit, load_average
from bench.milvus_backend import milvus_backend
from bench.run_benchmark import RESULTS_DIR, TUNED, quiet_logs
from bench.workloads import TUTORIAL_CORPUS, documents, queries


def median_of(run, reps: int) -> float:
    return statistics.median(run() for _ in range(reps))


def client_cpu(batches: int = 20, batch: int = 200) -> list[str]:
    """Client-side CPU per embedding input: langchain-openai's ``aembed_documents`` vs a raw httpx POST with
    numpy base64 decoding (what ``limits`` does), against a zero-latency server, 32 and 1,536 dimensions."""
    import asyncio

    import httpx
    from langchain_openai import OpenAIEmbeddings

    from bench.embedding_service import API_KEY, MODEL

    texts = [f"text number {i} " * 20 for i in range(batch)]
    out = []
    for dims in (32, 1536):
        with EmbeddingService(dimensions=dims, latency=0.0, latency_per_input=0.0) as svc:

            async def langchain() -> None:
                embeddings = OpenAIEmbeddings(
                    model=MODEL, base_url=svc.base_url, api_key=API_KEY, check_embedding_ctx_length=False
                )
                for _ in range(batches):
                    await embeddings.aembed_documents(texts)
                await embeddings.async_client._client.close()

            async def raw() -> None:
                async with httpx.AsyncClient(
                    base_url=svc.base_url, headers={"Authorization": f"Bearer {API_KEY}"}
                ) as http:
                    for _ in range(batches):
                        await limits._embed(http, texts)

            cpu = {}
            for name, fn in (("langchain-openai aembed_documents", langchain), ("raw httpx + numpy base64", raw)):
                started = time.process_time()
                asyncio.run(fn())
                cpu[name] = 1000 * (time.process_time() - started) / (batches * batch)
            out.append(
                f"client CPU per embedding input, {dims} dims, {batches} requests of {batch}: "
                + "; ".join(f"{k} {v:.3f} ms" for k, v in cpu.items())
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--standalone", action="store_true")
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    quiet_logs()
    lines = [f"commit {describe_commit()}; load at start {load_average()}"]
    with (
        EmbeddingService(dimensions=32, latency=0.1, latency_per_input=0.0005) as emb,
        milvus_backend(uri=None, standalone=args.standalone) as backend,
    ):
        lines.append(f"backend: {backend.description}")
        operators.configure_connections(backend.uri, emb.base_url)
        operators.prepare("whatif_small", documents(TUTORIAL_CORPUS))
        qs = queries(100)
        as_is = median_of(lambda: operators.search("whatif_small", qs, TUNED), args.reps)

        import ssl

        import langchain_openai
        import openai

        shared = ssl.create_default_context()
        original = langchain_openai.OpenAIEmbeddings

        def with_shared_context(**kwargs):
            kwargs.setdefault("http_client", openai.DefaultHttpxClient(verify=shared))
            kwargs.setdefault("http_async_client", openai.DefaultAsyncHttpxClient(verify=shared))
            return original(**kwargs)

        langchain_openai.OpenAIEmbeddings = with_shared_context  # what embeddings.py imports at call time
        try:
            with_cache = median_of(lambda: operators.search("whatif_small", qs, TUNED), args.reps)
        finally:
            langchain_openai.OpenAIEmbeddings = original
        lines.append(
            f"search 100 over 1k, median of {args.reps}: as is {as_is:.3f} s; OpenAIEmbeddings given http "
            f"clients on one process-wide SSL context {with_cache:.3f} s (saves {as_is - with_cache:.3f} s "
            "per run)"
        )

        name = "whatif_lookup"
        limits.create_collection(backend.uri, name, 32)
        docs = documents(args.rows)
        for doc in docs:
            doc.page_content = (doc.page_content + " ") * 8  # ~500-character chunks like the nightly corpus
            doc.metadata["source"] = f"file_{int(doc.metadata['id'].split('_')[1]) // 30}.py"
        rows = limits.rows_for(docs, 32)
        limits.milvus_insert(backend.uri, name, rows, batch=2000, concurrency=2)
        limits.flush(backend.uri, name)
        from pymilvus import MilvusClient

        client = MilvusClient(uri=backend.uri)
        try:

            def iterate(fields: list[str]) -> float:
                started = time.perf_counter()
                iterator = client.query_iterator(name, batch_size=16384, filter='pk != ""', output_fields=fields)
                count = 0
                while batch := iterator.next():
                    count += len(batch)
                iterator.close()
                assert count == args.rows, count
                return time.perf_counter() - started

            full = median_of(lambda: iterate(["pk", "text", "$meta"]), 3)
            keys = median_of(lambda: iterate(["pk", "source"]), 3)
        finally:
            client.drop_collection(name)
            client.close()
        lines.append(
            f"lookup of all {args.rows:,} stored chunks (query_iterator, 16,384 per page), median of 3: "
            f"pk + text + $meta {full:.3f} s; pk + source only {keys:.3f} s"
        )
    lines += client_cpu()
    lines.append(f"load at end {load_average()}")
    path = RESULTS_DIR / f"whatif{'-standalone' if args.standalone else ''}.txt"
    path.write_text("\n".join(lines) + "\n")
    print(path.read_text())


if __name__ == "__main__":
    main()
