"""New collections chosen by the DAG (metric, index, partition key, typed fields, dynamic field), and the hook
on collections it did not create. On Milvus Lite and a real Milvus standalone; read back with pymilvus."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_milvus.core.collection import NewCollection
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusSearchToXComOperator

from tests.test_existing_collections import tenants

if TYPE_CHECKING:
    from tests.conftest import Tier

TYPES = {5: "INT64", 21: "VARCHAR", 11: "DOUBLE", 1: "BOOL", 101: "FLOAT_VECTOR"}


def fields(tier: Tier, collection: str) -> dict[str, dict]:
    return {f["name"]: f for f in tier.client.describe_collection(collection)["fields"]}


def add(tier: Tier, collection: str, documents, embedding_conn_id: str, **kwargs):
    return MilvusAddDocumentsOperator(
        task_id="w",
        milvus_conn_id=tier.conn_id,
        collection_name=collection,
        embedding_conn_id=embedding_conn_id,
        documents=documents,
        **kwargs,
    ).execute({})


def test_a_dag_chooses_metric_index_partition_key_and_typed_fields(tier, name, embedding_conn_id):
    options = NewCollection(
        metric_type="L2",
        index_type="HNSW",
        index_params={"M": 8, "efConstruction": 32},
        partition_key_field="tenant",
        scalar_fields={"year": "INT64", "lang": "VARCHAR(8)", "score": "DOUBLE"},
        dynamic_field=False,
    )
    docs = [
        {"page_content": f"note {i}", "metadata": {"year": 2020 + i, "lang": "en", "score": i / 2}} for i in range(4)
    ]
    add(tier, name, docs, embedding_conn_id, new_collection=options, partition_key_value="acme")
    described = fields(tier, name)
    assert {k: TYPES.get(f["type"]) for k, f in described.items()} == {
        "pk": "VARCHAR",
        "text": "VARCHAR",
        "tenant": "VARCHAR",
        "year": "INT64",
        "lang": "VARCHAR",
        "score": "DOUBLE",
        "vector": "FLOAT_VECTOR",
    }
    assert described["tenant"].get("is_partition_key")
    assert described["lang"]["params"]["max_length"] == 8
    assert not tier.client.describe_collection(name)["enable_dynamic_field"]
    index = tier.client.describe_index(name, "vector")
    assert (index["index_type"], index["metric_type"]) == ("HNSW", "L2")
    rows = tier.rows(name, "year >= 2022", ["year", "lang", "tenant"])
    assert sorted((r["year"], r["lang"], r["tenant"]) for r in rows) == [(2022, "en", "acme"), (2023, "en", "acme")]


def test_new_collection_options_travel_through_deferral_as_plain_data(tier, name, embedding_conn_id):
    from tests.test_operators import run

    operator = MilvusAddDocumentsOperator(
        task_id="w",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        documents=["a", "b"],
        new_collection={"metric_type": "IP", "index_type": "FLAT"},
    )
    assert run(operator, "deferred")["written"] == 2
    assert tier.client.describe_index(name, "vector")["metric_type"] == "IP"


def test_a_wrong_value_type_for_a_typed_field_fails_before_writing(tier, name, embedding_conn_id):
    add(
        tier,
        name,
        [{"page_content": "seed", "metadata": {"year": 2019}}],
        embedding_conn_id,
        new_collection={"scalar_fields": {"year": "INT64"}},
    )
    with pytest.raises(MilvusProviderError, match=r"metadata 'year' = 'last year' does not fit field 'year' \(INT64\)"):
        add(
            tier,
            name,
            [
                {"page_content": "ok", "metadata": {"year": 2020}},
                {"page_content": "bad", "metadata": {"year": "last year"}},
            ],
            embedding_conn_id,
        )
    assert tier.count(name) == 1


def test_unknown_new_collection_options_are_named(tier, name, embedding_conn_id):
    with pytest.raises(MilvusProviderError, match=r"unknown keys \['metric'\]"):
        add(tier, name, ["x"], embedding_conn_id, new_collection={"metric": "L2"})


def test_two_tasks_creating_the_same_collection_at_once_both_succeed(tier, name, embedding_conn_id):
    results, errors = [], []

    def write(prefix: str) -> None:
        try:
            results.append(add(tier, name, [f"{prefix} doc {i}" for i in range(20)], embedding_conn_id))
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=write, args=(p,)) for p in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert [r["written"] for r in results] == [20, 20]
    assert tier.count(name) == 40


def test_a_write_waits_for_the_index_of_a_collection_another_task_is_still_creating(
    tier, name, embedding_conn_id, embeddings
):
    """The window between ``create_collection`` and its index, held open: the write waits, then succeeds."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=embeddings.dimensions)
    tier.client.create_collection(name, schema=schema)  # no index yet: a load is refused

    def index_later() -> None:
        time.sleep(1.0)
        index = MilvusClient.prepare_index_params()
        index.add_index("vector", index_type="AUTOINDEX", metric_type="COSINE")
        tier.client.create_index(name, index)

    creator = threading.Thread(target=index_later)
    creator.start()
    summary = add(tier, name, ["waited for the index"], embedding_conn_id)
    creator.join()
    assert summary["written"] == 1
    assert tier.count(name) == 1


