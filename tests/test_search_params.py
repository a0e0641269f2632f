"""``search_params`` on index types langchain-milvus has no defaults for (HNSW_SQ, DISKANN), on Milvus Lite.

langchain-milvus looks the index type up in ``default_search_params`` and raises ``KeyError`` for these;
the search operator never looks defaults up: it sends the caller's ``search_params`` (or none) as they
are. Milvus standalone 2.3.5 has neither index type, so this runs on Milvus Lite, which builds both.
"""

from __future__ import annotations

import pytest

from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import MilvusSearchToXComOperator

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS

INDEXES = {
    "HNSW_SQ": ({"M": 8, "efConstruction": 64, "sq_type": "SQ8"}, {"ef": 32}),
    "DISKANN": ({}, {"search_list": 20}),
}
TEXTS = [f"entry{i} alpha{i} omega{i}" for i in range(20)]  # no word shared: the nearest is the text itself


@pytest.fixture(params=list(INDEXES))
def indexed(request, tier, name):
    """A collection made with pymilvus: VARCHAR ``pk``, ``text``, ``vector`` under the index type of the param."""
    from pymilvus import DataType, MilvusClient

    if tier.real_server:
        pytest.skip("Milvus 2.3.5 has no HNSW_SQ or DISKANN index")
    index_type = request.param
    build, search = INDEXES[index_type]
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=2000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type="COSINE", params=build)
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    tier.client.insert(
        name,
        [{"pk": f"n{i}", "text": t, "vector": embed_text(t, EMBEDDING_DIMENSIONS)} for i, t in enumerate(TEXTS)],
    )
    return name, index_type, search


def test_langchain_milvus_has_no_defaults_for_these_index_types(tier, indexed, embedding_conn_id):
    name, index_type, _ = indexed
    store = MilvusHook(tier.conn_id).get_vector_store(name, embedding_conn_id=embedding_conn_id)
    assert index_type not in store.default_search_params


@pytest.mark.parametrize("given", [True, False], ids=["search_params", "none"])
def test_the_search_sends_the_callers_search_params_and_finds_the_nearest(
    tier, indexed, given, embedding_conn_id, monkeypatch
):
    from pymilvus import AsyncMilvusClient

    name, _, search_params = indexed
    sent: list[dict] = []
    original = AsyncMilvusClient.search

    async def recording_search(self, *args, **kwargs):
        sent.append(kwargs["search_params"])
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "search", recording_search)
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        embedding_conn_id=embedding_conn_id,
        collection_name=name,
        queries=[TEXTS[6], TEXTS[13]],
        k=1,
        deferrable=False,
        **({"search_params": search_params} if given else {}),
    ).execute({})
    assert [s["params"] for s in sent] == [search_params if given else {}]
    assert [[h["page_content"] for h in per_query] for per_query in hits] == [[TEXTS[6]], [TEXTS[13]]]
