"""
What a collection holds, read from Milvus once per run: the fields every operation works with.

Collections come from anywhere (this provider, another application, the Zilliz console), so no
field name is assumed. ``CollectionSchema.describe`` reads ``describe_collection`` and the indexes,
and resolves the primary key, the text field, the dense vector field and the BM25 output field.
When a choice is ambiguous the error names the parameter to set and lists the candidates.

A dense field that a ``TEXT_EMBEDDING`` function fills (Milvus 2.6+, Milvus Lite 3.2) is embedded
by Milvus itself: ``CollectionSchema.server_embedding`` describes that function, and writes then
send text only and searches send query text.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_milvus.exceptions import MilvusProviderError

# pymilvus DataType values, as describe_collection reports them.
BOOL, INT8, INT16, INT32, INT64, FLOAT, DOUBLE = 1, 2, 3, 4, 5, 10, 11
VARCHAR, ARRAY, JSON = 21, 22, 23
FLOAT_VECTOR, SPARSE_FLOAT_VECTOR = 101, 104
VECTOR_TYPES = {100, 101, 102, 103, 104, 105}
TYPE_NAMES = {
    BOOL: "BOOL",
    INT8: "INT8",
    INT16: "INT16",
    INT32: "INT32",
    INT64: "INT64",
    FLOAT: "FLOAT",
    DOUBLE: "DOUBLE",
    VARCHAR: "VARCHAR",
    ARRAY: "ARRAY",
    JSON: "JSON",
    100: "BINARY_VECTOR",
    FLOAT_VECTOR: "FLOAT_VECTOR",
    102: "FLOAT16_VECTOR",
    103: "BFLOAT16_VECTOR",
    SPARSE_FLOAT_VECTOR: "SPARSE_FLOAT_VECTOR",
    105: "INT8_VECTOR",
}
BM25_FUNCTION = 1
TEXT_EMBEDDING_FUNCTION = 2
# The collection property where this package records what makes a collection's vectors (JSON).
EMBEDDING_PROPERTY = "airflow_provider_milvus.embedding"
# Names that say "this VARCHAR holds the document" when a collection has several VARCHAR fields.
TEXT_FIELD_NAMES = ("text", "page_content", "content", "document", "chunk", "body")


@dataclass(frozen=True)
class FieldChoice:
    """The user's names for fields the schema cannot decide alone (operator / hook parameters)."""

    text_field: str | None = None
    vector_field: str | None = None


@dataclass(frozen=True)
class ScalarField:
    """A non-vector field that metadata can fill."""

    name: str
    type: int
    max_length: int | None = None
    nullable: bool = False
    default: Any = None
    has_default: bool = False

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, str(self.type))

    @property
    def required(self) -> bool:
        return not (self.nullable or self.has_default)


@dataclass(frozen=True)
class VectorField:
    """A dense vector field, with the metric and index type of its index."""

    name: str
    dim: int
    metric: str | None
    index_type: str | None


@dataclass(frozen=True)
class ServerEmbedding:
    """
    A ``TEXT_EMBEDDING`` function: Milvus embeds ``input`` into ``output`` on write and query text on search.

    Only what identifies the model is kept; the function's other parameters (an ``api_key`` among
    them) stay on the server, except ``secrets``, kept to scrub them out of error messages.
    """

    name: str
    input: str
    output: str
    provider: str | None
    model: str | None
    secrets: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def identity(self, dimensions: int | None) -> dict[str, Any]:
        """Return what makes the vectors, as recorded in ``EMBEDDING_PROPERTY`` and the source ledger."""
        return {
            "kind": "milvus_function",
            "function": self.name,
            "provider": self.provider,
            "model": self.model,
            "dimensions": dimensions,
        }


