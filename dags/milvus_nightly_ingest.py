"""
### Nightly ingest into Milvus

Reads every `.md`/`.txt` file in `corpus_dir`, splits it into overlapping chunks and upserts them
into `collection` with ids derived from file path + chunk position + text, so:

* re-running the same day writes the same primary keys (nothing new, nothing duplicated);
* a changed file replaces its chunks (`replace_by="source"` deletes its stale chunks);
* a deleted file's chunks are removed (`source not in {sources}`).

The write emits the `milvus://milvus_default/<collection>` Asset, which schedules `milvus_search`.

**Connections:** `milvus_default` (type `milvus`). With no embedding connection on it, the collection
uses Milvus's built-in BM25 full-text search (no model, no API key). Set *Embedding connection id*
and *Embedding model* on `milvus_default` for dense (hybrid) search.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusDeleteByExprOperator

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
        "corpus_dir": Param(CORPUS_DIR, type="string", description="Folder of .md/.txt files to ingest"),
        "collection": Param(COLLECTION, type="string"),
    },
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:

    @task
    def load_corpus(params: dict, ds_nodash: str) -> list[dict]:
        """One document per file; `source` is the path relative to the corpus folder."""
        root = Path(params["corpus_dir"])
        if not root.is_dir():
            raise FileNotFoundError(f"corpus_dir {root} does not exist")
        documents = []
        for path in sorted(p for p in root.rglob("*") if p.suffix in {".md", ".txt"} and p.is_file()):
            text = path.read_text(encoding="utf-8")
            if text.strip():
                documents.append({
                    "page_content": text,
                    "metadata": {"source": str(path.relative_to(root)), "ingested_on": int(ds_nodash)},
                })
        print(f"Loaded {len(documents)} files from {root}")
        return documents

    @task
    def current_sources(documents: list[dict]) -> dict:
        return {"sources": [doc["metadata"]["source"] for doc in documents]}

    documents = load_corpus()

    # [START howto_operator_milvus_add_documents]
    write_chunks = MilvusAddDocumentsOperator(
        task_id="write_chunks",
        collection_name="{{ params.collection }}",
        documents=documents,
        chunk_size=500,
        chunk_overlap=50,
        replace_by="source",
        batch_size=64,
        max_concurrency=4,
        outlets=[collection_asset],
    )
    # [END howto_operator_milvus_add_documents]

    remove_deleted_files = MilvusDeleteByExprOperator(
        task_id="remove_deleted_files",
        collection_name="{{ params.collection }}",
        expr="source not in {sources}",
        expr_params=current_sources(documents),
    )

    write_chunks >> remove_deleted_files
