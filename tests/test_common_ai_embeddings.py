"""Embeddings from a ``langchain`` connection of apache-airflow-providers-common-ai, end to end.

The connection is what common-ai documents (host = base URL, password = API key, extra ``embed_model`` =
``provider:model``), pointed at the loopback OpenAI-compatible server, which rejects requests without the key.
Dense ingest and search run inline and deferred; the key must reach the server and nothing else.
"""

from __future__ import annotations

import json
import logging

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings, embedding_secrets
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusSearchToXComOperator

from tests.conftest import EMBEDDING_API_KEY, EMBEDDING_DIMENSIONS
from tests.test_operators import docs, run, stored

pytest.importorskip("airflow.providers.common.ai.hooks.langchain", reason="needs the [common-ai] extra")
pytest.importorskip("langchain.embeddings", reason="needs apache-airflow-providers-common-ai[langchain]")

CONN_ID = "langchain_embed_test"


def langchain_connection(base_url: str, **extra: object) -> str:
    return json.dumps(
        {
            "conn_type": "langchain",
            "host": base_url,
            "password": EMBEDDING_API_KEY,
            "extra": {"embed_model": "openai:test-embedding", "max_retries": 2, **extra},
        }
    )


@pytest.fixture
def langchain_conn_id(embeddings, monkeypatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", langchain_connection(embeddings.base_url))
    return CONN_ID


def get_conn(conn_id: str):
    from airflow_provider_milvus.version_compat import BaseHook

    return BaseHook.get_connection(conn_id)


def test_a_langchain_connection_builds_openai_embeddings_without_a_tokenizer(langchain_conn_id, embeddings):
    conn = get_conn(langchain_conn_id)
    built = build_embeddings(EmbeddingSettings(conn_id=langchain_conn_id), conn)
    assert type(built).__name__ == "OpenAIEmbeddings"
    assert built.model == "test-embedding"
    assert built.check_embedding_ctx_length is False  # else tiktoken downloads its vocabulary at run time
    assert str(built.openai_api_base) == embeddings.base_url
    assert embedding_secrets(conn) == [EMBEDDING_API_KEY]
    embeddings.reset_stats()
    assert len(built.embed_query("hello")) == EMBEDDING_DIMENSIONS
    assert embeddings.stats.authorization_headers == [f"Bearer {EMBEDDING_API_KEY}"]


def test_the_operator_model_wins_and_takes_the_connection_provider(langchain_conn_id):
    conn = get_conn(langchain_conn_id)
    built = build_embeddings(EmbeddingSettings(conn_id=langchain_conn_id, model="other-model", dimensions=8), conn)
    assert (built.model, built.dimensions) == ("other-model", 8)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"embed_model": ""}, "No embedding model for connection"),
        ({"embed_model": "nosuchvendor:model-x"}, "nosuchvendor"),
    ],
)
def test_a_bad_model_is_named_and_the_key_is_not(embeddings, monkeypatch, extra, message):
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", langchain_connection(embeddings.base_url, **extra))
    with pytest.raises(MilvusProviderError, match=message) as raised:
        build_embeddings(EmbeddingSettings(conn_id=CONN_ID), get_conn(CONN_ID))
    assert EMBEDDING_API_KEY not in str(raised.value)


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_dense_ingest_and_search_through_a_langchain_connection(
    mode, milvus_conn_id, langchain_conn_id, embeddings, collection_name, milvus_client, caplog
):
    caplog.set_level(logging.DEBUG)
    embeddings.reset_stats()
    add = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        documents=docs(60),
        embedding_conn_id=langchain_conn_id,
        batch_size=20,
    )
    summary = run(add, mode)
    assert summary["written"] == 60
    assert len(stored(milvus_client, collection_name)) == 60
    vector_fields = [
        f["name"]
        for f in milvus_client.describe_collection(collection_name)["fields"]
        if f["type"].name == "FLOAT_VECTOR"
    ]
    assert len(vector_fields) == 1, "a dense collection"
    assert embeddings.stats.inputs >= 60

    search = MilvusSearchToXComOperator(
        task_id="search",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        embedding_conn_id=langchain_conn_id,
        queries=["doc 7 about milvus vectors"],
        k=3,
    )
    (hits,) = run(search, mode)
    assert hits
    assert hits[0]["page_content"] == "doc 7 about milvus vectors"

    assert embeddings.stats.authorization_headers
    assert set(embeddings.stats.authorization_headers) == {f"Bearer {EMBEDDING_API_KEY}"}
    assert EMBEDDING_API_KEY not in caplog.text
    assert EMBEDDING_API_KEY not in json.dumps(summary) + json.dumps(hits)


def test_the_trigger_row_holds_the_connection_id_not_the_key(milvus_conn_id, langchain_conn_id, collection_name):
    add = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        documents=docs(5),
        embedding_conn_id=langchain_conn_id,
        deferrable=True,
        inline_max_items=0,
    )
    with pytest.raises(TaskDeferred) as deferred:
        add.execute(context={})
    _, kwargs = deferred.value.trigger.serialize()
    row = json.dumps(kwargs)
    assert langchain_conn_id in row
    assert EMBEDDING_API_KEY not in row
