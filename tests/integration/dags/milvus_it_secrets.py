"""DAGs for the secrets test: real successes and failures, deferred and inline, with secret-bearing connections."""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task
from milvus_it_common import DEFAULT_ARGS, DEFERRED, make_documents

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
)

INLINE: dict[str, Any] = DEFERRED | {"deferrable": False}
NO_RETRIES = DEFAULT_ARGS | {"retries": 0}


@task
def make_docs() -> list[dict[str, Any]]:
    return make_documents(get_current_context()["dag_run"].conf)


@dag(dag_id="milvus_it_secrets_ok", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_secrets_ok():
    docs = make_docs()
    add_deferred = MilvusAddDocumentsOperator(task_id="add_deferred", documents=docs, id_key="doc_id", **DEFERRED)
    add_inline = MilvusAddDocumentsOperator(task_id="add_inline", documents=docs, id_key="doc_id", **INLINE)
    search_deferred = MilvusSearchToXComOperator(
        task_id="search_deferred", queries=["rivers", "glaciers"], k=2, **DEFERRED
    )
    search_inline = MilvusSearchToXComOperator(task_id="search_inline", queries="volcanoes", k=2, **INLINE)
    delete_deferred = MilvusDeleteByExprOperator(
        task_id="delete_deferred", expr="group == {group}", expr_params={"group": "g2"}, **DEFERRED
    )
    add_deferred >> add_inline >> [search_deferred, search_inline] >> delete_deferred


@dag(
    dag_id="milvus_it_secrets_missing_collection",
    schedule=None,
    catchup=False,
    default_args=NO_RETRIES,
    tags=["integration"],
)
def milvus_it_secrets_missing_collection():
    MilvusSearchToXComOperator(task_id="search_deferred", queries=["rivers"], **DEFERRED)
    MilvusSearchToXComOperator(task_id="search_inline", queries=["rivers"], **INLINE)


@dag(dag_id="milvus_it_secrets_bad_key", schedule=None, catchup=False, default_args=NO_RETRIES, tags=["integration"])
def milvus_it_secrets_bad_key():
    docs = make_docs()
    bad_key = {"embedding_conn_id": "embeddings_badkey"}
    MilvusAddDocumentsOperator(task_id="add_deferred", documents=docs, id_key="doc_id", **(DEFERRED | bad_key))
    MilvusAddDocumentsOperator(task_id="add_inline", documents=docs, id_key="doc_id", **(INLINE | bad_key))


milvus_it_secrets_ok()
milvus_it_secrets_missing_collection()
milvus_it_secrets_bad_key()