def test_a_first_run_embeds_while_milvus_is_still_loading_the_collection_it_created(
    tier, name, embedding_conn_id, embeddings
):
    """Loading a new collection takes seconds on a real server and writes need none: embedding does not wait."""
    from pymilvus.client.types import LoadState

    if not tier.real_server:
        pytest.skip("Milvus Lite loads a collection at once: there is no wait to overlap")
    requests_when_loaded: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if tier.client.has_collection(name) and tier.client.get_load_state(name)["state"] == LoadState.Loaded:
                requests_when_loaded.append(embeddings.stats.requests)
                return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    summary = add(tier, name, [f"doc {i}" for i in range(5)], embedding_conn_id)
    watcher.join()
    assert summary["written"] == 5
    assert requests_when_loaded, "the collection was never loaded"
    assert requests_when_loaded[0] == 2, "the model's dimension probe, then the chunks' request, before it was loaded"


def test_a_first_run_returns_with_the_collection_it_created_loaded_for_searches(tier, name, embedding_conn_id):
    from pymilvus.client.types import LoadState

    add(tier, name, [f"doc {i}" for i in range(5)], embedding_conn_id)
    assert tier.client.get_load_state(name)["state"] == LoadState.Loaded
    assert tier.count(name) == 5


def test_provider_collection_metadata_named_text_or_pk_is_refused(tier, name, embedding_conn_id):
    add(tier, name, ["seed"], embedding_conn_id)
    for key in ("text", "pk"):
        with pytest.raises(MilvusProviderError, match=rf"Metadata keys \['{key}'\] collide"):
            add(tier, name, [{"page_content": "real text", "metadata": {key: "overwrite"}}], embedding_conn_id)
    assert [r["text"] for r in tier.rows(name, 'pk != ""', ["text"])] == ["seed"]


def test_the_hook_maps_a_langchain_store_onto_an_existing_collection(tier, name, embedding_conn_id):
    tenants(tier, name)
    hook = MilvusHook(tier.conn_id)
    schema = hook.get_collection_schema(name)
    assert (schema.primary, schema.text, schema.dense.name, schema.partition_key) == ("doc_id", "body", "emb", "tenant")
    store = hook.get_vector_store(name, embedding_conn_id=embedding_conn_id)
    docs = store.similarity_search("zen report 3 about invoices", k=1, expr='tenant == "zen"')
    assert docs[0].page_content == "zen report 3 about invoices"
    assert docs[0].metadata["doc_id"] == "zen-3"


def test_search_of_a_new_l2_collection_scores_higher_is_better(tier, name, embedding_conn_id):
    texts = ["rivers flow into the sea", "mountains are tall and cold", "deserts hold dry sand"]
    add(tier, name, texts, embedding_conn_id, new_collection={"metric_type": "L2", "index_type": "FLAT"})
    hits = MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        embedding_conn_id=embedding_conn_id,
        queries=texts[0],
        k=3,
    ).execute({})
    assert hits[0]["page_content"] == texts[0]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
