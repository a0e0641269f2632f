"""DAGs that exercise the Milvus operators deferred under a real scheduler + triggerer."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, get_current_context, task
from milvus_it_common import DEFAULT_ARGS, DEFERRED, make_documents

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)


@task
def make_docs() -> list[dict[str, Any]]:
    return make_documents(get_current_context()["dag_run"].conf)


@dag(dag_id="milvus_it_add", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_add():
    MilvusAddDocumentsOperator(
        task_id="add", documents=make_docs(), id_key="doc_id", batch_size=25, max_concurrency=4, **DEFERRED
    )


@dag(dag_id="milvus_it_bulk_add", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_bulk_add():
    MilvusAddDocumentsOperator(
        task_id="add", documents=make_docs(), id_key="doc_id", batch_size=100, max_concurrency=4, **DEFERRED
    )


@dag(dag_id="milvus_it_upsert", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_upsert():
    MilvusUpsertOperator(
        task_id="upsert", documents=make_docs(), id_key="doc_id", batch_size=10, max_concurrency=2, **DEFERRED
    )


@dag(dag_id="milvus_it_delete", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_delete():
    MilvusDeleteByExprOperator(
        task_id="delete",
        expr="group == {group}",
        expr_params={"group": "{{ dag_run.conf['group'] }}"},
        batch_size=20,
        max_concurrency=2,
        **DEFERRED,
    )


@dag(dag_id="milvus_it_search", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_search():
    search = MilvusSearchToXComOperator(
        task_id="search", queries="{{ dag_run.conf['queries'] }}", k=3, max_concurrency=2, **DEFERRED
    )

    @task
    def use_hits(hits: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """A downstream task reading the search results from XCom as plain JSON."""
        return {
            "queries": len(hits),
            "hits": [len(per_query) for per_query in hits],
            "top": [per_query[0]["page_content"] if per_query else None for per_query in hits],
            "top_ids": [per_query[0]["metadata"].get("doc_id") if per_query else None for per_query in hits],
            "scores_are_floats": all(isinstance(h["score"], float) for per_query in hits for h in per_query),
        }

    use_hits(search.output)


@dag(
    dag_id="milvus_it_timeout",
    schedule=None,
    catchup=False,
    default_args=DEFAULT_ARGS | {"retries": 0},
    tags=["integration"],
)
def milvus_it_timeout():
    MilvusAddDocumentsOperator(
        task_id="add", documents=make_docs(), id_key="doc_id", **(DEFERRED | {"timeout": timedelta(seconds=5)})
    )


@dag(dag_id="milvus_it_inline", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_inline():
    docs = make_docs()
    small = MilvusAddDocumentsOperator(
        task_id="add_small",
        documents="{{ ti.xcom_pull('make_docs')[:5] }}",
        id_key="doc_id",
        **(DEFERRED | {"inline_max_items": 10}),
    )
    big = MilvusAddDocumentsOperator(
        task_id="add_big", documents=docs, id_key="doc_id", **(DEFERRED | {"inline_max_items": 10})
    )
    docs >> [small, big]
    small >> big


milvus_it_add()
milvus_it_bulk_add()
milvus_it_upsert()
milvus_it_delete()
milvus_it_search()
milvus_it_timeout()
milvus_it_inline()
