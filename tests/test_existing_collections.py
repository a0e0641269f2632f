"""Every operator on collections another application made: created here with pymilvus, never by the provider.

Each test runs on Milvus Lite and on a real Milvus standalone (2.3.5), inline and deferred, and reads
the result back with pymilvus. What 2.3 lacks (BM25, several vector fields) is skipped there, with a reason.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS, Tier
from tests.test_operators import MODES, run

DIM = EMBEDDING_DIMENSIONS
CATEGORIES = ("sofa", "table", "lamp", "chair")


def products(tier: Tier, name: str, rows: int = 40) -> None:
    """INT64 auto-id ``id``, ``content``, ``category``, ``embedding`` HNSW/L2, no dynamic field."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("content", DataType.VARCHAR, max_length=2000)
    schema.add_field("category", DataType.VARCHAR, max_length=64)
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("embedding", index_type="HNSW", metric_type="L2", params={"M": 8, "efConstruction": 64})
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    texts = [f"{CATEGORIES[i % 4]} number {i} in oak" for i in range(rows)]
    tier.client.insert(
        name,
        [{"content": t, "category": CATEGORIES[i % 4], "embedding": embed_text(t, DIM)} for i, t in enumerate(texts)],
    )


def tenants(tier: Tier, name: str) -> None:
    """VARCHAR ``doc_id``, ``body``, partition key ``tenant``, ``emb`` COSINE, dynamic field on."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("body", DataType.VARCHAR, max_length=2000)
    schema.add_field("tenant", DataType.VARCHAR, max_length=32, is_partition_key=True)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("emb", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, num_partitions=4, consistency_level="Strong")
    rows = [
        {
            "doc_id": f"{t}-{i}",
            "body": f"{t} report {i} about invoices",
            "tenant": t,
            "year": 2020 + i,
            "emb": embed_text(f"{t} report {i} about invoices", DIM),
        }
        for t in ("acme", "zen")
        for i in range(6)
    ]
    tier.client.insert(name, rows)


def two_vectors(tier: Tier, name: str) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=2000)
    schema.add_field("title_vec", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("body_vec", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("title_vec", index_type="FLAT", metric_type="IP")
    index.add_index("body_vec", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    texts = [f"manual page {i} on {'pumps' if i % 2 else 'valves'}" for i in range(10)]
    tier.client.insert(
        name,
        [
            {"pk": f"p{i}", "text": t, "title_vec": embed_text(f"title {i}", DIM), "body_vec": embed_text(t, DIM)}
            for i, t in enumerate(texts)
        ],
    )


def passages(tier: Tier, name: str) -> None:
    """BM25 with its own names: ``uid``, ``passage`` (analyzer), ``lang``, sparse output ``bm``."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("uid", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("passage", DataType.VARCHAR, max_length=2000, enable_analyzer=True)
    schema.add_field("lang", DataType.VARCHAR, max_length=8)
    schema.add_field("bm", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(name="bm25", function_type=FunctionType.BM25, input_field_names=["passage"], output_field_names=["bm"])
    )
    index = MilvusClient.prepare_index_params()
    index.add_index("bm", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params={"drop_ratio_build": 0})
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    tier.client.insert(
        name,
        [
            {
                "uid": f"u{i}",
                "passage": f"{'rivers and lakes' if i % 2 else 'mountain trails'} {i}",
                "lang": "en" if i < 6 else "de",
            }
            for i in range(10)
        ],
    )


def delete(tier: Tier, name: str, mode: str, **kwargs: Any) -> Any:
    """Always deferred in deferred mode: a delete's size is unknown until Milvus counts it."""
    operator = MilvusDeleteByExprOperator(
        task_id="d", milvus_conn_id=tier.conn_id, collection_name=name, inline_max_items=0, **kwargs
    )
    return run(operator, mode)


def search(tier: Tier, name: str, queries: Any, mode: str = "inline", **kwargs: Any) -> Any:
    return run(
        MilvusSearchToXComOperator(
            task_id="s", milvus_conn_id=tier.conn_id, collection_name=name, queries=queries, **kwargs
        ),
        mode,
    )


