"""Behaviour the README and docstrings promise, each with a test that fails when it breaks.

Real Milvus Lite server and loopback embeddings; deferred runs go through the real trigger.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_milvus.core.limits import MAX_NQ
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
)
from airflow_provider_milvus.triggers.milvus import MAX_INLINE_EVENT_BYTES

from tests.conftest import milvus_connection_json
from tests.test_operators import add, docs, run, stored


def defer(operator) -> TaskDeferred:
    operator.deferrable, operator.inline_max_items = True, 0
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    return deferred.value


def test_a_result_above_32_kib_comes_back_by_reference_and_is_removed(milvus_conn_id, collection_name, tmp_path):
    run(add(collection_name, milvus_conn_id, docs(200)), "inline")
    operator = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        queries=[f"airflow tasks {i}" for i in range(60)],
        k=10,
        staging_url=str(tmp_path),
    )
    deferred = defer(operator)
    event = asyncio.run(deferred.trigger.run().__anext__()).payload
    assert "result" not in event
    assert event["result_ref"].startswith(str(tmp_path))
    hits = operator.execute_complete(context={}, event=event, **(deferred.kwargs or {}))
    assert len(json.dumps(hits)) > MAX_INLINE_EVENT_BYTES
    assert len(hits) == 60
    assert not list(tmp_path.iterdir()), "the staged result is removed once read"


def test_a_5000_chunk_ingest_has_a_trigger_row_under_4_kib(milvus_conn_id, collection_name, tmp_path):
    deferred = defer(add(collection_name, milvus_conn_id, docs(5000), staging_url=str(tmp_path)))
    _, kwargs = deferred.trigger.serialize()
    assert len(json.dumps(kwargs)) < 4096
    assert kwargs["job"]["documents_ref"]


def test_a_long_query_list_is_staged_not_put_in_the_trigger_row(milvus_conn_id, collection_name, tmp_path):
    run(add(collection_name, milvus_conn_id, docs(20)), "inline")
    queries = [f"query number {i} about airflow tasks and milvus vectors" for i in range(800)]
    operator = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        queries=queries,
        k=1,
        staging_url=str(tmp_path),
    )
    deferred = defer(operator)
    _, kwargs = deferred.trigger.serialize()
    assert kwargs["job"]["queries"] is None
    assert len(json.dumps(kwargs)) < 4096
    event = asyncio.run(deferred.trigger.run().__anext__()).payload
    assert len(operator.execute_complete(context={}, event=event, **deferred.kwargs)) == 800


def test_a_delete_of_more_than_16384_matches_is_exact(milvus_conn_id, collection_name, milvus_client):
    many = [{"page_content": f"row {i}", "metadata": {"batch": i % 2}} for i in range(40000)]
    run(add(collection_name, milvus_conn_id, many, batch_size=2000), "inline")
    result = MilvusDeleteByExprOperator(
        task_id="d", milvus_conn_id=milvus_conn_id, collection_name=collection_name, expr="batch == 0"
    ).execute({})
    assert result["matched"] == result["deleted"] == 20000
    assert milvus_client.query(collection_name, filter="", output_fields=["count(*)"])[0]["count(*)"] == 20000


def test_the_inline_run_is_bounded_by_the_timeout(milvus_conn_id, embedding_conn_id, embeddings, collection_name):
    embeddings.latency = 8.0  # every embedding request outlasts the timeout by far
    started = time.monotonic()
    with pytest.raises(MilvusProviderError, match=r"did not finish within 0:00:01"):
        add(collection_name, milvus_conn_id, docs(3), embedding_conn_id=embedding_conn_id, timeout=1).execute({})
    assert time.monotonic() - started < 4


def test_the_embedding_connection_comes_from_the_milvus_connection_extra(
    milvus_lite, embedding_conn_id, embeddings, collection_name, monkeypatch
):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MILVUS_WITH_EMBEDDINGS",
        milvus_connection_json(milvus_lite.uri, embedding_conn_id=embedding_conn_id),
    )
    add(collection_name, "milvus_with_embeddings", ["a dense document"]).execute({})
    assert embeddings.stats.inputs >= 1
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id="milvus_with_embeddings",
        collection_name=collection_name,
        queries="dense document",
        k=1,
    ).execute({})
    assert hits[0]["page_content"] == "a dense document"
    assert 0 < hits[0]["score"] <= 1.0
    assert embeddings.stats.requests == 3  # the new collection's dimension probe, the document, the query


@pytest.mark.parametrize("search_type", ["nearest", ""])
def test_an_unknown_search_type_is_named(milvus_conn_id, collection_name, search_type):
    with pytest.raises(MilvusProviderError, match="search_type must be one of"):
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            queries="q",
            search_type=search_type,
        ).execute({})


def test_mmr_on_a_bm25_only_collection_says_it_needs_dense_embeddings(milvus_conn_id, collection_name):
    run(add(collection_name, milvus_conn_id, docs(5)), "inline")
    with pytest.raises(MilvusProviderError, match="'mmr' needs dense embeddings"):
        MilvusSearchToXComOperator(
            task_id="s", milvus_conn_id=milvus_conn_id, collection_name=collection_name, queries="q", search_type="mmr"
        ).execute({})


def test_a_batch_above_the_milvus_nq_cap_is_refused(milvus_conn_id, collection_name):
    run(add(collection_name, milvus_conn_id, docs(5)), "inline")
    with pytest.raises(MilvusProviderError, match=f"between 1 and {MAX_NQ}"):
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            queries="q",
            batch_size=MAX_NQ + 1,
        ).execute({})


def test_a_replace_by_key_missing_from_metadata_names_the_document(milvus_conn_id, collection_name, milvus_client):
    documents = [{"page_content": "has it", "metadata": {"source": "a"}}, {"page_content": "lacks it", "metadata": {}}]
    with pytest.raises(MilvusProviderError, match=r"Document 1 has no metadata 'source' \(replace_by\)"):
        add(collection_name, milvus_conn_id, documents, replace_by="source").execute({})
    assert not milvus_client.has_collection(collection_name), "nothing may be created for input that fails its checks"


def test_a_dense_only_collection_searched_without_embeddings_names_the_fix(
    milvus_conn_id, embedding_conn_id, collection_name
):
    run(add(collection_name, milvus_conn_id, docs(5), embedding_conn_id=embedding_conn_id), "inline")
    with pytest.raises(MilvusProviderError, match="dense vectors only.*embedding_conn_id"):
        MilvusSearchToXComOperator(
            task_id="s", milvus_conn_id=milvus_conn_id, collection_name=collection_name, queries="q"
        ).execute({})


def test_embeddings_on_a_bm25_only_collection_are_refused(milvus_conn_id, embedding_conn_id, collection_name):
    run(add(collection_name, milvus_conn_id, docs(5)), "inline")
    with pytest.raises(MilvusProviderError, match="no dense vector field.*Drop the embedding settings"):
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            embedding_conn_id=embedding_conn_id,
            queries="q",
        ).execute({})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scalar_fields": {"year": "DATE"}}, r"scalar_fields\['year'\] = 'DATE': use one of"),
        ({"scalar_fields": {"text": "INT64"}}, "'text' is a reserved field name"),
        ({"full_text_search": False}, "would have no vectors"),
    ],
)
def test_bad_new_collection_options_fail_and_create_nothing(
    milvus_conn_id, collection_name, milvus_client, options, message
):
    with pytest.raises(MilvusProviderError, match=message):
        add(collection_name, milvus_conn_id, ["x"], new_collection=options).execute({})
    assert not milvus_client.has_collection(collection_name)


def test_writing_without_embeddings_to_a_dense_collection_names_the_fix(
    milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    run(add(collection_name, milvus_conn_id, docs(3), embedding_conn_id=embedding_conn_id), "inline")
    with pytest.raises(MilvusProviderError, match="no embedding connection is configured.*own 'vector'"):
        add(collection_name, milvus_conn_id, ["new text"]).execute({})
    assert len(stored(milvus_client, collection_name)) == 3


def test_a_replace_by_value_that_is_not_a_string_or_number_is_refused(milvus_conn_id, collection_name, milvus_client):
    documents = [{"page_content": "x", "metadata": {"source": ["a", "b"]}}]
    with pytest.raises(MilvusProviderError, match=r"'source' \(replace_by\) must be a string or a number, got list"):
        add(collection_name, milvus_conn_id, documents, replace_by="source").execute({})
    assert not milvus_client.has_collection(collection_name), "nothing may be created for input that fails its checks"
