"""Client CPU per embedding request: the OpenAI SDK's ``embeddings`` resource vs the provider's lean one (issue 25).

Both through the same ``build_embeddings`` (LangChain ``OpenAIEmbeddings``, the same SDK client, pool,
retries and error classes); the only difference is ``async_client``: the SDK's resource (typed-dict
transform of the params, a pydantic object per vector) or ``AsyncLeanEmbeddingsResource`` (the same POST
through ``client.post``, the JSON read as it is). The embedding server runs in a child process, so the
process CPU time measured here is the client's alone.

    flock /tmp/bench.lock python -m bench.embedding_client    # -> bench/results/embedding-client.txt
"""

from __future__ import annotations

import argparse
import asyncio
import time
import types
from pathlib import Path

from bench.embedding_service import API_KEY, MODEL, EmbeddingService
from bench.machine import describe_commit, load_average

RESULTS = Path(__file__).resolve().parent / "results" / "embedding-client.txt"


async def _run(embeddings: object, texts: list[str], requests: int, concurrency: int) -> None:
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await embeddings.aembed_documents(texts)  # type: ignore[attr-defined]

    await asyncio.gather(*(one() for _ in range(requests)))


def measure(requests: int, batch: int, concurrency: int, rounds: int) -> dict[str, list[float]]:
    from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings

    texts = [f"chunk {i}: " + "a few words of ordinary text " * 16 for i in range(batch)]
    cpu: dict[str, list[float]] = {"sdk resource": [], "lean resource": []}
    with EmbeddingService(dimensions=64, latency=0.0, latency_per_input=0.0) as service:
        conn = types.SimpleNamespace(conn_type="openai", host=service.base_url, password=API_KEY, extra_dejson={})
        for _ in range(rounds):
            for name in cpu:
                embeddings = build_embeddings(EmbeddingSettings(conn_id="bench", model=MODEL), conn)
                if name == "sdk resource":
                    embeddings.async_client = embeddings.async_client._client.embeddings  # type: ignore[attr-defined]
                started = time.process_time()
                asyncio.run(_run(embeddings, texts, requests, concurrency))
                cpu[name].append((time.process_time() - started) / requests * 1000)
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    commit, load_at_start = describe_commit(), load_average()
    cpu = measure(args.requests, args.batch, args.concurrency, args.rounds)
    lines = [
        "Client CPU per embedding request (python -m bench.embedding_client), "
        f"{args.requests} requests of {args.batch} texts, {args.concurrency} at a time, 64 dims, "
        f"embedding server in a child process; commit {commit}; load average at start / end {load_at_start} / "
        f"{load_average()} (the shared 2-core machine); median of {args.rounds} rounds",
        "",
    ]
    for name, values in cpu.items():
        values.sort()
        lines.append(f"{name:<14} {values[len(values) // 2]:.2f} ms CPU per request (rounds: "
                     f"{', '.join(f'{v:.2f}' for v in values)})")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