# --- INT64 auto-id, HNSW / L2, no dynamic field ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_search_needs_no_field_names_and_scores_l2_higher_is_better(tier, name, mode, embedding_conn_id):
    products(tier, name)
    hits = search(
        tier,
        name,
        ["sofa number 4 in oak", "lamp number 2 in oak"],
        mode,
        embedding_conn_id=embedding_conn_id,
        k=3,
        search_params={"ef": 32},
    )
    # Hashed bag-of-words embeddings tie some texts ("number 2" / "number 6"): check what is exact.
    assert hits[0][0]["metadata"]["category"] == "sofa"
    assert hits[1][0]["metadata"]["category"] == "lamp"
    assert isinstance(hits[0][0]["id"], int)
    assert hits[0][0]["metadata"] == {"category": "sofa"}
    scores = [h["score"] for h in hits[0]]
    assert scores == sorted(scores, reverse=True)
    assert 0 < scores[-1] <= scores[0] <= 1.0
    assert scores[0] == pytest.approx(1.0, abs=1e-4)  # distance 0 -> 1 / (1 + 0)


@pytest.mark.parametrize("mode", MODES)
def test_delete_by_expression_on_an_int64_collection(tier, name, mode):
    products(tier, name)
    result = delete(tier, name, mode, expr="category == {c}", expr_params={"c": "sofa"})
    assert result["matched"] == result["deleted"] == 10
    assert tier.count(name, 'category == "sofa"') == 0
    assert tier.count(name) == 30


@pytest.mark.parametrize("mode", MODES)
def test_auto_id_writes_replace_each_source_whole_and_never_duplicate(tier, name, mode, embedding_conn_id, embeddings):
    products(tier, name, rows=0)
    docs = [{"page_content": f"{c} item {i}", "metadata": {"category": c}} for c in CATEGORIES for i in range(3)]
    upsert = dict(
        task_id="w",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        replace_by="category",
    )
    run(MilvusAddDocumentsOperator(documents=docs, **upsert), mode)
    embeddings.reset_stats()
    again = run(MilvusAddDocumentsOperator(documents=list(reversed(docs)), **upsert), mode)
    assert (again["unchanged"], again["written"], embeddings.stats.inputs) == (12, 0, 0)
    # No dynamic field and no source_digest field: rows cannot carry their source's digest, so the
    # ledger is off and every chunk is compared (which found them all unchanged above).
    assert again["skipped_sources"] == 0
    assert not tier.client.has_collection(f"{name}__sources")
    edited = [d for d in docs if d["metadata"]["category"] != "lamp"] + [
        {"page_content": "lamp item new", "metadata": {"category": "lamp"}}
    ]
    result = run(MilvusAddDocumentsOperator(documents=edited, **upsert), mode)
    assert (result["written"], result["stale_deleted"]) == (1, 3)
    assert tier.count(name) == 10
    assert sorted(r["content"] for r in tier.rows(name, 'category == "lamp"', ["content"])) == ["lamp item new"]


def test_an_auto_id_run_that_dies_between_insert_and_delete_is_repaired_by_the_next_run(
    tier, name, embedding_conn_id, monkeypatch
):
    """Auto-id sources are rewritten by inserting the new rows, then deleting the old: a run that dies
    in between leaves both; the next run of the same input leaves only the new rows."""
    from pymilvus import AsyncMilvusClient

    products(tier, name, rows=0)
    write = dict(
        task_id="w",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        replace_by="category",
    )
    run(
        MilvusAddDocumentsOperator(
            documents=[{"page_content": f"sofa v1 {i}", "metadata": {"category": "sofa"}} for i in range(3)], **write
        ),
        "inline",
    )
    edited = [{"page_content": f"sofa v2 {i}", "metadata": {"category": "sofa"}} for i in range(2)]

    async def dying_delete(self, collection, *args, **kwargs):  # dies after the insert, before the old rows go
        if collection == name:  # the source ledger's own deletes (before the write) still go through
            raise RuntimeError("worker killed between insert and delete")
        return await original(self, collection, *args, **kwargs)

    original = AsyncMilvusClient.delete
    monkeypatch.setattr(AsyncMilvusClient, "delete", dying_delete)
    with pytest.raises(Exception, match="worker killed"):
        run(MilvusAddDocumentsOperator(documents=edited, **write), "inline")
    monkeypatch.setattr(AsyncMilvusClient, "delete", original)
    left = sorted(r["content"] for r in tier.rows(name, 'category == "sofa"', ["content"]))
    assert left == ["sofa v1 0", "sofa v1 1", "sofa v1 2", "sofa v2 0", "sofa v2 1"], "the dead run's state"
    result = run(MilvusAddDocumentsOperator(documents=edited, **write), "inline")
    assert sorted(r["content"] for r in tier.rows(name, 'category == "sofa"', ["content"])) == [
        "sofa v2 0",
        "sofa v2 1",
    ]
    assert tier.count(name) == 2, result


