"""Rows checked against the fields they land in, for the whole input (``core/rows.py``)."""

from __future__ import annotations

import pytest

from airflow_provider_milvus.core.collection import NewCollection
from airflow_provider_milvus.core.rows import RowBuilder
from airflow_provider_milvus.exceptions import MilvusProviderError


def builder(**scalar_fields: str) -> RowBuilder:
    return RowBuilder(NewCollection(scalar_fields=scalar_fields).expected_schema("c", 4))


def chunk(i: int, **metadata) -> dict:
    return {"id": f"id{i}", "text": f"text {i}", "metadata": {"source": f"s{i}.md", **metadata}}


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("INT8", 127, 128),
        ("INT16", -32768, -32769),
        ("INT32", 2**31 - 1, 2**31),
        ("INT64", -(2**63), 2**63),
    ],
)
def test_integers_outside_their_fields_range_are_refused(kind, good, bad):
    rows = builder(n=kind)
    rows.check([chunk(0, n=good)])
    with pytest.raises(MilvusProviderError, match=rf"Chunk 'id1' \(source 's1.md'\): metadata 'n'.*{kind} range"):
        rows.check([chunk(0, n=good), chunk(1, n=bad)])


def test_a_float_beyond_float32_is_refused_instead_of_stored_as_infinity():
    rows = builder(score="FLOAT")
    rows.check([chunk(0, score=3.4e38)])
    with pytest.raises(MilvusProviderError, match="FLOAT's 32-bit range"):
        rows.check([chunk(0, score=3.5e38)])
    builder(score="DOUBLE").check([chunk(0, score=3.5e38)])  # a DOUBLE holds it


def test_an_integer_too_large_for_a_double_is_refused():
    with pytest.raises(MilvusProviderError, match="not a finite number"):
        builder(score="DOUBLE").check([chunk(0, score=10**400)])


def test_the_expected_schema_of_a_new_collection_refuses_a_metadata_key_vector():
    with pytest.raises(MilvusProviderError, match=r"\['vector'\] collide"):
        builder().check([chunk(0, vector="mine")])
