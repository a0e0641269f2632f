"""Each operator in both modes against a real Milvus Lite server and real HTTP embeddings.

Inline: ``execute`` runs the async core in the worker. Deferred: ``execute`` raises ``TaskDeferred``,
the trigger's ``run()`` runs the same core, and ``execute_complete`` turns its event into the result.
Everything written is read back independently with pymilvus.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)
from airflow_provider_milvus.triggers.milvus import MilvusOperationTrigger

from tests.compat import serde

MODES = ["inline", "deferred"]


def run(operator, mode: str):
    """Execute like Airflow would: inline, or defer + trigger in a fresh event loop + resume."""
    if mode == "inline":
        operator.deferrable = False
        return operator.execute(context={})
    operator.deferrable = True
    operator.inline_max_items = 0
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, MilvusOperationTrigger)
    assert deferred.value.timeout is not None
    classpath, kwargs = trigger.serialize()
    serde.serialize(kwargs)  # what the worker does before storing the trigger row
    rebuilt = MilvusOperationTrigger(**json.loads(json.dumps(kwargs)))
    event = asyncio.run(rebuilt.run().__anext__())
    return operator.execute_complete(context={}, event=event.payload, **(deferred.value.kwargs or {}))


def docs(n: int, prefix: str = "doc") -> list[dict]:
    return [
        {
            "page_content": f"{prefix} {i} about {'milvus vectors' if i % 2 else 'airflow tasks'}",
            "metadata": {"source": f"file{i % 5}.md", "n": i},
        }
        for i in range(n)
    ]


def stored(client, collection: str, expr: str = "") -> dict[str, dict]:
    rows = client.query(collection, filter=expr or 'pk != ""', output_fields=["pk", "text", "source", "n"], limit=16384)
    return {row["pk"]: row for row in rows}


def add(collection, milvus_conn_id, documents, **kwargs):
    return MilvusAddDocumentsOperator(
        task_id="add", milvus_conn_id=milvus_conn_id, collection_name=collection, documents=documents, **kwargs
    )


@pytest.mark.parametrize("mode", MODES)
def test_add_writes_every_document_once(mode, milvus_conn_id, collection_name, milvus_client):
    summary = run(add(collection_name, milvus_conn_id, docs(250), batch_size=40), mode)
    assert summary["written"] == 250
    assert summary["batches"] == 7
    assert len(stored(milvus_client, collection_name)) == 250


@pytest.mark.parametrize("mode", MODES)
def test_rerunning_add_does_not_change_the_count(mode, milvus_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(120)), mode)
    before = stored(milvus_client, collection_name)
    run(add(collection_name, milvus_conn_id, docs(120)), mode)
    assert stored(milvus_client, collection_name).keys() == before.keys()
    count = milvus_client.query(collection_name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert count == 120


@pytest.mark.parametrize("mode", MODES)
def test_upsert_replaces_text_and_metadata_by_id(mode, milvus_conn_id, collection_name, milvus_client):
    records = [{"page_content": f"v1 record {i}", "metadata": {"record_id": f"r{i}", "n": i}} for i in range(150)]
    run(
        MilvusUpsertOperator(
            task_id="u",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            documents=records,
            id_key="record_id",
        ),
        mode,
    )
    changed = [
        {"page_content": "v2 record 7", "metadata": {"record_id": "r7", "n": 700}},
        {"page_content": "new record", "metadata": {"record_id": "r999", "n": 999}},
    ]
    run(
        MilvusUpsertOperator(
            task_id="u",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            documents=changed,
            id_key="record_id",
        ),
        mode,
    )
    rows = stored(milvus_client, collection_name)
    assert len(rows) == 151
    assert (rows["r7"]["text"], rows["r7"]["n"]) == ("v2 record 7", 700)
    assert rows["r8"]["text"] == "v1 record 8"


def test_upsert_without_ids_says_what_it_needs(milvus_conn_id, collection_name):
    with pytest.raises(MilvusProviderError, match="needs ids or id_key"):
        MilvusUpsertOperator(
            task_id="u", milvus_conn_id=milvus_conn_id, collection_name=collection_name, documents=["x"]
        ).execute(context={})


@pytest.mark.parametrize("mode", MODES)
def test_delete_removes_exactly_what_the_filter_matches(mode, milvus_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(200)), mode)
    expected_gone = set(stored(milvus_client, collection_name, 'source in ["file1.md", "file3.md"]'))
    result = run(
        MilvusDeleteByExprOperator(
            task_id="d",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            expr="source in {sources}",
            expr_params={"sources": ["file1.md", "file3.md"]},
        ),
        mode,
    )
    assert result["matched"] == result["deleted"] == len(expected_gone) == 80
    remaining = stored(milvus_client, collection_name)
    assert len(remaining) == 120
    assert not expected_gone & remaining.keys()


def test_dry_run_counts_and_deletes_nothing(milvus_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(50)), "inline")
    result = MilvusDeleteByExprOperator(
        task_id="d",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        expr="n < {n}",
        expr_params={"n": 10},
        dry_run=True,
    ).execute(context={})
    assert (result["matched"], result["deleted"]) == (10, 0)
    assert len(stored(milvus_client, collection_name)) == 50


@pytest.mark.parametrize("expr", ["", "n >= 0"])
def test_delete_refuses_to_empty_the_collection_without_allow_delete_all(
    expr, milvus_conn_id, collection_name, milvus_client
):
    run(add(collection_name, milvus_conn_id, docs(20)), "inline")
    with pytest.raises(MilvusProviderError, match="allow_delete_all"):
        MilvusDeleteByExprOperator(
            task_id="d", milvus_conn_id=milvus_conn_id, collection_name=collection_name, expr=expr
        ).execute(context={})
    assert len(stored(milvus_client, collection_name)) == 20


def test_allow_delete_all_empties_the_collection(milvus_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(20)), "inline")
    result = MilvusDeleteByExprOperator(
        task_id="d", milvus_conn_id=milvus_conn_id, collection_name=collection_name, expr="", allow_delete_all=True
    ).execute(context={})
    assert result["deleted"] == 20
    assert not stored(milvus_client, collection_name)


@pytest.mark.parametrize("mode", MODES)
def test_search_returns_json_hits_per_query(mode, milvus_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(150)), "inline")
    hits = run(
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=milvus_conn_id,
            collection_name=collection_name,
            queries=["airflow tasks", "milvus vectors"],
            k=3,
        ),
        mode,
    )
    assert json.loads(json.dumps(hits)) == hits
    assert [len(h) for h in hits] == [3, 3]
    assert all("airflow" in hit["page_content"] for hit in hits[0])
    assert all("milvus" in hit["page_content"] for hit in hits[1])
    assert set(hits[0][0]) == {"id", "page_content", "metadata", "score"}
    stored_by_text = {row["text"]: pk for pk, row in stored(milvus_client, collection_name).items()}
    assert all(hit["id"] == stored_by_text[hit["page_content"]] for query_hits in hits for hit in query_hits)


def test_single_query_returns_a_flat_list_filtered_by_expr(milvus_conn_id, collection_name):
    run(add(collection_name, milvus_conn_id, docs(50)), "inline")
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        queries="airflow tasks",
        k=5,
        expr="source == {s}",
        expr_params={"s": "file2.md"},
    ).execute(context={})
    assert len(hits) == 5
    assert {h["metadata"]["source"] for h in hits} == {"file2.md"}


@pytest.mark.parametrize("mode", MODES)
def test_dense_embeddings_stay_within_the_concurrency_bound(
    mode, milvus_conn_id, embedding_conn_id, embeddings, collection_name, milvus_client
):
    embeddings.latency = 0.05
    run(
        add(
            collection_name,
            milvus_conn_id,
            docs(300),
            embedding_conn_id=embedding_conn_id,
            batch_size=10,
            max_concurrency=4,
        ),
        mode,
    )
    assert 1 < embeddings.stats.peak_in_flight <= 4
    assert len(stored(milvus_client, collection_name)) == 300


def test_dense_search_with_mmr(milvus_conn_id, embedding_conn_id, collection_name):
    run(add(collection_name, milvus_conn_id, docs(40), embedding_conn_id=embedding_conn_id), "inline")
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        embedding_conn_id=embedding_conn_id,
        queries="milvus vectors",
        k=3,
        search_type="mmr",
    ).execute(context={})
    assert len(hits) == 3
    assert all(h["score"] is None for h in hits)


def test_hybrid_collection_searches_dense_and_bm25(milvus_conn_id, embedding_conn_id, collection_name, milvus_client):
    run(
        add(collection_name, milvus_conn_id, docs(40), embedding_conn_id=embedding_conn_id, full_text_search=True),
        "inline",
    )
    fields = {f["name"] for f in milvus_client.describe_collection(collection_name)["fields"]}
    assert {"vector", "sparse"} <= fields
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        embedding_conn_id=embedding_conn_id,
        queries="airflow tasks",
        k=2,
    ).execute(context={})
    assert all("airflow" in h["page_content"] for h in hits)


def test_tiny_deferrable_jobs_run_inline(milvus_conn_id, collection_name, milvus_client):
    operator = add(collection_name, milvus_conn_id, docs(5), deferrable=True, inline_max_items=5)
    assert operator.execute(context={})["written"] == 5


def test_jobs_above_the_inline_threshold_defer(milvus_conn_id, collection_name):
    operator = add(collection_name, milvus_conn_id, docs(6), deferrable=True, inline_max_items=5)
    with pytest.raises(TaskDeferred):
        operator.execute(context={})


def test_big_ingest_is_staged_not_put_in_the_trigger_row(milvus_conn_id, collection_name, tmp_path, milvus_client):
    operator = add(collection_name, milvus_conn_id, docs(3000), deferrable=True, staging_url=str(tmp_path))
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context={})
    _, kwargs = deferred.value.trigger.serialize()
    assert len(json.dumps(kwargs)) < 4096
    assert kwargs["job"]["documents"] is None
    assert kwargs["job"]["documents_ref"].startswith(str(tmp_path))
    event = asyncio.run(deferred.value.trigger.run().__anext__())
    assert len(json.dumps(event.payload)) < 64 * 1024
    operator.execute_complete(context={}, event=event.payload, **deferred.value.kwargs)
    assert len(stored(milvus_client, collection_name)) == 3000
    assert not list(tmp_path.iterdir()), "staged input is removed after success"


def test_error_event_raises_with_the_real_message(milvus_conn_id, collection_name):
    operator = add(collection_name, milvus_conn_id, docs(1))
    with pytest.raises(MilvusProviderError, match="Collection 'x' does not exist"):
        operator.execute_complete(context={}, event={"status": "error", "message": "Collection 'x' does not exist."})
    with pytest.raises(MilvusProviderError, match="Unexpected trigger event"):
        operator.execute_complete(context={}, event=None)


@pytest.mark.parametrize("mode", MODES)
def test_search_of_an_unknown_collection_fails_clearly(mode, milvus_conn_id):
    with pytest.raises(MilvusProviderError, match="Collection 'missing_one' does not exist"):
        run(
            MilvusSearchToXComOperator(
                task_id="s", milvus_conn_id=milvus_conn_id, collection_name="missing_one", queries="x"
            ),
            mode,
        )


@pytest.mark.parametrize("mode", MODES)
def test_delete_from_an_unknown_collection_fails_clearly(mode, milvus_conn_id):
    with pytest.raises(MilvusProviderError, match="Collection 'missing_one' does not exist"):
        run(
            MilvusDeleteByExprOperator(
                task_id="d", milvus_conn_id=milvus_conn_id, collection_name="missing_one", expr="n > 1"
            ),
            mode,
        )


@pytest.mark.parametrize("mode", MODES)
def test_invalid_filter_expression_fails_clearly_and_deletes_nothing(
    mode, milvus_conn_id, collection_name, milvus_client
):
    run(add(collection_name, milvus_conn_id, docs(10)), "inline")
    with pytest.raises(MilvusProviderError, match="Could not evaluate filter"):
        run(
            MilvusDeleteByExprOperator(
                task_id="d", milvus_conn_id=milvus_conn_id, collection_name=collection_name, expr="source = 'file1.md'"
            ),
            mode,
        )
    assert len(stored(milvus_client, collection_name)) == 10


def test_dimension_mismatch_fails_before_writing(milvus_conn_id, embedding_conn_id, collection_name, milvus_client):
    run(add(collection_name, milvus_conn_id, docs(10), embedding_conn_id=embedding_conn_id), "inline")
    with pytest.raises(MilvusProviderError, match="Dimension mismatch.*32.*16"):
        run(
            add(
                collection_name,
                milvus_conn_id,
                docs(20, "other"),
                embedding_conn_id=embedding_conn_id,
                embedding_dimensions=16,
            ),
            "inline",
        )
    assert len(stored(milvus_client, collection_name)) == 10


def test_document_without_text_fails_before_connecting(collection_name):
    with pytest.raises(MilvusProviderError, match="Document 0 has no text"):
        add(collection_name, "no_such_conn", [{"page_content": "", "metadata": {}}]).execute(context={})


def test_metadata_that_is_not_json_fails_before_connecting(collection_name):
    with pytest.raises(MilvusProviderError, match="not JSON-able"):
        add(collection_name, "no_such_conn", [{"page_content": "x", "metadata": {"a": {1, 2}}}]).execute(context={})


def test_empty_document_list_is_a_logged_no_op(collection_name, milvus_client, caplog):
    result = add(collection_name, "no_such_conn", []).execute(context={})
    assert result["written"] == 0
    assert not milvus_client.has_collection(collection_name)


def test_replace_by_source_removes_stale_chunks_of_a_changed_file(milvus_conn_id, collection_name, milvus_client):
    first = [
        {"page_content": "old text " * 30, "metadata": {"source": "a.md"}},
        {"page_content": "other file", "metadata": {"source": "b.md"}},
    ]
    run(add(collection_name, milvus_conn_id, first, chunk_size=50, replace_by="source"), "inline")
    edited = [{"page_content": "brand new text", "metadata": {"source": "a.md"}}]
    summary = run(add(collection_name, milvus_conn_id, edited, chunk_size=50, replace_by="source"), "inline")
    texts = sorted(row["text"] for row in stored(milvus_client, collection_name).values())
    assert texts == ["brand new text", "other file"]
    assert summary["stale_deleted"] > 1


def test_templated_inputs_accept_rendered_xcom_strings(milvus_conn_id, collection_name, milvus_client):
    rendered = str([{"page_content": "from xcom", "metadata": {"source": "x"}}])
    add(collection_name, milvus_conn_id, rendered).execute(context={})
    assert [r["text"] for r in stored(milvus_client, collection_name).values()] == ["from xcom"]


def test_template_fields_cover_every_user_facing_string():
    for operator_class, extra in [
        (MilvusAddDocumentsOperator, {"documents", "ids", "id_key", "replace_by"}),
        (MilvusUpsertOperator, {"documents", "ids", "id_key"}),
        (MilvusDeleteByExprOperator, {"expr", "expr_params", "ids"}),
        (MilvusSearchToXComOperator, {"queries", "expr", "expr_params"}),
    ]:
        fields = set(operator_class.template_fields)
        assert {"milvus_conn_id", "collection_name", "embedding_conn_id", "embedding_model"} | extra <= fields


def test_dense_search_embeds_queries_in_batches(milvus_conn_id, embedding_conn_id, embeddings, collection_name):
    run(add(collection_name, milvus_conn_id, docs(40), embedding_conn_id=embedding_conn_id), "inline")
    embeddings.reset_stats()
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        embedding_conn_id=embedding_conn_id,
        queries=[f"airflow {i}" for i in range(40)],
        k=1,
        batch_size=16,
    ).execute(context={})
    assert len(hits) == 40
    assert all(len(h) == 1 for h in hits)
    assert embeddings.stats.requests == 3  # ceil(40 / 16) batches; an existing collection needs no probe
