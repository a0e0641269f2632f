"""Triggers are at-least-once: running the same deferred trigger twice must leave the same data.

On Milvus Lite, which deduplicates primary keys on insert, and on the real standalone 2.3.5, which keeps
duplicates (an insert path that re-ran would show there as twice the rows).
"""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusUpsertOperator,
)
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger

from tests.faults.conftest import assert_exact_ids, documents, run_trigger

N_DOCS = 300


@pytest.fixture(params=["lite", pytest.param("standalone", marks=pytest.mark.standalone)])
def backend(request: pytest.FixtureRequest, make_milvus_conn) -> tuple[str, str]:
    """(uri, connection id) of the session's Milvus Lite server or its real standalone 2.3.5 server."""
    if request.param == "lite":
        uri = request.getfixturevalue("milvus_lite").uri
    else:
        uri = request.getfixturevalue("milvus_standalone").uri
    return uri, make_milvus_conn(uri, timeout=30)


def _snapshot(uri: str, collection: str) -> list[tuple]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        rows = client.query(
            collection,
            filter='pk != ""',
            output_fields=["pk", "text", "source", "n"],
            limit=16384,
            consistency_level="Strong",
        )
    finally:
        client.close()
    return sorted((r["pk"], r["text"], r.get("source"), r.get("n")) for r in rows)


def _defer(op) -> MilvusOperationTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context={})
    return deferred.value.trigger


def _run(trigger: MilvusOperationTrigger) -> dict:
    """A fresh trigger from the serialized kwargs, as a triggerer restart would build it."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_milvus.triggers.milvus.MilvusOperationTrigger"
    return run_trigger(MilvusOperationTrigger(**kwargs))


def test_write_trigger_run_twice_leaves_the_same_data(
    backend, embedding_conn, embeddings, collection_name, figures, tmp_path
):
    uri, conn = backend
    op = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=documents(N_DOCS),
        batch_size=40,
        max_concurrency=4,
        deferrable=True,
        inline_max_items=0,
        staging_url=str(tmp_path),
    )
    trigger = _defer(op)
    first = _run(trigger)
    assert first["status"] == "success", first.get("message")
    after_first = _snapshot(uri, collection_name)
    second = _run(trigger)  # the triggerer restarted: the same trigger runs again
    figures.fault("trigger_rerun")
    # Recorded (expected vs found) before anything is asserted about the second run's data.
    assert_exact_ids(uri, collection_name, {row[0] for row in after_first}, figures)
    assert second["status"] == "success", second.get("message")
    assert _snapshot(uri, collection_name) == after_first
    assert len(after_first) == N_DOCS


def test_upsert_trigger_run_twice_after_a_change_leaves_the_changed_data_once(
    backend, embedding_conn, embeddings, collection_name, figures, tmp_path
):
    uri, conn = backend
    base = documents(N_DOCS)
    MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=base,
        id_key="doc_id",
    ).execute(context={})
    changed = [{**d, "page_content": d["page_content"] + " revised"} for d in base[:150]]
    trigger = _defer(
        MilvusUpsertOperator(
            task_id="upsert",
            milvus_conn_id=conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            documents=changed,
            id_key="doc_id",
            deferrable=True,
            inline_max_items=0,
            staging_url=str(tmp_path),
        )
    )
    assert _run(trigger)["status"] == "success"
    after_first = _snapshot(uri, collection_name)
    second = _run(trigger)
    figures.fault("trigger_rerun")
    assert_exact_ids(uri, collection_name, {d["metadata"]["doc_id"] for d in base}, figures)
    assert second["status"] == "success", second.get("message")
    assert _snapshot(uri, collection_name) == after_first
    assert sum(text.endswith(" revised") for _, text, _, _ in after_first) == 150


def test_delete_trigger_run_twice_deletes_the_same_entities_once(
    backend, embedding_conn, embeddings, collection_name, figures, tmp_path
):
    uri, conn = backend
    docs = documents(N_DOCS)
    MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=docs,
        id_key="doc_id",
    ).execute(context={})
    trigger = _defer(
        MilvusDeleteByExprOperator(
            task_id="delete",
            milvus_conn_id=conn,
            embedding_conn_id=embedding_conn,
            collection_name=collection_name,
            expr="source in {sources}",
            expr_params={"sources": ["doc/1.md", "doc/2.md"]},
            deferrable=True,
            staging_url=str(tmp_path),
        )
    )
    first = _run(trigger)
    second = _run(trigger)
    figures.fault("trigger_rerun")
    kept = {d["metadata"]["doc_id"] for d in docs if d["metadata"]["source"] not in ("doc/1.md", "doc/2.md")}
    assert_exact_ids(uri, collection_name, kept, figures)
    assert first["status"] == second["status"] == "success", (first, second)
    assert first["result"]["deleted"] == 12
    assert second["result"]["deleted"] == 0
