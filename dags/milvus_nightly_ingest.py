"""
### Nightly ingest into Milvus

Keeps `collection` in step with the `.md`/`.txt` files under `corpus_dir` (a local folder, or an
object-storage URL such as `s3://bucket/docs` with `source_conn_id`). The write task reads and splits
the files itself, so no corpus text passes through XCom or the metadata DB, and:

* chunk ids come from each file's path and the chunk's text, never from the listing order;
* chunks already stored with the same content are skipped: an unchanged night embeds nothing;
* an edited file re-embeds only its changed chunks, and its stale chunks are deleted (`replace_by`);
* a deleted file's chunks are removed (`delete_missing`).

The write emits the `milvus://milvus_default/<collection>` Asset, which schedules `milvus_search`;
its XCom is a small summary (documents, chunks, written, unchanged, stale and vanished counts).

**Connections:** `milvus_default` (type `milvus`). With no embedding connection on it, the collection
uses Milvus's built-in BM25 full-text search (no model, no API key). Set *Embedding connection id*
and *Embedding model* on `milvus_default` for dense (hybrid) search.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, Param

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_COLLECTION", "sample_docs")
CORPUS_DIR = os.environ.get("MILVUS_EXAMPLE_CORPUS", str(Path(__file__).parent / "sample_corpus"))
collection_asset = Asset(f"milvus://milvus_default/{COLLECTION}")

with DAG(
    dag_id="milvus_nightly_ingest",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 2, "retry_delay": pendulum.duration(seconds=30)},
    params={
        "corpus_dir": Param(CORPUS_DIR, type="string", description="Folder (or object-storage URL) of .md/.txt files"),
        "collection": Param(COLLECTION, type="string"),
    },
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:
    # [START howto_operator_milvus_add_documents]
    write_chunks = MilvusAddDocumentsOperator(
        task_id="write_chunks",
        collection_name="{{ params.collection }}",
        source_url="{{ params.corpus_dir }}",
        source_glob=["**/*.md", "**/*.txt"],
        chunk_size=500,
        chunk_overlap=50,
        replace_by="source",
        delete_missing=True,
        batch_size=64,
        max_concurrency=4,
        outlets=[collection_asset],
    )
    # [END howto_operator_milvus_add_documents]
