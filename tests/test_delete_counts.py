"""Deletes count exactly what they removed, evaluating the filter as few times as they can.

Up to ``DELETE_BY_PKS`` matches are read as primary keys and deleted by key: the number of keys is the
deleted count. More are counted and deleted by the filter; the delete's reply confirms that count
without a further request when it agrees, and over-reports for primary-key expressions (Milvus Lite
lists the pks it was given, a real server's ``delete_count`` counts them), when one count of what still
matches decides. On Milvus Lite and a real Milvus standalone (2.3.5), with the routes switched by
lowering ``DELETE_BY_PKS``.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_milvus.core import delete as delete_module, session as session_module
from airflow_provider_milvus.core.delete import reported_deletes
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusDeleteByExprOperator

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS, Tier
from tests.test_operators import MODES, run

ROWS = 30


def seed(tier: Tier, name: str) -> None:
    """VARCHAR ``doc_id`` p0..p29, ``body``, INT64 ``n``, ``emb`` FLAT/COSINE, made with pymilvus."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("doc_id", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("body", DataType.VARCHAR, max_length=2000)
    schema.add_field("n", DataType.INT64)
    schema.add_field("emb", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("emb", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    rows = [
        {"doc_id": f"p{i}", "body": f"row {i}", "n": i, "emb": embed_text(f"row {i}", EMBEDDING_DIMENSIONS)}
        for i in range(ROWS)
    ]
    tier.client.insert(name, rows)


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The filters of every ``Session.count`` the core sends, in order."""
    sent: list[str] = []
    original = session_module.Session.count

    async def count(self: session_module.Session, expr: str, **kwargs: Any) -> int:
        sent.append(expr)
        return await original(self, expr, **kwargs)

    monkeypatch.setattr(session_module.Session, "count", count)
    return sent


@pytest.fixture
def deletes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The filters of every delete request the core sends."""
    from pymilvus import AsyncMilvusClient

    sent: list[str] = []
    original = AsyncMilvusClient.delete

    async def delete(self: Any, collection_name: str, **kwargs: Any) -> Any:
        sent.append(kwargs.get("filter", ""))
        return await original(self, collection_name, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "delete", delete)
    return sent


def delete(tier: Tier, name: str, mode: str, expr: str, **params: Any) -> Any:
    operator = MilvusDeleteByExprOperator(
        task_id="d", milvus_conn_id=tier.conn_id, collection_name=name, expr=expr, expr_params=params
    )
    return run(operator, mode)


@pytest.mark.parametrize("mode", MODES)
def test_a_small_delete_reads_the_keys_once_and_deletes_by_key(mode, tier, name, counts, deletes):
    seed(tier, name)
    result = delete(tier, name, mode, "n < {n}", n=10)
    assert (result["matched"], result["deleted"]) == (10, 10)
    assert counts == [""]  # only the guard's total: the matches come with their keys
    assert len(deletes) == 1
    assert deletes[0].startswith("doc_id in [")
    assert sorted(deletes[0].removeprefix("doc_id in [").rstrip("]").split(", ")) == sorted(
        f'"p{i}"' for i in range(10)
    )
    assert tier.count(name) == ROWS - 10
    assert tier.count(name, "n < 10") == 0


def test_keys_too_long_for_one_request_are_deleted_by_the_filter(tier, name, counts, deletes, monkeypatch):
    monkeypatch.setattr(delete_module, "MAX_FILTER_BYTES", 10)
    seed(tier, name)
    result = delete(tier, name, "inline", "n < {n}", n=10)
    assert (result["matched"], result["deleted"]) == (10, 10)
    assert counts == [""]  # the keys were read: their number is the match count
    assert deletes == ["n < 10"]
    assert tier.count(name) == ROWS - 10


def test_missing_and_repeated_keys_are_not_counted_as_deleted(tier, name, counts, deletes):
    seed(tier, name)
    result = delete(tier, name, "inline", "doc_id in {ids}", ids=["p1", "p2", "gone", "p2"])
    assert (result["matched"], result["deleted"]) == (2, 2)
    assert tier.count(name) == ROWS - 2


def test_a_large_delete_is_counted_and_confirmed_by_the_reply(tier, name, counts, deletes, monkeypatch):
    monkeypatch.setattr(delete_module, "DELETE_BY_PKS", 5)
    seed(tier, name)
    result = delete(tier, name, "inline", "n < {n}", n=10)
    assert (result["matched"], result["deleted"]) == (10, 10)
    assert counts == ["", "n < 10"]  # the total and the matches; the reply agrees, so nothing after
    assert deletes == ["n < 10"]
    assert tier.count(name) == ROWS - 10


def test_a_reply_that_over_reports_is_checked_with_one_more_count(tier, name, counts, deletes, monkeypatch):
    """By the filter, the reply counts the 3 pks given; 2 existed: one more count shows nothing matches."""
    monkeypatch.setattr(delete_module, "DELETE_BY_PKS", 1)
    seed(tier, name)
    result = delete(tier, name, "inline", "doc_id in {ids}", ids=["p4", "p5", "gone"])
    assert (result["matched"], result["deleted"]) == (2, 2)
    assert len(counts) == 3
    assert tier.count(name) == ROWS - 2


def test_a_filter_delete_that_removed_less_than_it_matched_fails(tier, name, counts, monkeypatch):
    """A reply short of the match count is checked, and rows still matching are an error, not a count."""
    from pymilvus import AsyncMilvusClient

    monkeypatch.setattr(delete_module, "DELETE_BY_PKS", 1)
    seed(tier, name)

    async def deletes_nothing(self: Any, collection_name: str, **kwargs: Any) -> dict[str, int]:
        return {}

    monkeypatch.setattr(AsyncMilvusClient, "delete", deletes_nothing)
    with pytest.raises(MilvusProviderError, match="5 still match"):
        delete(tier, name, "inline", "n >= {n}", n=25)
    assert len(counts) == 3
    assert tier.count(name) == ROWS


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (["a", "b", "c"], 3),
        (["a", "a", "b"], 2),
        ({"delete_count": 4, "cost": 0}, 4),
        ({}, 0),
        (None, None),
    ],
)
def test_reported_deletes_reads_both_reply_shapes(reply, expected):
    assert reported_deletes(reply) == expected
