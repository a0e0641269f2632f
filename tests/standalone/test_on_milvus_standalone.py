"""The hook, the store and the operators against a real Milvus standalone server.

Milvus 2.3.5 has no BM25 function, so collections here use dense embeddings from the loopback
embeddings API. Unlike Milvus Lite, a real server keeps duplicate primary keys on insert: these
tests prove the provider's writes stay idempotent anyway.
"""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

from tests.test_operators import MODES, docs, run


def count(client, collection: str) -> int:
    return client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]


def test_test_connection_reports_the_server_version(standalone_conn_id):
    ok, message = MilvusHook(standalone_conn_id).test_connection()
    assert ok, message
    assert "Connected to Milvus v2.3" in message


def test_vector_store_round_trips_sync_and_async(standalone_conn_id, embedding_conn_id, collection_name):
    store = MilvusHook(standalone_conn_id).get_vector_store(collection_name, embedding_conn_id=embedding_conn_id)
    store.add_texts(["milvus stores vectors", "airflow schedules tasks"], ids=["a", "b"])
    assert store.similarity_search("schedules tasks", k=1)[0].page_content == "airflow schedules tasks"

    async def search_async() -> str:
        store = MilvusHook(standalone_conn_id).get_vector_store(collection_name, embedding_conn_id=embedding_conn_id)
        return (await store.asimilarity_search("stores vectors", k=1))[0].page_content

    assert asyncio.run(search_async()) == "milvus stores vectors"


def test_bm25_on_a_server_without_it_fails_with_advice(standalone_conn_id, collection_name, standalone_client):
    # Milvus 2.3.5 has no BM25 function: full-text search itself is tested on Milvus Lite 3.x.
    with pytest.raises(MilvusProviderError, match="no BM25 full-text search.*embedding_conn_id"):
        MilvusAddDocumentsOperator(
            task_id="add", milvus_conn_id=standalone_conn_id, collection_name=collection_name, documents=["text"]
        ).execute(context={})
    assert not standalone_client.has_collection(collection_name), "no half-created collection is left behind"


@pytest.mark.parametrize("mode", MODES)
def test_rerunning_add_never_duplicates_on_a_real_server(
    mode, standalone_conn_id, embedding_conn_id, collection_name, standalone_client
):
    def add():
        return MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=standalone_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=collection_name,
            documents=docs(150),
            batch_size=40,
        )

    run(add(), mode)
    run(add(), mode)
    assert count(standalone_client, collection_name) == 150


@pytest.mark.parametrize("mode", MODES)
def test_upsert_replaces_by_id_on_a_real_server(
    mode, standalone_conn_id, embedding_conn_id, collection_name, standalone_client
):
    def upsert(records):
        return MilvusUpsertOperator(
            task_id="u",
            milvus_conn_id=standalone_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=collection_name,
            documents=records,
            id_key="record_id",
        )

    run(upsert([{"page_content": f"v1 {i}", "metadata": {"record_id": f"r{i}"}} for i in range(120)]), mode)
    run(upsert([{"page_content": "v2 7", "metadata": {"record_id": "r7"}}]), mode)
    rows = standalone_client.query(
        collection_name, filter='pk == "r7"', output_fields=["text"], consistency_level="Strong"
    )
    assert [r["text"] for r in rows] == ["v2 7"]
    assert count(standalone_client, collection_name) == 120


@pytest.mark.parametrize("mode", MODES)
def test_delete_and_search_on_a_real_server(
    mode, standalone_conn_id, embedding_conn_id, collection_name, standalone_client
):
    run(
        MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=standalone_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=collection_name,
            documents=docs(200),
        ),
        "inline",
    )
    result = run(
        MilvusDeleteByExprOperator(
            task_id="d",
            milvus_conn_id=standalone_conn_id,
            collection_name=collection_name,
            expr="source == {s}",
            expr_params={"s": "file0.md"},
        ),
        mode,
    )
    assert result["deleted"] == 40
    assert count(standalone_client, collection_name) == 160
    hits = run(
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=standalone_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=collection_name,
            queries=["airflow tasks"],
            k=3,
            expr="source != {s}",
            expr_params={"s": "file1.md"},
        ),
        mode,
    )
    assert len(hits[0]) == 3
    assert all(h["metadata"]["source"] not in ("file0.md", "file1.md") for h in hits[0])


def test_unknown_collection_fails_clearly_on_a_real_server(standalone_conn_id):
    with pytest.raises(MilvusProviderError, match="does not exist"):
        MilvusSearchToXComOperator(
            task_id="s", milvus_conn_id=standalone_conn_id, collection_name="nope", queries="x"
        ).execute(context={})
