"""The nightly corpus ingest as a DAG, for the benchmark's metadata-DB growth figure (``bench/nightly.py``).

One ``MilvusAddDocumentsOperator`` reading a folder by reference (``source_url``): no corpus text goes
through XCom. Settings come from the environment the benchmark sets for ``airflow dags test``.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

with DAG(
    dag_id="bench_nightly_corpus",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["benchmark"],
):
    MilvusAddDocumentsOperator(
        task_id="write_corpus",
        milvus_conn_id="bench_milvus",
        embedding_conn_id="bench_embeddings",
        collection_name=os.environ.get("BENCH_COLLECTION", "bench_nightly"),
        source_url=os.environ.get("BENCH_CORPUS", "/nonexistent"),
        chunk_size=500,
        chunk_overlap=50,
        replace_by="source",
        delete_missing=True,
        batch_size=int(os.environ.get("BENCH_BATCH_SIZE", "200")),
        max_concurrency=int(os.environ.get("BENCH_MAX_CONCURRENCY", "16")),
        deferrable=False,
    )