def test_auto_id_without_replace_by_is_refused_before_writing(tier, name, embedding_conn_id):
    products(tier, name, rows=0)
    with pytest.raises(MilvusProviderError, match=r"auto_id.*Set replace_by"):
        MilvusAddDocumentsOperator(
            task_id="w",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            embedding_conn_id=embedding_conn_id,
            documents=[{"page_content": "x", "metadata": {"category": "sofa"}}],
        ).execute({})
    assert tier.count(name) == 0


def test_metadata_without_a_field_is_refused_when_there_is_no_dynamic_field(tier, name, embedding_conn_id):
    products(tier, name, rows=0)
    with pytest.raises(MilvusProviderError, match=r"no dynamic field.*\['colour', 'price'\]"):
        MilvusAddDocumentsOperator(
            task_id="w",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            embedding_conn_id=embedding_conn_id,
            replace_by="category",
            documents=[{"page_content": "x", "metadata": {"category": "sofa", "price": 3, "colour": "red"}}],
        ).execute({})
    assert tier.count(name) == 0


def test_precomputed_vectors_are_written_without_calling_the_embedding_api(tier, name, embedding_conn_id, embeddings):
    products(tier, name, rows=0)
    docs = [
        {"text": f"pre {i}", "metadata": {"category": "sofa"}, "vector": embed_text(f"pre {i}", DIM)} for i in range(5)
    ]
    result = MilvusAddDocumentsOperator(
        task_id="w",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        replace_by="category",
        documents=docs,
    ).execute({})
    assert result["written"] == 5
    assert embeddings.stats.requests == 0
    stored = tier.rows(name, "", ["content", "embedding"])
    assert {r["content"]: r["embedding"] for r in stored}["pre 3"] == pytest.approx(embed_text("pre 3", DIM), abs=1e-6)


def test_a_precomputed_vector_of_the_wrong_size_fails_before_writing(tier, name):
    products(tier, name, rows=0)
    docs = [
        {"text": "ok", "metadata": {"category": "sofa"}, "vector": [0.1] * DIM},
        {"text": "bad", "metadata": {"category": "sofa"}, "vector": [0.1] * (DIM + 1)},
    ]
    with pytest.raises(MilvusProviderError, match=rf"Dimension mismatch.*stores {DIM}-dimensional.*has {DIM + 1}"):
        MilvusAddDocumentsOperator(
            task_id="w", milvus_conn_id=tier.conn_id, collection_name=name, replace_by="category", documents=docs
        ).execute({})
    assert tier.count(name) == 0


# --- VARCHAR pk, COSINE, dynamic field, partition key -----------------------------------------------------


def upsert_for_acme(tier: Tier, name: str, records: list[dict], embedding_conn_id: str, mode: str = "inline") -> Any:
    """Upsert records by their ``doc_id`` as tenant ``acme`` of a ``tenants`` collection."""
    operator = MilvusUpsertOperator(
        task_id="u",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        documents=records,
        id_key="doc_id",
        partition_key_value="acme",
    )
    return run(operator, mode)