@dataclass(frozen=True)
class CollectionSchema:
    """The resolved fields of one collection; every operation uses these names, never fixed ones."""

    name: str
    primary: str
    primary_type: int
    auto_id: bool
    primary_max_length: int | None
    text: str
    text_max_length: int
    dense_fields: tuple[VectorField, ...]
    dense_choice: str | None
    bm25_field: str | None
    dynamic: bool
    partition_key: str | None
    scalars: dict[str, ScalarField] = field(default_factory=dict)
    other_vector_fields: tuple[str, ...] = ()
    embedding: dict[str, Any] | None = None  # recorded embedding identity (collections made here)
    text_embeddings: tuple[ServerEmbedding, ...] = ()  # the TEXT_EMBEDDING functions, whatever field they fill

    @property
    def int_ids(self) -> bool:
        return self.primary_type == INT64

    @property
    def server_embedding(self) -> ServerEmbedding | None:
        """The ``TEXT_EMBEDDING`` function that fills the dense field in use; None when the client embeds."""
        if self.dense_choice is None:
            return None
        return next((f for f in self.text_embeddings if f.output == self.dense_choice), None)

    @property
    def embeds_server_side(self) -> bool:
        """Milvus computes the dense vectors: writes send text only, searches send query text."""
        return self.server_embedding is not None

    @property
    def writes_vectors(self) -> bool:
        """Writes must carry the dense vector: a dense field that no Milvus function fills."""
        return self.has_dense and not self.embeds_server_side

    @property
    def has_dense(self) -> bool:
        return bool(self.dense_fields)

    @property
    def dense(self) -> VectorField:
        """The dense vector field in use; an error that names ``vector_field`` when there are several."""
        if self.dense_choice is not None:
            return next(f for f in self.dense_fields if f.name == self.dense_choice)
        if self.dense_fields:
            names = ", ".join(f.name for f in self.dense_fields)
            raise MilvusProviderError(
                f"Collection '{self.name}' has several dense vector fields ({names}). Set vector_field "
                f'to the one to use, e.g. vector_field="{self.dense_fields[0].name}".'
            )
        raise MilvusProviderError(
            f"Collection '{self.name}' has no dense vector field (FLOAT_VECTOR); it is searched with BM25 "
            "full-text only. Drop the embedding settings for this collection."
        )

    @property
    def reserved_fields(self) -> set[str]:
        """Fields a document's metadata must never set: they hold the id, the text and the vectors."""
        names = {self.primary, self.text, *(f.name for f in self.dense_fields), *self.other_vector_fields}
        if self.bm25_field:
            names.add(self.bm25_field)
        return names

    @property
    def output_fields(self) -> list[str]:
        """Everything but vectors: the text, every scalar field, and the dynamic field's keys."""
        return [self.primary, self.text, *self.scalars, *(["$meta"] if self.dynamic else [])]

    @classmethod
    def describe(
        cls, description: dict[str, Any], indexes: dict[str, dict[str, Any]], choice: FieldChoice = FieldChoice()
    ) -> CollectionSchema:
        """Resolve the schema from ``describe_collection`` and ``describe_index`` (keyed by field name)."""
        name = description.get("collection_name", "")
        fields = description.get("fields", [])
        primary = next((f for f in fields if f.get("is_primary")), None)
        if primary is None:
            raise MilvusProviderError(f"Collection '{name}' has no primary key field.")
        if primary["type"] not in (INT64, VARCHAR):
            raise MilvusProviderError(f"Collection '{name}': primary key type {primary['type']} is not supported.")
        by_name = {f["name"]: f for f in fields}
        bm25_pairs = _bm25_pairs(description)
        text_embeddings = _text_embeddings(description)
        partition_key = next((f["name"] for f in fields if f.get("is_partition_key")), None)
        function_inputs = {inp for inp, _ in bm25_pairs} | {f.input for f in text_embeddings}
        text = _choose_text_field(name, fields, primary["name"], partition_key, function_inputs, choice.text_field)
        dense_fields = tuple(
            VectorField(
                name=f["name"],
                dim=int(f.get("params", {}).get("dim", 0)),
                metric=indexes.get(f["name"], {}).get("metric_type"),
                index_type=indexes.get(f["name"], {}).get("index_type"),
            )
            for f in fields
            if f["type"] == FLOAT_VECTOR
        )
        bm25_field = next((out for inp, out in bm25_pairs if inp == text), None)
        other_vectors = tuple(
            f["name"]
            for f in fields
            if f["type"] in VECTOR_TYPES and f["type"] != FLOAT_VECTOR and f["name"] != bm25_field
        )
        function_outputs = {out for _, out in bm25_pairs}
        skip = {primary["name"], text, *(f.name for f in dense_fields), *other_vectors, *function_outputs}
        scalars = {
            f["name"]: ScalarField(
                name=f["name"],
                type=f["type"],
                max_length=_int_or_none(f.get("params", {}).get("max_length")),
                nullable=bool(f.get("nullable")),
                default=f.get("default_value"),
                has_default=f.get("default_value") is not None,
            )
            for f in fields
            if f["name"] not in skip
        }
        return cls(
            name=name,
            primary=primary["name"],
            primary_type=primary["type"],
            auto_id=bool(primary.get("auto_id") or description.get("auto_id")),
            primary_max_length=_int_or_none(primary.get("params", {}).get("max_length")),
            text=text,
            text_max_length=int(by_name[text].get("params", {}).get("max_length", 65535)),
            dense_fields=dense_fields,
            dense_choice=_choose_vector_field(name, dense_fields, choice.vector_field, by_name),
            bm25_field=bm25_field,
            dynamic=bool(description.get("enable_dynamic_field")),
            partition_key=partition_key,
            scalars=scalars,
            other_vector_fields=other_vectors,
            embedding=_recorded_embedding(description),
            text_embeddings=text_embeddings,
        )


