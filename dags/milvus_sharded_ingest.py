"""
### Sharded ingest into Milvus: many workers, one cleanup

The nightly ingest of `milvus_nightly_ingest`, fanned out over mapped tasks for corpora of 100,000+
files (a Celery or Kubernetes executor runs the shards on many workers). See docs/sharding.md.

1. `plan_shards` lists `corpus_dir` once to size the fan-out and returns only shard numbers
   (`[{"shard_index": 0, "shard_count": 4}, ...]`): XCom stays the same size at any corpus size, no
   path passes through it.
2. `write_shard` maps `MilvusAddDocumentsOperator` over the shards. Each lists the folder (one LIST pass,
   no request per object), keeps the files whose name hashes to its shard, and writes them as a normal
   run: unchanged files (by their listing: ETag and size, or size and mtime) are not even read, and a
   retried shard rewrites nothing it already wrote. A shard never deletes: `delete_missing` on a shard
   would remove every other shard's sources, so the operator refuses it.
3. `remove_vanished` runs once, after every shard succeeded: the same operator over the whole folder with
   `delete_missing=True`. It lists the folder again, reads no file the shards just wrote (their listing
   is in the source ledger), and deletes the sources that are no longer listed.

**Connections:** `milvus_default` (type `milvus`); for `s3://` corpora, `source_conn_id` (an `aws`
connection). Embeddings as in `milvus_nightly_ingest`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_COLLECTION", "sample_docs")
CORPUS_DIR = os.environ.get("MILVUS_EXAMPLE_CORPUS", str(Path(__file__).parent / "sample_corpus"))
SOURCE_CONN_ID = os.environ.get("MILVUS_EXAMPLE_SOURCE_CONN_ID") or None
GLOB = ["**/*.md", "**/*.txt"]
collection_asset = Asset(f"milvus://milvus_default/{COLLECTION}")

with DAG(
    dag_id="milvus_sharded_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "corpus_dir": Param(CORPUS_DIR, type="string", description="Folder (or object-storage URL) of .md/.txt files"),
        "collection": Param(COLLECTION, type="string"),
        "shards": Param(4, type="integer", minimum=1, description="Mapped write tasks (at most one per file)"),
    },
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:

    @task
    def plan_shards(corpus_dir: str, shards: int | str) -> list[dict[str, int]]:
        """List the corpus once to size the fan-out; return shard numbers only (flat XCom at any corpus size)."""
        from airflow_provider_milvus.core.files import list_sources

        files = len(list_sources(corpus_dir, glob=GLOB, conn_id=SOURCE_CONN_ID))
        count = max(1, min(int(shards), files))
        return [{"shard_index": index, "shard_count": count} for index in range(count)]

    shards = plan_shards(corpus_dir="{{ params.corpus_dir }}", shards="{{ params.shards }}")

    # [START howto_operator_milvus_sharded_ingest]
    common = dict(
        collection_name="{{ params.collection }}",
        source_url="{{ params.corpus_dir }}",
        source_glob=GLOB,
        source_conn_id=SOURCE_CONN_ID,
        chunk_size=500,
        chunk_overlap=50,
        replace_by="source",
        batch_size=64,
        max_concurrency=4,
    )
    write_shard = MilvusAddDocumentsOperator.partial(task_id="write_shard", **common).expand_kwargs(shards)
    remove_vanished = MilvusAddDocumentsOperator(
        task_id="remove_vanished", delete_missing=True, outlets=[collection_asset], **common
    )
    # [END howto_operator_milvus_sharded_ingest]
    write_shard >> remove_vanished
