"""
Collections whose vectors Milvus computes itself: a ``TEXT_EMBEDDING`` function fills the dense field.

On Milvus Lite 3.2 the function's OpenAI-compatible provider calls the loopback embeddings server over
real HTTP (its ``base_url``), so every embedding Milvus makes is counted there. No embedding connection
is configured: writes send text only, searches send query text, and the provider never embeds.
Milvus 2.3.5 has no functions: its refusal is tested in tests/standalone/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_milvus.core.schema import EMBEDDING_PROPERTY
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

from testing.servers.embeddings_server import EmbeddingServer, embed_text
from tests.test_operators import run

DIM = 16
API_KEY = "sk-server-side-0000"  # the key Milvus sends to the provider (a function param on Milvus Lite)
CORPUS = {
    "pets.md": ["cats purr on warm sofas", "dogs fetch sticks in the park"],
    "space.md": ["rockets leave orbit at dawn", "telescopes watch distant galaxies"],
    "food.md": ["bakers knead sourdough bread"],
}


@pytest.fixture(scope="module")
def provider() -> Iterator[EmbeddingServer]:
    """The embedding provider Milvus calls (not the task): its own server, so its counts are Milvus's alone."""
    with EmbeddingServer(dimensions=DIM, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def milvus(provider: EmbeddingServer, milvus_client: Any) -> Any:
    provider.reset_stats()
    return milvus_client


def function_params(provider: EmbeddingServer) -> dict[str, Any]:
    return {"provider": "openai", "model_name": "test-embedding", "base_url": provider.base_url, "api_key": API_KEY}


def make_collection(
    client: Any, name: str, provider: EmbeddingServer, *, bm25: bool = False, auto_id: bool = False
) -> None:
    """What another application makes with pymilvus: its own field names, Milvus embeds ``passage``."""
    from pymilvus import DataType, Function, FunctionType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=auto_id, enable_dynamic_field=True)
    if auto_id:
        schema.add_field("doc_id", DataType.INT64, is_primary=True, auto_id=True)
    else:
        schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("passage", DataType.VARCHAR, max_length=2000, **({"enable_analyzer": True} if bm25 else {}))
    schema.add_field("dense", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_function(
        Function(
            name="embed_passage",
            function_type=FunctionType.TEXTEMBEDDING,
            input_field_names=["passage"],
            output_field_names=["dense"],
            params=function_params(provider),
        )
    )
    index = MilvusClient.prepare_index_params()
    index.add_index("dense", index_type="AUTOINDEX", metric_type="COSINE")
    if bm25:
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["passage"],
                output_field_names=["sparse"],
            )
        )
        index.add_index(
            "sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params={"drop_ratio_build": 0}
        )
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def documents(corpus: dict[str, list[str]] = CORPUS) -> list[dict[str, Any]]:
    return [
        {"page_content": text, "metadata": {"source": source}} for source, texts in corpus.items() for text in texts
    ]


def add(conn_id: str, name: str, docs: list[dict[str, Any]], mode: str = "inline", **kwargs: Any) -> dict[str, Any]:
    """A full sync of the corpus: each source replaced whole, sources absent from ``docs`` deleted."""
    options = {"replace_by": "source", "delete_missing": True, **kwargs}
    operator = MilvusAddDocumentsOperator(
        task_id="add", milvus_conn_id=conn_id, collection_name=name, documents=docs, **options
    )
    return run(operator, mode)


def search(conn_id: str, name: str, queries: Any, **kwargs: Any) -> list[list[dict[str, Any]]]:
    operator = MilvusSearchToXComOperator(
        task_id="search", milvus_conn_id=conn_id, collection_name=name, queries=queries, k=1, **kwargs
    )
    return run(operator, "inline")


def stored(client: Any, name: str) -> dict[str, dict[str, Any]]:
    rows = client.query(name, filter='passage != ""', output_fields=["doc_id", "passage", "dense"], limit=100)
    return {row["passage"]: row for row in rows}


@pytest.fixture
def ingested(milvus: Any, provider: EmbeddingServer, milvus_conn_id: str, collection_name: str) -> str:
    """A pymilvus-made collection holding CORPUS, written by the add operator; the provider's counters reset."""
    make_collection(milvus, collection_name, provider)
    add(milvus_conn_id, collection_name, documents())
    provider.reset_stats()
    return collection_name


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_an_ingest_sends_text_only_and_milvus_embeds_it_over_http(
    mode, milvus, provider, milvus_conn_id, collection_name
):
    make_collection(milvus, collection_name, provider)
    summary = add(milvus_conn_id, collection_name, documents(), mode)
    assert summary["written"] == 5
    assert summary["embedded"] == 0, "the task itself embedded nothing"
    assert provider.stats.inputs == 5, "Milvus embedded every written text, through the provider's HTTP API"
    assert set(provider.stats.authorization_headers) == {f"Bearer {API_KEY}"}
    rows = stored(milvus, collection_name)
    assert rows["cats purr on warm sofas"]["dense"] == pytest.approx(embed_text("cats purr on warm sofas", DIM))