def _recorded_embedding(description: dict[str, Any]) -> dict[str, Any] | None:
    """Return the embedding identity recorded at creation; None when absent or unreadable."""
    raw = (description.get("properties") or {}).get(EMBEDDING_PROPERTY)
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _bm25_pairs(description: dict[str, Any]) -> list[tuple[str, str]]:
    """(input, output) field names of the collection's BM25 functions."""
    return [(inputs[0], outputs[0]) for _, inputs, outputs in _functions(description, BM25_FUNCTION, "BM25")]


def _text_embeddings(description: dict[str, Any]) -> tuple[ServerEmbedding, ...]:
    """Return the collection's TEXT_EMBEDDING functions (Milvus reports their params as strings)."""
    found = []
    for function, inputs, outputs in _functions(description, TEXT_EMBEDDING_FUNCTION, "TEXTEMBEDDING"):
        params = function.get("params") or {}
        if isinstance(params, list):  # [{"key": ..., "value": ...}] in some clients' descriptions
            params = {p.get("key"): p.get("value") for p in params if isinstance(p, dict)}
        found.append(
            ServerEmbedding(
                name=str(function.get("name", "")),
                input=inputs[0],
                output=outputs[0],
                provider=_str_or_none(params.get("provider")),
                model=_str_or_none(params.get("model_name")),
                secrets=tuple(str(params[k]) for k in ("api_key", "apikey") if params.get(k)),
            )
        )
    return tuple(found)


def _functions(description: dict[str, Any], *types: int | str) -> list[tuple[dict[str, Any], list[str], list[str]]]:
    """Return (function, inputs, outputs) of each function of ``types`` that names fields on both sides."""
    found = []
    for function in description.get("functions", []) or []:
        kind = function.get("type")
        if kind not in types and getattr(kind, "name", None) not in types:
            continue
        inputs, outputs = _names(function.get("input_field_names")), _names(function.get("output_field_names"))
        if inputs and outputs:
            found.append((function, inputs, outputs))
    return found


def _names(value: Any) -> list[str]:
    # describe_collection reports function field names as a Python list literal in a string.
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            value = [value]
    return [str(v) for v in (value or [])]


def _choose_text_field(
    collection: str,
    fields: list[dict[str, Any]],
    primary: str,
    partition_key: str | None,
    function_inputs: set[str],
    chosen: str | None,
) -> str:
    candidates = [f["name"] for f in fields if f["type"] == VARCHAR and f["name"] not in (primary, partition_key)]
    if chosen:
        if chosen not in candidates:
            raise MilvusProviderError(
                f"text_field={chosen!r} is not a VARCHAR field of collection '{collection}'. "
                f"Candidates: {', '.join(candidates) or 'none'}."
            )
        return chosen
    if len(function_inputs) == 1:  # the text a BM25 or TEXT_EMBEDDING function reads
        return next(iter(function_inputs))
    if len(candidates) == 1:
        return candidates[0]
    named = [c for c in candidates if c.lower() in TEXT_FIELD_NAMES]
    if len(named) == 1:
        return named[0]
    if not candidates:
        raise MilvusProviderError(
            f"Collection '{collection}' has no VARCHAR field to hold the document text; it cannot be used "
            "with these operators."
        )
    raise MilvusProviderError(
        f"Collection '{collection}' has several VARCHAR fields that could hold the document text: "
        f'{", ".join(candidates)}. Set text_field to the one to use, e.g. text_field="{candidates[0]}".'
    )


def _choose_vector_field(
    collection: str, dense: tuple[VectorField, ...], chosen: str | None, by_name: dict[str, dict[str, Any]]
) -> str | None:
    names = [f.name for f in dense]
    if chosen:
        if chosen not in names:
            kind = TYPE_NAMES.get(by_name[chosen]["type"], "") if chosen in by_name else ""
            why = f" (it is a {kind} field; only FLOAT_VECTOR fields are supported)" if kind else ""
            raise MilvusProviderError(
                f"vector_field={chosen!r} is not a dense vector field of collection '{collection}'{why}. "
                f"Candidates: {', '.join(names) or 'none'}."
            )
        return chosen
    return names[0] if len(names) == 1 else None


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


def _str_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
