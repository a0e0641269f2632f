"""Bad input where a real Milvus (2.3.5) behaves unlike Milvus Lite: names, integer ranges, ``$meta``.

Each name the provider refuses is shown to be refused by the server itself (pymilvus, no provider),
and the longest name the server takes passes; values pymilvus would reject mid-write are refused
for the whole input first: no collection created, no row written.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_milvus.core.checks import check_collection_name
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.faults.test_bad_input_before_write import _add

BAD_NAMES = ["my-coll", "1abc", "has space", "caf\u00e9", "a$b", "n" * 256]


def _create_raw(client: Any, name: str) -> None:
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=16)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    client.create_collection(name, schema=schema)


@pytest.mark.parametrize("name", BAD_NAMES, ids=["hyphen", "leading_digit", "space", "non_ascii", "dollar", "256"])
def test_a_name_the_server_refuses_is_refused_before_connecting(
    name, standalone_conn_id, embedding_conn_id, standalone_client
):
    with pytest.raises(Exception, match="Invalid collection name"):
        _create_raw(standalone_client, name)  # the server's own rule, which Milvus Lite does not apply
    with pytest.raises(MilvusProviderError, match="Collection name .* Nothing was written") as error:
        MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=standalone_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=name,
            documents=["text"],
        ).execute(context={})
    assert "Invalid collection name" not in str(error.value), "the server, not the provider, refused it"
    assert name not in standalone_client.list_collections()  # has_collection itself refuses these names


def test_the_longest_name_the_server_takes_passes_the_check(standalone_client):
    name = "n" * 255
    assert check_collection_name(name) == name
    _create_raw(standalone_client, name)
    try:
        assert standalone_client.has_collection(name)
    finally:
        standalone_client.drop_collection(name)


def _ten(last: dict[str, Any], typed: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    docs = [
        {"page_content": f"doc {i}", "metadata": {"doc_id": f"d{i}", "source": f"s{i}.md", **dict.fromkeys(typed, 1)}}
        for i in range(10)
    ]
    docs[9]["metadata"].update(last)
    return docs


def _count(client: Any, name: str) -> int:
    return client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]


CASES = [
    ({"big": 2**64}, (), r"Document 9: metadata 'big' = 18446744073709551616 is outside the INT64 range"),
    ({"big": 2**70}, (), r"Document 9: metadata 'big' = \d+ is outside the INT64 range"),
    ({"year": 2**63}, ("year",), r"Document 9: metadata 'year' = 9223372036854775808 is outside the INT64 range"),
    ({"$meta": {"x": 1}}, (), r"Document 9: metadata key '\$meta' is reserved"),
]
IDS = ["dynamic_2**64", "dynamic_2**70", "INT64_field_2**63", "$meta"]


@pytest.mark.parametrize(("last", "typed", "message"), CASES, ids=IDS)
def test_a_value_the_server_cannot_store_creates_no_collection(
    last, typed, message, standalone_conn_id, embedding_conn_id, collection_name, standalone_client
):
    options = {"scalar_fields": dict.fromkeys(typed, "INT64")} if typed else None
    with pytest.raises(MilvusProviderError, match=message):
        _add(standalone_conn_id, embedding_conn_id, collection_name, _ten(last, typed), new_collection=options)
    assert not standalone_client.has_collection(collection_name)


@pytest.mark.parametrize(("last", "typed", "message"), CASES, ids=IDS)
def test_a_value_the_server_cannot_store_writes_none_of_the_other_rows(
    last, typed, message, standalone_conn_id, embedding_conn_id, collection_name, standalone_client
):
    options = {"scalar_fields": dict.fromkeys(typed, "INT64")} if typed else None
    seed = [{"page_content": "seed", "metadata": {"doc_id": "seed", **dict.fromkeys(typed, 1)}}]
    _add(standalone_conn_id, embedding_conn_id, collection_name, seed, new_collection=options)
    with pytest.raises(MilvusProviderError, match=message):
        _add(standalone_conn_id, embedding_conn_id, collection_name, _ten(last, typed))
    assert _count(standalone_client, collection_name) == 1
    rows = standalone_client.query(collection_name, filter='pk != ""', output_fields=["pk"], limit=100)
    assert [row["pk"] for row in rows] == ["seed"]
