"""LlamaIndex's ``IngestionPipeline`` as a benchmark peer (issue 25); runs in ``.venv-llamaindex``, not the provider's env.

One run: read the folder (``SimpleDirectoryReader``, recursive, file name as document id), split it
(``SentenceSplitter`` at 500/50 characters - a character "tokenizer", so nothing is downloaded at run time
and the chunk sizes match ours), embed (``OpenAIEmbedding`` against the same loopback endpoint) and store
in a ``MilvusVectorStore`` on the same server, with a docstore persisted in ``--state`` across runs and
``DocstoreStrategy.UPSERTS_AND_DELETE`` (LlamaIndex's answer to re-runs and deleted files).
With ``--batch-size``/``--concurrency``: ``embed_batch_size`` and ``num_workers`` (embedding requests at
once) set to ours; without: LlamaIndex's defaults (batch 100, every batch requested at once). Prints one
JSON line: seconds (the whole run after the imports, reading included), chunks, settings, peak RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from pathlib import Path

import psutil


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("--folder", "--uri", "--collection", "--embedding-url", "--api-key", "--model", "--state"):
        parser.add_argument(name, required=True)
    parser.add_argument("--dimensions", type=int, required=True)
    parser.add_argument("--chunk-size", type=int, default=500)
    parser.add_argument("--chunk-overlap", type=int, default=50)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--concurrency", type=int)
    args = parser.parse_args()

    peak = [psutil.Process().memory_info().rss]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], psutil.Process().memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()

    from llama_index.core import SimpleDirectoryReader
    from llama_index.core.ingestion import DocstoreStrategy, IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.embeddings.openai import OpenAIEmbedding
    from llama_index.vector_stores.milvus import MilvusVectorStore

    started = time.perf_counter()  # after the imports, as ours is timed from execute() on
    state = Path(args.state)
    docstore_path = state / "docstore.json"
    docstore = (
        SimpleDocumentStore.from_persist_path(str(docstore_path)) if docstore_path.exists() else SimpleDocumentStore()
    )
    embedding_kwargs = {}
    if args.batch_size:
        embedding_kwargs = {"embed_batch_size": args.batch_size, "num_workers": args.concurrency}
    embed_model = OpenAIEmbedding(
        model_name=args.model, api_base=args.embedding_url, api_key=args.api_key, max_retries=6, **embedding_kwargs
    )
    store = MilvusVectorStore(uri=args.uri, collection_name=args.collection, dim=args.dimensions, overwrite=False)
    splitter = SentenceSplitter(chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap, tokenizer=list)
    pipeline = IngestionPipeline(
        transformations=[splitter, embed_model],
        vector_store=store,
        docstore=docstore,
        docstore_strategy=DocstoreStrategy.UPSERTS_AND_DELETE,
    )
    documents = SimpleDirectoryReader(args.folder, recursive=True, filename_as_id=True).load_data()
    nodes = asyncio.run(pipeline.arun(documents=documents))
    state.mkdir(parents=True, exist_ok=True)
    docstore.persist(str(docstore_path))
    seconds = time.perf_counter() - started
    done.set()
    stored = store.client.query(args.collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
    chunks = stored[0]["count(*)"]
    settings = (
        f"embed_batch_size={embed_model.embed_batch_size}, num_workers={embed_model.num_workers} (requests at once)"
        if args.batch_size
        else f"defaults: embed_batch_size={embed_model.embed_batch_size}, num_workers=None (every batch at once)"
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "chunks": chunks,
                "settings": settings + ", SentenceSplitter 500/50 chars, docstore UPSERTS_AND_DELETE",
                "peak_rss_mb": peak[0] / 2**20,
                "notes": f"documents {len(documents)}, nodes embedded and written {len(nodes)}",
            }
        )
    )


if __name__ == "__main__":
    main()