@pytest.mark.parametrize("mode", MODES)
def test_upsert_for_a_tenant_sets_the_partition_key_and_uses_own_field_names(tier, name, mode, embedding_conn_id):
    tenants(tier, name)
    records = [{"page_content": f"acme memo {i}", "metadata": {"doc_id": f"memo-{i}", "year": 2030}} for i in range(3)]
    result = upsert_for_acme(tier, name, records, embedding_conn_id, mode)
    assert result["written"] == 3
    rows = {r["doc_id"]: r for r in tier.rows(name, 'doc_id like "memo-%"', ["doc_id", "body", "tenant", "year"])}
    assert {k: (r["body"], r["tenant"], r["year"]) for k, r in rows.items()} == {
        f"memo-{i}": (f"acme memo {i}", "acme", 2030) for i in range(3)
    }


def test_a_tenants_rewritten_records_stay_findable_by_its_partition_key(tier, name, embedding_conn_id):
    """Milvus 2.3.5 misroutes upserts in partition-key collections: the rows exist but tenant filters miss them."""
    tenants(tier, name)

    def upsert(text: str) -> dict:
        records = [{"page_content": f"{text} {i}", "metadata": {"doc_id": f"memo-{i}"}} for i in range(3)]
        return upsert_for_acme(tier, name, records, embedding_conn_id)

    upsert("first memo")
    assert upsert("second memo")["written"] == 3
    found = tier.rows(name, 'tenant == "acme" and doc_id like "memo-%"', ["body"])
    assert sorted(r["body"] for r in found) == [f"second memo {i}" for i in range(3)]
    assert tier.count(name) == 12 + 3, "a rewrite must replace, never duplicate"
    hits = search(tier, name, ["second memo 1"], embedding_conn_id=embedding_conn_id, k=1, partition_key_value="acme")
    assert hits[0][0]["page_content"] == "second memo 1"


@pytest.mark.parametrize("mode", MODES)
def test_search_for_one_tenant_never_returns_another(tier, name, mode, embedding_conn_id):
    tenants(tier, name)
    hits = search(
        tier,
        name,
        ["zen report 1 about invoices"],
        mode,
        embedding_conn_id=embedding_conn_id,
        k=10,
        partition_key_value="acme",
    )
    assert len(hits[0]) == 6
    assert {h["metadata"]["tenant"] for h in hits[0]} == {"acme"}
    assert all(h["score"] <= 1.0 for h in hits[0])


@pytest.mark.parametrize("mode", MODES)
def test_delete_for_one_tenant_never_touches_another(tier, name, mode):
    tenants(tier, name)
    result = delete(tier, name, mode, expr="year >= {y}", expr_params={"y": 2023}, partition_key_value="zen")
    assert (result["matched"], result["deleted"]) == (3, 3)
    assert tier.count(name, 'tenant == "zen"') == 3
    assert tier.count(name, 'tenant == "acme"') == 6


def test_the_match_everything_guard_counts_within_the_tenant(tier, name):
    tenants(tier, name)
    with pytest.raises(MilvusProviderError, match="matches all 6 entities.*for tenant 'zen'"):
        delete(tier, name, "inline", expr="year > 0", partition_key_value="zen")
    assert tier.count(name) == 12


def test_a_tenant_on_a_collection_without_partition_key_is_refused(tier, name, embedding_conn_id):
    products(tier, name)
    with pytest.raises(MilvusProviderError, match="no partition-key field"):
        search(tier, name, "sofa", embedding_conn_id=embedding_conn_id, partition_key_value="acme")


@pytest.mark.parametrize("key", ["body", "emb"])
def test_metadata_that_collides_with_a_field_is_refused_before_writing(tier, name, key, embedding_conn_id):
    tenants(tier, name)
    with pytest.raises(MilvusProviderError, match=rf"Metadata keys \['{key}'\] collide"):
        MilvusAddDocumentsOperator(
            task_id="w",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            embedding_conn_id=embedding_conn_id,
            partition_key_value="acme",
            documents=[{"page_content": "x", "metadata": {key: "y"}}],
        ).execute({})
    assert tier.count(name) == 12


def test_output_fields_choose_what_hits_carry(tier, name, embedding_conn_id):
    tenants(tier, name)
    hits = search(tier, name, "acme report 2", embedding_conn_id=embedding_conn_id, k=1, output_fields=["tenant"])
    assert hits[0]["metadata"] == {"tenant": "acme"}
    assert hits[0]["page_content"] == "acme report 2 about invoices"


