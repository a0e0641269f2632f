"""Query vectors computed upstream: the three by-vector searches, batched, with no embedding call.

The reference is langchain-milvus's own ``similarity_search_by_vector``,
``similarity_search_with_score_by_vector`` and ``max_marginal_relevance_search_by_vector``, one vector
per call, on a store the hook maps onto the same collection: one made directly with pymilvus, with its
own field names (INT64 ``sku``, ``blurb``, ``shelf``, ``feat``), FLAT so both searches are exact, COSINE
and L2. Random vectors: no two rows tie, so the hits' order is the answer. On Milvus Lite and a real
Milvus standalone (2.3.5); the BM25 and hybrid cases on Lite only (2.3 has no BM25).
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusSearchToXComOperator

from tests.conftest import EMBEDDING_DIMENSIONS, Tier
from tests.test_operators import MODES, run

DIM = EMBEDDING_DIMENSIONS  # the reference store probes the embedding model, whose size the collection must have
ROWS = 200
K = 5


def random_vectors(count: int, seed: int) -> list[list[float]]:
    rng = random.Random(seed)
    return [[rng.gauss(0, 1) for _ in range(DIM)] for _ in range(count)]


def catalog(tier: Tier, name: str, metric: str) -> None:
    """INT64 ``sku`` (not auto-id), ``blurb``, INT64 ``shelf``, ``feat`` FLAT/``metric``, no dynamic field."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("sku", DataType.INT64, is_primary=True)
    schema.add_field("blurb", DataType.VARCHAR, max_length=200)
    schema.add_field("shelf", DataType.INT64)
    schema.add_field("feat", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("feat", index_type="FLAT", metric_type=metric)
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    vectors = random_vectors(ROWS, 1)
    tier.client.insert(
        name,
        [{"sku": 1000 + i, "blurb": f"item {i}", "shelf": i % 4, "feat": vectors[i]} for i in range(ROWS)],
    )


@pytest.fixture
def search_requests(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The nq (query vectors) of every search request the provider sends, passed on to the real client."""
    from pymilvus import AsyncMilvusClient

    sent: list[int] = []
    original = AsyncMilvusClient.search

    async def search(self: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(len(kwargs.get("data") or args[1]))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "search", search)
    return sent


def search(tier: Tier, name: str, queries: Any, mode: str = "inline", **kwargs: Any) -> Any:
    return run(
        MilvusSearchToXComOperator(
            task_id="s", milvus_conn_id=tier.conn_id, collection_name=name, queries=queries, **kwargs
        ),
        mode,
    )


def reference_store(tier: Tier, name: str, embedding_conn_id: str) -> Any:
    """langchain-milvus on the same collection (its constructor needs an embedding model; no search uses it)."""
    return MilvusHook(tier.conn_id).get_vector_store(name, embedding_conn_id=embedding_conn_id)


@pytest.mark.parametrize("metric", ["COSINE", "L2"])
@pytest.mark.parametrize("expr", [None, "shelf >= 2"])
def test_the_three_by_vector_searches_equal_langchain_milvus(
    tier, name, metric, expr, embedding_conn_id, embeddings, search_requests
):
    catalog(tier, name, metric)
    queries = random_vectors(20, 2)
    store = reference_store(tier, name, embedding_conn_id)
    embeddings.reset_stats()
    common = dict(k=K, expr=expr, batch_size=8, embedding_conn_id=embedding_conn_id)

    plain = search(tier, name, queries, search_type="similarity", **common)
    scored = search(tier, name, queries, search_type="similarity_score", **common)
    mmr = search(tier, name, queries, search_type="mmr", fetch_k=15, lambda_mult=0.3, **common)

    assert embeddings.stats.requests == 0, "query vectors are never embedded"
    assert search_requests == [8, 8, 4] * 3, "nq-batched like text queries"
    for position, vector in enumerate(queries):
        expected = [d.metadata["sku"] for d in store.similarity_search_by_vector(vector, k=K, expr=expr)]
        assert [h["id"] for h in plain[position]] == expected
        pairs = store.similarity_search_with_score_by_vector(vector, k=K, expr=expr)
        assert [(h["id"], pytest.approx(h["score"], abs=1e-5)) for h in scored[position]] == [
            (d.metadata["sku"], 1 / (1 + score) if metric == "L2" else score) for d, score in pairs
        ]
        diverse = store.max_marginal_relevance_search_by_vector(vector, k=K, fetch_k=15, lambda_mult=0.3, expr=expr)
        assert [h["id"] for h in mmr[position]] == [d.metadata["sku"] for d in diverse]
    if expr:
        assert all(h["metadata"]["shelf"] >= 2 for hits in plain + scored + mmr for h in hits)
    assert [h["id"] for h in mmr[0]] != [h["id"] for h in plain[0]], "MMR reorders: the comparison means something"


@pytest.mark.parametrize("mode", MODES)
def test_vectors_need_no_embedding_connection_inline_or_deferred(tier, name, mode):
    """40 vectors are more than a trigger row holds: deferred, they go by reference and come back in order."""
    catalog(tier, name, "L2")
    queries = random_vectors(40, 3)
    hits = search(tier, name, queries, mode, k=1, search_type="similarity_score")
    exact = search(tier, name, queries, "inline", k=1, search_type="similarity_score", batch_size=1)
    assert len(hits) == 40
    assert [h[0]["id"] for h in hits] == [h[0]["id"] for h in exact]


def test_a_stored_vector_finds_its_own_row_first(tier, name):
    """ "Find similar to this record": one vector alone (not in a list) returns one list of hits."""
    catalog(tier, name, "COSINE")
    (row,) = tier.rows(name, "sku == 1007", ["feat"])
    hits = search(tier, name, [float(x) for x in row["feat"]], k=3)
    assert hits[0]["id"] == 1007
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-5)
    assert hits[0]["page_content"] == "item 7"
    assert hits[0]["metadata"] == {"shelf": 3}


def test_common_ai_embedding_items_are_searched_by_their_vector(tier, name, embeddings):
    """``LlamaIndexEmbeddingOperator`` emits ``{"text", "metadata", "vector"}`` chunks: the vector is the query."""
    catalog(tier, name, "COSINE")
    vectors = random_vectors(3, 4)
    chunks = [{"text": f"chunk {i}", "metadata": {"page": i}, "vector": v} for i, v in enumerate(vectors)]
    embeddings.reset_stats()
    by_items = search(tier, name, chunks, k=K)
    by_lists = search(tier, name, vectors, k=K)
    assert by_items == by_lists
    assert embeddings.stats.requests == 0


def test_a_hybrid_collection_is_searched_by_vector_on_its_dense_field(
    tier, collection_name, embedding_conn_id, search_requests
):
    tier.skip_unless_bm25()
    MilvusAddDocumentsOperator(
        task_id="seed",
        milvus_conn_id=tier.conn_id,
        collection_name=collection_name,
        embedding_conn_id=embedding_conn_id,
        full_text_search=True,
        documents=[f"document {i} about {'lakes' if i % 2 else 'hills'}" for i in range(30)],
    ).execute({})
    queries = random_vectors(3, 5)
    hits = search(tier, collection_name, queries, k=K, search_type="similarity")
    direct = tier.client.search(collection_name, data=queries, anns_field="vector", limit=K, output_fields=["pk"])
    assert [[h["id"] for h in q] for q in hits] == [[h["pk"] for h in q] for q in direct]
    assert search_requests == [3], "one dense search, no hybrid request"


def test_a_wrong_dimension_is_refused_before_any_search(tier, name, search_requests):
    catalog(tier, name, "COSINE")
    queries = [*random_vectors(2, 6), random_vectors(1, 7)[0][:-1]]
    with pytest.raises(
        MilvusProviderError,
        match=rf"query 2 is a {DIM - 1}-dimensional vector but collection '{name}' field 'feat' stores {DIM}",
    ):
        search(tier, name, queries)
    assert search_requests == []


def test_a_bm25_only_collection_refuses_vectors_before_any_search(tier, name, search_requests):
    from tests.test_existing_collections import passages

    tier.skip_unless_bm25()
    passages(tier, name)
    with pytest.raises(
        MilvusProviderError, match=r"BM25 full-text only \('bm' from 'passage'\).*Pass the queries as text"
    ):
        search(tier, name, random_vectors(1, 8))
    assert search_requests == []


@pytest.mark.parametrize(
    ("queries", "message"),
    [
        ([[0.1] * (DIM - 1) + ["0.2"]], r"Query 0's vector has a non-numeric value at position 31 \('0.2', a str\)"),
        ([[0.1] * DIM, [0.1, None]], r"Query 1's vector has a non-numeric value at position 1 \(None"),
        ([[0.1] * (DIM - 1) + [True]], r"non-numeric value at position 31 \(True, a bool\)"),
        ([[0.1] * (DIM - 1) + [float("nan")]], r"has nan at position 31; query vectors must be finite"),
        ([[]], r"Query 0 is an empty vector"),
        ([{"text": "no vector here"}], r"Query 0 is a dict without a 'vector'"),
        ({"chunk_count": 1, "chunks": [{"vector": [0.1] * DIM}]}, r"pass its chunks, e.g. queries=embed.output"),
        (
            ["lamp", [0.1] * DIM],
            r"mixes text \(query 0\) and a vector \(query 1\)\. A task searches by text or by vector",
        ),
    ],
)
def test_bad_query_vectors_are_refused_before_connecting(
    milvus_conn_id, collection_name, monkeypatch, queries, message
):
    """The worker checks them: no client is made (the collection does not even exist)."""
    from pymilvus import AsyncMilvusClient

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Milvus client was made")

    monkeypatch.setattr(AsyncMilvusClient, "__init__", no_client)
    operator = MilvusSearchToXComOperator(
        task_id="s", milvus_conn_id=milvus_conn_id, collection_name=collection_name, queries=queries
    )
    with pytest.raises(MilvusProviderError, match=message):
        operator.execute({})


@pytest.mark.parametrize(("arguments", "name"), [({"k": 0}, "k"), ({"k": -3}, "k"), ({"fetch_k": 0}, "fetch_k")])
def test_k_below_one_is_refused_when_the_task_is_built(arguments, name):
    with pytest.raises(ValueError, match=rf"^{name} must be an integer from 1 to 16384 .*got -?\d+\.$"):
        MilvusSearchToXComOperator(task_id="s", collection_name="c", queries="q", **arguments)