def test_an_unchanged_rerun_writes_nothing_and_embeds_nothing(milvus, provider, milvus_conn_id, ingested):
    summary = add(milvus_conn_id, ingested, documents())
    assert (summary["written"], summary["unchanged"], summary["skipped_sources"]) == (0, 5, 3)
    assert provider.stats.requests == 0


def test_an_unchanged_rerun_without_the_ledger_compares_each_chunk_and_writes_nothing(
    milvus, provider, milvus_conn_id, ingested
):
    summary = add(milvus_conn_id, ingested, documents(), track_sources=False)
    assert (summary["written"], summary["unchanged"]) == (0, 5)
    assert provider.stats.requests == 0


@pytest.mark.parametrize(("track_sources", "rewritten"), [(True, 2), (False, 1)])
def test_an_edit_rewrites_the_changed_source_and_removes_the_old_chunk(
    track_sources, rewritten, milvus, provider, milvus_conn_id, ingested
):
    # With the source ledger every row of a changed source takes the new version's digest, so its unchanged
    # chunk is rewritten too, and Milvus embeds it again (a function's output field takes no stored vector).
    corpus = {**CORPUS, "pets.md": ["cats purr on warm sofas", "dogs chase balls on the beach"]}
    summary = add(milvus_conn_id, ingested, documents(corpus), track_sources=track_sources)
    assert (summary["written"], summary["stale_deleted"], summary["reused_vectors"]) == (rewritten, 1, 0)
    assert provider.stats.inputs == rewritten, "Milvus embedded each rewritten text, nothing else"
    rows = stored(milvus, ingested)
    assert "dogs fetch sticks in the park" not in rows
    assert rows["dogs chase balls on the beach"]["dense"] == pytest.approx(
        embed_text("dogs chase balls on the beach", DIM)
    )


def test_a_source_gone_from_the_corpus_is_deleted(milvus, provider, milvus_conn_id, ingested):
    corpus = {k: v for k, v in CORPUS.items() if k != "space.md"}
    summary = add(milvus_conn_id, ingested, documents(corpus))
    assert (summary["written"], summary["vanished_deleted"]) == (0, 2)
    assert sorted(stored(milvus, ingested)) == sorted(t for texts in corpus.values() for t in texts)


def test_a_delete_by_expression_needs_no_embedding(milvus, provider, milvus_conn_id, ingested):
    operator = MilvusDeleteByExprOperator(
        task_id="delete",
        milvus_conn_id=milvus_conn_id,
        collection_name=ingested,
        expr="source == {source}",
        expr_params={"source": "food.md"},
    )
    assert run(operator, "inline")["deleted"] == 1
    assert len(stored(milvus, ingested)) == 4
    assert provider.stats.requests == 0


def test_an_upsert_by_id_sends_text_only(milvus, provider, milvus_conn_id, ingested):
    operator = MilvusUpsertOperator(
        task_id="upsert",
        milvus_conn_id=milvus_conn_id,
        collection_name=ingested,
        documents=[{"page_content": "comets have icy tails", "metadata": {"id": "c1"}}],
        id_key="id",
    )
    assert run(operator, "inline")["written"] == 1
    assert provider.stats.inputs == 1
    assert stored(milvus, ingested)["comets have icy tails"]["doc_id"] == "c1"


def test_an_auto_id_collection_replaces_a_changed_source_by_inserting_text_only(
    milvus, provider, milvus_conn_id, collection_name
):
    make_collection(milvus, collection_name, provider, auto_id=True)
    add(milvus_conn_id, collection_name, documents())
    provider.reset_stats()
    corpus = {**CORPUS, "food.md": ["bakers knead rye bread"]}
    summary = add(milvus_conn_id, collection_name, documents(corpus))
    assert (summary["written"], summary["stale_deleted"], provider.stats.inputs) == (1, 1, 1)
    assert sorted(stored(milvus, collection_name)) == sorted(t for texts in corpus.values() for t in texts)


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_a_search_sends_query_text_that_milvus_embeds(mode, milvus, provider, milvus_conn_id, ingested):
    operator = MilvusSearchToXComOperator(
        task_id="search",
        milvus_conn_id=milvus_conn_id,
        collection_name=ingested,
        queries=["which cats purr", "distant galaxies"],
        k=1,
    )
    hits = run(operator, mode)
    assert [h[0]["page_content"] for h in hits] == ["cats purr on warm sofas", "telescopes watch distant galaxies"]
    assert hits[0][0]["metadata"] == {"source": "pets.md"}
    assert hits[0][0]["score"] > 0
    assert provider.stats.inputs == 2, "Milvus embedded both query texts"


