"""The fields a collection's description resolves to (``core/schema.py``): server-side embedding functions."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_milvus.core.collection import NewCollection, check_functions_supported
from airflow_provider_milvus.core.schema import CollectionSchema, FieldChoice, ServerEmbedding
from airflow_provider_milvus.exceptions import MilvusProviderError


def field(name: str, kind: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, **extra}


def function(name: str, kind: int, inputs: str, outputs: str, **params: str) -> dict[str, Any]:
    # As describe_collection reports them: field names as the repr of a list, params as strings.
    return {
        "name": name,
        "type": kind,
        "input_field_names": repr([inputs]),
        "output_field_names": repr([outputs]),
        "params": params,
    }


EMBEDS = function("embed", 2, "passage", "dense", provider="openai", model_name="m-small", api_key="sk-secret")


def describe(*functions: dict[str, Any], extra_fields: tuple[dict[str, Any], ...] = ()) -> CollectionSchema:
    description = {
        "collection_name": "c",
        "fields": [
            field("id", 21, is_primary=True, params={"max_length": 64}),
            field("passage", 21, params={"max_length": 1000}),
            field("title", 21, params={"max_length": 100}),
            field("dense", 101, params={"dim": 16}, is_function_output=True),
            *extra_fields,
        ],
        "functions": list(functions),
        "enable_dynamic_field": True,
    }
    return CollectionSchema.describe(description, {"dense": {"metric_type": "COSINE"}})


def test_a_text_embedding_function_makes_the_collection_embed_server_side():
    schema = describe(EMBEDS)
    assert schema.server_embedding == ServerEmbedding("embed", "passage", "dense", "openai", "m-small")
    assert (schema.embeds_server_side, schema.writes_vectors) == (True, False)


def test_the_function_input_is_the_text_field_among_several_varchar_fields():
    assert describe(EMBEDS).text == "passage"
    with pytest.raises(MilvusProviderError, match="several VARCHAR fields"):
        describe()


def test_the_api_key_in_the_function_params_is_kept_only_to_be_scrubbed():
    server = describe(EMBEDS).server_embedding
    assert server is not None
    assert server.secrets == ("sk-secret",)
    assert "sk-secret" not in repr(server)
    assert "sk-secret" not in str(server.identity(16))


def test_the_identity_names_the_function_provider_model_and_size():
    assert describe(EMBEDS).server_embedding.identity(16) == {  # type: ignore[union-attr]
        "kind": "milvus_function",
        "function": "embed",
        "provider": "openai",
        "model": "m-small",
        "dimensions": 16,
    }


def test_a_dense_field_no_function_fills_is_written_with_vectors():
    other = field("client_vec", 101, params={"dim": 8})
    schema = CollectionSchema.describe(
        {
            "collection_name": "c",
            "fields": [
                field("id", 21, is_primary=True),
                field("passage", 21),
                field("dense", 101, params={"dim": 16}),
                other,
            ],
            "functions": [EMBEDS],
        },
        {},
        FieldChoice(vector_field="client_vec"),
    )
    assert (schema.embeds_server_side, schema.writes_vectors) == (False, True)


def test_a_bm25_function_alone_embeds_nothing_server_side():
    sparse = field("sparse", 104)
    schema = describe(function("bm25", 1, "passage", "sparse"), extra_fields=(sparse,))
    assert schema.bm25_field == "sparse"
    assert (schema.embeds_server_side, schema.writes_vectors) == (False, True)


def test_new_collection_with_an_embedding_function_expects_a_server_side_schema():
    options = NewCollection(embedding_function={"provider": "openai", "model_name": "m", "dim": 24, "credential": "k"})
    schema = options.expected_schema("c", 8)  # the stand-in size is ignored: the function's dim sizes the field
    assert (schema.dense.name, schema.dense.dim, schema.text) == ("vector", 24, "text")
    assert schema.server_embedding == ServerEmbedding("text_embedding", "text", "vector", "openai", "m")
    assert schema.bm25_field is None, "BM25 stays off by default next to dense vectors"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"provider": "openai", "model_name": "m"}, "needs dim"),
        ({"model_name": "m", "dim": 8}, "needs provider"),
        ({"provider": "openai", "model_name": "m", "dim": "eight"}, "dim must be a positive integer"),
        ({"provider": "openai", "model_name": "m", "dim": 0}, "dim must be a positive integer"),
        ("openai", "must be a dict"),
    ],
)
def test_an_incomplete_embedding_function_is_refused(params, message):
    with pytest.raises(MilvusProviderError, match=message):
        NewCollection.from_value({"embedding_function": params})


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("v2.3.5-lite", False),
        ("v2.5.14", False),
        ("v2.6.0", True),
        ("v3.0.1", True),
        ("milvus_lite-3.2.2", True),  # Milvus Lite reports its own version: it has functions
        ("Zilliz Cloud", True),  # unreadable: left to the server
    ],
)
def test_functions_are_refused_on_servers_before_milvus_2_6(version, supported):
    if supported:
        check_functions_supported(version, "c")
    else:
        with pytest.raises(MilvusProviderError, match="cannot embed server-side"):
            check_functions_supported(version, "c")
