"""Searches send one Milvus request per batch of queries, and the answers equal one-query-at-a-time searches.

The reference is langchain-milvus's own ``similarity_search_with_score``, one query per call, on a store
the hook maps onto the same collection. Dense on Milvus Lite and a real Milvus standalone; BM25 and
hybrid on Milvus Lite (Milvus 2.3 has neither).
"""

from __future__ import annotations

import asyncio
import math
import random
from typing import TYPE_CHECKING

import pytest

from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusSearchToXComOperator

from tests.test_operators import MODES, run

if TYPE_CHECKING:
    from tests.conftest import Tier

VOCABULARY = [f"term{i}" for i in range(400)]
K = 5


def texts(count: int, seed: int, words: int) -> list[str]:
    """Random texts of varied length with repeated words."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(VOCABULARY[:150], k=rng.randint(words // 2, words * 2))) for _ in range(count)]


def corpus_texts(count: int) -> list[str]:
    """Every text a different length: BM25 scores (and so hybrid ranks) do not tie."""
    rng = random.Random(1)
    return [" ".join(rng.choices(VOCABULARY[:150], k=4 + i)) for i in range(count)]


@pytest.fixture
def collection(tier, collection_name, request, embedding_conn_id):
    kind = getattr(request, "param", "dense")
    if kind != "dense":
        tier.skip_unless_bm25()
    options = {"embedding_conn_id": embedding_conn_id} if kind in ("dense", "hybrid") else {}
    documents = [{"page_content": t, "metadata": {"group": i % 3}} for i, t in enumerate(corpus_texts(300))]
    MilvusAddDocumentsOperator(
        task_id="seed",
        milvus_conn_id=tier.conn_id,
        collection_name=collection_name,
        documents=documents,
        batch_size=100,
        full_text_search=kind != "dense",
        **options,
    ).execute({})
    return collection_name, options, kind == "hybrid"


def comparable(hits: list[dict], score_key=lambda h: h["score"]) -> tuple:
    """Ids in score order; hits tied with the last one (which of them made the cut is arbitrary) as a count."""
    if not hits:
        return ()
    last = round(score_key(hits[-1]), 4)
    head = [(round(score_key(h), 4), h["id"]) for h in hits if round(score_key(h), 4) != last]
    return tuple(sorted(head, key=lambda pair: (-pair[0], str(pair[1])))), len(hits) - len(head)


def reference(
    tier: Tier, collection: str, queries: list[str], options: dict, expr: str | None, hybrid: bool
) -> list[tuple]:
    hook = MilvusHook(tier.conn_id)
    store = hook.get_vector_store(collection, **options)
    schema = hook.get_collection_schema(collection)
    answers = []
    for query in queries:
        ranker = {"ranker_type": "rrf", "fetch_k": 20} if hybrid else {}
        pairs = store.similarity_search_with_score(query, k=K, expr=expr, **ranker)
        hits = [{"id": doc.metadata[schema.primary], "score": score} for doc, score in pairs]
        answers.append(comparable(hits, score_key=lambda h: abs(h["score"])))
    return answers


@pytest.mark.parametrize("collection", ["dense", "bm25", "hybrid"], indirect=True)
@pytest.mark.parametrize("count", [1, 16])
@pytest.mark.parametrize("expr", [None, "group == 1"])
def test_batched_hits_equal_one_query_at_a_time(tier, collection, count, expr):
    name, options, hybrid = collection
    queries = texts(count, 2, 3)
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        queries=queries,
        k=K,
        expr=expr,
        batch_size=16,
        **options,
    ).execute({})
    expected = reference(tier, name, queries, options, expr, hybrid)
    ours = [comparable(h, score_key=lambda h: h["score"]) for h in hits]
    assert ours == expected
    if expr:
        assert all(hit["metadata"]["group"] == 1 for query_hits in hits for hit in query_hits)


@pytest.mark.parametrize("collection", ["dense", "bm25", "hybrid"], indirect=True)
@pytest.mark.parametrize("mode", MODES)
def test_a_thousand_queries_keep_their_order_and_take_ceil_n_over_batch_requests(tier, collection, mode, monkeypatch):
    from pymilvus import AsyncMilvusClient

    name, options, hybrid = collection
    # Every search request, plain or hybrid, as (method, queries in it): a hybrid search carries its
    # queries in each sub-request, and all of them must hold the same batch.
    requests: list[tuple[str, int]] = []
    original_search, original_hybrid = AsyncMilvusClient.search, AsyncMilvusClient.hybrid_search

    async def counting_search(self, *args, **kwargs):
        requests.append(("search", len(kwargs.get("data") or args[1])))
        return await original_search(self, *args, **kwargs)

    async def counting_hybrid_search(self, *args, **kwargs):
        sizes = {len(r.data) for r in (kwargs.get("reqs") or args[1])}
        assert len(sizes) == 1, f"sub-requests of one hybrid search hold different batches: {sizes}"
        requests.append(("hybrid_search", sizes.pop()))
        return await original_hybrid(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "search", counting_search)
    monkeypatch.setattr(AsyncMilvusClient, "hybrid_search", counting_hybrid_search)
    queries = texts(1000, 3, 3)
    hits = run(
        MilvusSearchToXComOperator(
            task_id="s",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            queries=queries,
            k=K,
            batch_size=64,
            max_concurrency=4,
            **options,
        ),
        mode,
    )
    assert {method for method, _ in requests} == {"hybrid_search" if hybrid else "search"}
    sizes = [size for _, size in requests]
    assert len(sizes) == math.ceil(1000 / 64)
    assert sum(sizes) == 1000
    assert max(sizes) == 64
    monkeypatch.setattr(AsyncMilvusClient, "search", original_search)
    monkeypatch.setattr(AsyncMilvusClient, "hybrid_search", original_hybrid)
    sample = random.Random(4).sample(range(1000), 12)
    expected = reference(tier, name, [queries[i] for i in sample], options, None, hybrid)
    assert [comparable(hits[i]) for i in sample] == expected


def test_mmr_picks_diverse_hits_among_the_fetched_candidates(tier, collection_name, embedding_conn_id):
    base = "alpha beta gamma delta"
    documents = [base, base + " x", base + " y", "alpha epsilon zeta eta", "theta iota kappa lambda"]
    MilvusAddDocumentsOperator(
        task_id="seed",
        milvus_conn_id=tier.conn_id,
        collection_name=collection_name,
        documents=documents,
        embedding_conn_id=embedding_conn_id,
    ).execute({})
    common = dict(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=collection_name,
        embedding_conn_id=embedding_conn_id,
        queries=base,
        k=2,
    )
    similar = MilvusSearchToXComOperator(**common).execute({})
    diverse = MilvusSearchToXComOperator(**common, search_type="mmr", fetch_k=5, lambda_mult=0.1).execute({})
    assert similar[0]["page_content"] == diverse[0]["page_content"] == base
    assert similar[1]["page_content"].startswith(base)  # the near-duplicate is the next most similar
    assert not diverse[1]["page_content"].startswith(base)  # MMR trades it for a different document
    assert all(hit["score"] is None for hit in diverse)


def test_later_batches_are_embedded_while_earlier_ones_are_searched(tier, collection, monkeypatch):
    """One embedding request and one search in flight (max_concurrency=1), overlapping, not taking turns."""
    from langchain_openai import OpenAIEmbeddings
    from pymilvus import AsyncMilvusClient

    name, options, _ = collection
    events: list[str] = []
    original_embed, original_search = OpenAIEmbeddings.aembed_documents, AsyncMilvusClient.search

    async def embed(self, texts, *args, **kwargs):
        events.append(f"embed {texts[0]} start")
        try:
            return await original_embed(self, texts, *args, **kwargs)
        finally:
            events.append(f"embed {texts[0]} end")

    async def search(self, *args, **kwargs):
        events.append("search start")
        await asyncio.sleep(0.1)  # a slow server: the next batch's embedding should not wait for it
        try:
            return await original_search(self, *args, **kwargs)
        finally:
            events.append("search end")

    monkeypatch.setattr(OpenAIEmbeddings, "aembed_documents", embed)
    monkeypatch.setattr(AsyncMilvusClient, "search", search)
    queries = [f"term{i} term{i + 1}" for i in range(4)]
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        queries=queries,
        k=K,
        batch_size=1,
        max_concurrency=1,
        **options,
    ).execute({})
    assert len(hits) == 4
    assert events.index(f"embed {queries[1]} start") < events.index("search end")
    assert events.count("search start") == 4
    in_flight = peak = 0  # still one search at a time
    for event in events:
        if event.startswith("search"):
            in_flight += 1 if event.endswith("start") else -1
            peak = max(peak, in_flight)
    assert peak == 1


def test_searches_without_scores_read_no_index_and_use_the_index_metric(tier, name, embedding_conn_id, monkeypatch):
    """The index's metric (here L2) only converts scores; unscored searches leave it to Milvus."""
    from pymilvus import AsyncMilvusClient

    from tests.test_existing_collections import products

    products(tier, name)
    described: list[str] = []
    original = AsyncMilvusClient.describe_index

    async def describe_index(self, collection_name, index_name, *args, **kwargs):
        described.append(index_name)
        return await original(self, collection_name, index_name, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "describe_index", describe_index)
    common = dict(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        queries=["sofa number 4 in oak", "lamp number 2 in oak"],
        k=3,
    )
    plain = MilvusSearchToXComOperator(**common, search_type="similarity").execute({})
    assert described == []
    assert [hits[0]["metadata"]["category"] for hits in plain] == ["sofa", "lamp"]
    assert all(hit["score"] is None for hits in plain for hit in hits)
    scored = MilvusSearchToXComOperator(**common, search_type="similarity_score").execute({})
    assert described  # L2 distances become 1 / (1 + distance): the metric is read
    assert scored[0][0]["score"] == pytest.approx(1.0, abs=1e-4)