def test_a_search_by_vector_sends_the_vector_and_milvus_embeds_nothing(milvus, provider, milvus_conn_id, ingested):
    hits = search(milvus_conn_id, ingested, [embed_text("bakers knead sourdough bread", DIM)])
    assert hits[0][0]["page_content"] == "bakers knead sourdough bread"
    assert provider.stats.requests == 0


def test_the_hooks_vector_store_needs_no_embedding_connection_and_milvus_embeds_text_and_queries(
    milvus, provider, milvus_conn_id, ingested
):
    from airflow_provider_milvus.hooks.milvus import MilvusHook

    store = MilvusHook(milvus_conn_id=milvus_conn_id).get_vector_store(ingested)
    store.add_texts(["comets trail ice and dust"], metadatas=[{"source": "comets.md"}], ids=["comet-1"])
    assert provider.stats.inputs == 1, "Milvus embedded the added text"
    hits = store.similarity_search("comets trail ice and dust", k=1)
    assert hits[0].page_content == "comets trail ice and dust"
    assert provider.stats.inputs == 2, "Milvus embedded the query text"


def test_mmr_is_refused_because_milvus_keeps_the_query_vectors(milvus, provider, milvus_conn_id, ingested):
    with pytest.raises(MilvusProviderError, match="mmr.*embeds queries in Milvus"):
        search(milvus_conn_id, ingested, ["cats"], search_type="mmr")


def test_a_hybrid_collection_fuses_milvus_embeddings_with_bm25(milvus, provider, milvus_conn_id, collection_name):
    make_collection(milvus, collection_name, provider, bm25=True)
    add(milvus_conn_id, collection_name, documents())
    provider.reset_stats()
    hits = search(milvus_conn_id, collection_name, ["sourdough bread"])
    assert hits[0][0]["page_content"] == "bakers knead sourdough bread"
    assert provider.stats.inputs == 1, "the dense half of the hybrid search: Milvus embedded the query"


def test_an_embedding_connection_configured_anyway_is_never_called(
    milvus, provider, milvus_conn_id, embedding_conn_id, embeddings, ingested
):
    corpus = {**CORPUS, "food.md": ["bakers knead rye bread"]}
    add(milvus_conn_id, ingested, documents(corpus), embedding_conn_id=embedding_conn_id)
    search(milvus_conn_id, ingested, ["rye bread"], embedding_conn_id=embedding_conn_id)
    assert embeddings.stats.requests == 0, "the task's own embedding API was not called"
    assert provider.stats.inputs == 2, "Milvus embedded the edited text and the query"


def test_documents_with_their_own_vectors_are_refused_before_writing(milvus, provider, milvus_conn_id, ingested):
    docs = [{"page_content": "with a vector", "metadata": {"source": "v.md"}, "vector": [0.1] * DIM}]
    with pytest.raises(MilvusProviderError, match="computes its vectors in Milvus.*must not carry a 'vector'"):
        add(milvus_conn_id, ingested, docs, delete_missing=False)
    assert len(stored(milvus, ingested)) == 5


# --- new_collection with embedding_function -----------------------------------------------------------


def test_new_collection_creates_a_collection_that_embeds_server_side(milvus, provider, milvus_conn_id, collection_name):
    new_collection = {"embedding_function": {**function_params(provider), "dim": DIM}}
    summary = add(milvus_conn_id, collection_name, documents(), new_collection=new_collection)
    assert (summary["written"], summary["embedded"], provider.stats.inputs) == (5, 0, 5)
    description = milvus.describe_collection(collection_name)
    (function,) = description["functions"]
    # TEXTEMBEDDING from text to vector (field names come back as a list, or as its repr in a string)
    assert (int(function["type"]), str(function["input_field_names"]), str(function["output_field_names"])) == (
        2,
        "['text']",
        "['vector']",
    )
    assert json.loads(description["properties"][EMBEDDING_PROPERTY]) == {
        "kind": "milvus_function",
        "function": "text_embedding",
        "provider": "openai",
        "model": "test-embedding",
        "dimensions": DIM,
    }
    provider.reset_stats()
    assert search(milvus_conn_id, collection_name, ["distant galaxies"])[0][0]["page_content"] == (
        "telescopes watch distant galaxies"
    )
    assert provider.stats.inputs == 1


def test_an_embedding_function_without_dim_is_refused_before_anything(milvus, milvus_conn_id, collection_name):
    with pytest.raises(MilvusProviderError, match="embedding_function needs dim"):
        add(
            milvus_conn_id,
            collection_name,
            documents(),
            new_collection={"embedding_function": {"provider": "openai", "model_name": "m"}},
        )
    assert not milvus.has_collection(collection_name)