# --- two dense vector fields ------------------------------------------------------------------------------


def test_two_vector_fields_need_vector_field_and_the_error_names_it(tier, name, embedding_conn_id):
    tier.skip_unless_multi_vector()
    two_vectors(tier, name)
    with pytest.raises(
        MilvusProviderError, match=r"several dense vector fields \(title_vec, body_vec\)\. Set vector_field"
    ):
        search(tier, name, "pumps", embedding_conn_id=embedding_conn_id)


@pytest.mark.parametrize("mode", MODES)
def test_vector_field_chooses_which_vectors_to_search(tier, name, mode, embedding_conn_id):
    tier.skip_unless_multi_vector()
    two_vectors(tier, name)
    hits = search(
        tier, name, ["manual page 3 on pumps"], mode, embedding_conn_id=embedding_conn_id, k=1, vector_field="body_vec"
    )
    assert hits[0][0]["id"] == "p3"
    assert hits[0][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_an_ambiguous_text_field_names_text_field_and_the_candidates(tier, name, embedding_conn_id):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("title", DataType.VARCHAR, max_length=200)
    schema.add_field("summary", DataType.VARCHAR, max_length=2000)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("v", index_type="FLAT", metric_type="L2")
    tier.client.create_collection(name, schema=schema, index_params=index)
    with pytest.raises(MilvusProviderError, match=r"several VARCHAR fields .*: title, summary\. Set text_field"):
        search(tier, name, "x", embedding_conn_id=embedding_conn_id)
    assert search(tier, name, "x", embedding_conn_id=embedding_conn_id, text_field="summary") == []


# --- BM25 with its own field names ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_bm25_collection_with_own_names_writes_searches_and_deletes(tier, name, mode):
    tier.skip_unless_bm25()
    passages(tier, name)
    written = run(
        MilvusUpsertOperator(
            task_id="u",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            documents=[{"page_content": "glacier lakes and rivers", "metadata": {"lang": "en"}}],
            ids=["u99"],
        ),
        mode,
    )
    assert written["written"] == 1
    hits = search(tier, name, ["rivers lakes", "mountain trails"], mode, k=2)
    assert {h["id"] for h in hits[0]} <= {"u1", "u3", "u5", "u7", "u9", "u99"}
    assert hits[1][0]["id"] in {
        "u0",
        "u2",
        "u4",
    }
    assert all(h["score"] > 0 for h in hits[0] + hits[1])  # Milvus Lite reports BM25 negated
    deleted = delete(tier, name, mode, expr='lang == "de"')
    assert deleted["deleted"] == 4
    assert tier.count(name) == 7


def test_a_search_can_choose_its_consistency_level_and_finds_what_strong_finds(
    tier, name, embedding_conn_id, monkeypatch
):
    from pymilvus import AsyncMilvusClient

    products(tier, name)
    query = ["lamp number 2 in oak"]
    strong = search(tier, name, query, embedding_conn_id=embedding_conn_id, k=3)
    sent: list[Any] = []
    real_search = AsyncMilvusClient.search

    async def recording_search(self, *args, **kwargs):  # the real call, with what it was asked recorded
        sent.append(kwargs.get("consistency_level"))
        return await real_search(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "search", recording_search)
    deadline = time.monotonic() + 30
    while True:  # Bounded may trail a fresh insert by the server's staleness window
        bounded = search(tier, name, query, embedding_conn_id=embedding_conn_id, k=3, consistency_level="Bounded")
        if bounded == strong or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(sent) == {"Bounded"}
    assert [h["id"] for h in bounded[0]] == [h["id"] for h in strong[0]]


def test_an_unknown_consistency_level_is_refused_with_the_valid_ones(tier, name, embedding_conn_id):
    products(tier, name, rows=4)
    with pytest.raises(MilvusProviderError, match=r"consistency_level must be one of \('Strong', 'Bounded'"):
        search(tier, name, ["lamp"], embedding_conn_id=embedding_conn_id, consistency_level="strongest")
