"""DAGs for the multi-host tests: triggerer failover (big deferred ingest, delete, search) and several writers."""

from __future__ import annotations

from typing import Any

from airflow.sdk import dag, get_current_context, task
from milvus_it_common import DEFAULT_ARGS, DEFERRED, make_documents

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
)

# Failover runs must finish in their first try: the surviving triggerer takes the trigger over, no retry.
FAILOVER_ARGS = DEFAULT_ARGS | {"retries": 0}


@task
def make_docs() -> list[dict[str, Any]]:
    return make_documents(get_current_context()["dag_run"].conf)


@task
def make_queries() -> list[str]:
    conf = get_current_context()["dag_run"].conf
    topics = ("rivers", "mountains", "volcanoes", "glaciers", "deserts", "forests", "oceans", "islands")
    return [
        f"{conf.get('prefix', 'doc')} document {i} about {topics[i % len(topics)]}, and what is known about it"
        for i in range(int(conf["n"]))
    ]


@dag(dag_id="milvus_it_failover_add", schedule=None, catchup=False, default_args=FAILOVER_ARGS, tags=["integration"])
def milvus_it_failover_add():
    MilvusAddDocumentsOperator(
        task_id="add",
        documents=make_docs(),
        id_key="doc_id",
        batch_size=100,
        max_concurrency=4,
        milvus_conn_id="{{ dag_run.conf.get('milvus_conn_id', 'milvus_default') }}",
        **DEFERRED,
    )


@dag(dag_id="milvus_it_failover_delete", schedule=None, catchup=False, default_args=FAILOVER_ARGS, tags=["integration"])
def milvus_it_failover_delete():
    MilvusDeleteByExprOperator(
        task_id="delete",
        expr="group == {group}",
        expr_params={"group": "{{ dag_run.conf['group'] }}"},
        milvus_conn_id="{{ dag_run.conf.get('milvus_conn_id', 'milvus_default') }}",
        **DEFERRED,
    )


@dag(dag_id="milvus_it_failover_search", schedule=None, catchup=False, default_args=FAILOVER_ARGS, tags=["integration"])
def milvus_it_failover_search():
    MilvusSearchToXComOperator(
        task_id="search", queries=make_queries(), k=3, batch_size=16, max_concurrency=2, **DEFERRED
    )


# ----- several writers: overlapping sources, the same text for a source in every run ----------------------


def source_documents(sources: list[str], paragraphs: int) -> list[dict[str, Any]]:
    """Every run builds a source's document identically, so overlapping runs write the same chunks."""
    return [
        {
            "page_content": "\n\n".join(
                f"{source} paragraph {p}: notes about {source} and topic {p % 5}, written for the writers test."
                for p in range(paragraphs)
            ),
            "metadata": {"source": source},
        }
        for source in sources
    ]


@task
def make_source_docs() -> list[dict[str, Any]]:
    conf = get_current_context()["dag_run"].conf
    return source_documents(list(conf["sources"]), int(conf.get("paragraphs", 20)))


WRITER = {
    "chunk_size": 120,
    "replace_by": "source",
    "batch_size": 20,
    "max_concurrency": 2,
    "milvus_conn_id": "{{ dag_run.conf.get('milvus_conn_id', 'milvus_default') }}",
}


@dag(dag_id="milvus_it_writers_inline", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_writers_inline():
    MilvusAddDocumentsOperator(
        task_id="write", documents=make_source_docs(), **WRITER, **(DEFERRED | {"deferrable": False})
    )


@dag(dag_id="milvus_it_writers_deferred", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_writers_deferred():
    MilvusAddDocumentsOperator(task_id="write", documents=make_source_docs(), **WRITER, **DEFERRED)


# Rewrites every chunk of its sources, stored or not: on a server that keeps duplicate primary keys (2.3.5),
# a write path that inserted instead of upserting would store the sources the collection already holds twice.
@dag(dag_id="milvus_it_writers_forced", schedule=None, catchup=False, default_args=DEFAULT_ARGS, tags=["integration"])
def milvus_it_writers_forced():
    MilvusAddDocumentsOperator(task_id="write", documents=make_source_docs(), force=True, **WRITER, **DEFERRED)


milvus_it_failover_add()
milvus_it_failover_delete()
milvus_it_failover_search()
milvus_it_writers_inline()
milvus_it_writers_deferred()
milvus_it_writers_forced()
