"""INT64 primary keys the caller sets, and the refusals of ``core/rows.py``, on collections made with pymilvus.

INT64 without auto-id takes integers, digit strings, or the ids the provider derives from content (63-bit
numbers), and refuses anything else before writing. Rows are checked before anything is written: a
missing required field, an id longer than the VARCHAR primary key, a chunk whose partition key disagrees
with the task's tenant. Each runs on Milvus Lite and the real standalone 2.3.5, read back with pymilvus.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.conftest import EMBEDDING_DIMENSIONS, Tier
from tests.test_existing_collections import tenants
from tests.test_operators import MODES, run

DIM = EMBEDDING_DIMENSIONS


def collection(tier: Tier, name: str, primary: Any, *, dynamic: bool = True, required: str | None = None) -> None:
    """``pk`` (``primary``: a DataType, with its keyword arguments), ``text``, ``vector`` COSINE."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=dynamic)
    kind, options = primary
    schema.add_field("pk", kind, is_primary=True, **options)
    schema.add_field("text", DataType.VARCHAR, max_length=2000)
    if required:
        schema.add_field(required, DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")


def int64(tier: Tier, name: str) -> None:
    from pymilvus import DataType

    collection(tier, name, (DataType.INT64, {}))


def add(tier: Tier, name: str, documents: list, embedding_conn_id: str, mode: str = "inline", **kwargs: Any) -> Any:
    return run(
        MilvusAddDocumentsOperator(
            task_id="w",
            milvus_conn_id=tier.conn_id,
            collection_name=name,
            embedding_conn_id=embedding_conn_id,
            documents=documents,
            **kwargs,
        ),
        mode,
    )


def stored(tier: Tier, name: str) -> dict[int, str]:
    return {row["pk"]: row["text"] for row in tier.rows(name, "pk != 0 or pk == 0", ["pk", "text"])}


# --- INT64 primary keys without auto-id ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_integer_and_digit_string_ids_are_stored_as_those_numbers(tier, name, mode, embedding_conn_id):
    int64(tier, name)
    documents = [
        {"page_content": "seven", "metadata": {"doc_id": 7}},
        {"page_content": "forty-two", "metadata": {"doc_id": "42"}},
        # Not 2**63 - 1: Milvus 2.3.5 stores it (count(*) says so) but no filter finds it, not even pk == it.
        {"page_content": "large", "metadata": {"doc_id": str(2**62 + 1)}},
        {"page_content": "negative", "metadata": {"doc_id": -3}},
    ]
    add(tier, name, documents, embedding_conn_id, mode, id_key="doc_id")
    assert stored(tier, name) == {7: "seven", 42: "forty-two", 2**62 + 1: "large", -3: "negative"}
    add(tier, name, documents, embedding_conn_id, mode, id_key="doc_id")  # a re-run: the same four rows
    assert tier.count(name) == 4


@pytest.mark.parametrize("mode", MODES)
def test_derived_ids_are_63_bit_numbers_and_a_rerun_keeps_them(tier, name, mode, embedding_conn_id):
    int64(tier, name)
    documents = [f"derived document {i} about rivers" for i in range(30)]
    add(tier, name, documents, embedding_conn_id, mode)
    first = stored(tier, name)
    assert sorted(first.values()) == sorted(documents)
    assert all(0 <= pk < 2**63 for pk in first), sorted(first)
    add(tier, name, documents, embedding_conn_id, mode)
    assert stored(tier, name) == first
    assert tier.count(name) == 30


@pytest.mark.parametrize("bad", ["abc", "12x", str(2**63), -(2**63) - 1], ids=["letters", "mixed", "over", "under"])
def test_an_id_that_is_not_a_64_bit_integer_is_refused_before_writing(tier, name, bad, embedding_conn_id, embeddings):
    int64(tier, name)
    documents = [
        {"page_content": "fine", "metadata": {"doc_id": 1}},
        {"page_content": "bad", "metadata": {"doc_id": bad}},
    ]
    embeddings.reset_stats()
    # An integer outside INT64 is refused with the other metadata values, before ids are derived.
    under = bad == -(2**63) - 1
    refused = r"Document 1: metadata 'doc_id' = -9223\d+ is outside the INT64 range" if under else "not a 64-bit.*INT64"
    with pytest.raises(MilvusProviderError, match=refused):
        add(tier, name, documents, embedding_conn_id, id_key="doc_id")
    assert tier.count(name) == 0
    assert embeddings.stats.requests == 0


# --- refusals before anything is written ---------------------------------------------------------------------


def test_a_missing_required_field_is_refused_before_writing(tier, name, embedding_conn_id, embeddings):
    from pymilvus import DataType

    collection(tier, name, (DataType.VARCHAR, {"max_length": 64}), dynamic=False, required="category")
    documents = [  # the id key named after the primary field: no dynamic field needed for it
        {"page_content": "has it", "metadata": {"pk": "a", "category": "x"}},
        {"page_content": "lacks it", "metadata": {"pk": "b"}},
    ]
    embeddings.reset_stats()
    with pytest.raises(MilvusProviderError, match=r"'b'.*no metadata 'category', a required VARCHAR field"):
        add(tier, name, documents, embedding_conn_id, id_key="pk")
    assert tier.count(name) == 0
    assert embeddings.stats.requests == 0


def test_an_id_longer_than_the_varchar_primary_key_is_refused_before_writing(tier, name, embedding_conn_id):
    from pymilvus import DataType

    collection(tier, name, (DataType.VARCHAR, {"max_length": 8}))
    documents = [
        {"page_content": "short", "metadata": {"doc_id": "ok"}},
        {"page_content": "long", "metadata": {"doc_id": "nine-byte"}},
    ]
    with pytest.raises(MilvusProviderError, match=r"'nine-byte'.*longer than 8 bytes.*'pk'"):
        add(tier, name, documents, embedding_conn_id, id_key="doc_id")
    assert tier.count(name) == 0


def test_a_chunk_of_another_tenant_is_refused_before_writing(tier, name, embedding_conn_id):
    tenants(tier, name)  # 12 rows: 6 for acme, 6 for zen
    documents = [
        {"page_content": "acme's", "metadata": {"doc_id": "n1", "tenant": "acme"}},
        {"page_content": "zen's", "metadata": {"doc_id": "n2", "tenant": "zen"}},
    ]
    with pytest.raises(MilvusProviderError, match=r"tenant='zen'.*partition_key_value='acme'"):
        add(tier, name, documents, embedding_conn_id, id_key="doc_id", partition_key_value="acme")
    assert tier.count(name) == 12
