"""
Chunks to Milvus rows for any schema, checked before anything is written.

Metadata goes into the collection's own scalar fields where the names match and into the dynamic
field otherwise. Keys that would overwrite the primary key, the text or a vector, keys a collection
without a dynamic field cannot hold, missing required fields, wrong value types, wrong vector sizes
and over-long texts or ids all fail for the whole input, before the first write. A collection that
embeds server-side (a ``TEXT_EMBEDDING`` function fills its dense field) gets rows without vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from airflow_provider_milvus.core.collection import check_dimension
from airflow_provider_milvus.core.documents import SOURCE_KEYS, check_text_sizes
from airflow_provider_milvus.core.ledger import DIGEST_FIELD
from airflow_provider_milvus.core.schema import (
    BOOL,
    DOUBLE,
    FLOAT,
    INT8,
    INT16,
    INT32,
    INT64,
    JSON,
    TYPE_NAMES,
    VARCHAR,
    CollectionSchema,
)
from airflow_provider_milvus.exceptions import MilvusProviderError

INT_TYPES = (INT8, INT16, INT32, INT64)
INT_RANGES = {kind: (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) for kind, bits in zip(INT_TYPES, (8, 16, 32, 64))}
INT64_MASK = (1 << 63) - 1
FLOAT32_MAX = 3.4028234663852886e38


@dataclass(frozen=True)
class RowBuilder:
    """Builds the rows of one collection; ``tenant`` is the partition-key value every row gets."""

    schema: CollectionSchema
    tenant: str | None = None

    def check(self, chunks: list[dict[str, Any]]) -> None:
        """Every check at once, for the whole input: a failure writes nothing."""
        schema = self.schema
        keys: set[str] = set()
        for chunk in chunks:
            keys.update(chunk["metadata"])
        if schema.primary in keys and all(
            str(c["metadata"].get(schema.primary, c["id"])) == str(c["id"]) for c in chunks
        ):
            keys.discard(schema.primary)  # id_key named after the primary field: it is the id itself
        colliding = sorted(keys & schema.reserved_fields)
        if colliding:
            raise MilvusProviderError(
                f"Metadata keys {colliding} collide with fields of collection '{schema.name}' that hold the id, "
                f"the text or vectors ({schema.primary}, {schema.text}, ...). Rename them in the metadata; "
                "nothing was written."
            )
        unknown = sorted(k for k in keys if k not in schema.scalars)
        if unknown and not schema.dynamic:
            raise MilvusProviderError(
                f"Collection '{schema.name}' has no dynamic field, so metadata keys {unknown} have nowhere to go "
                f"(its fields: {', '.join(schema.scalars) or 'none'}). Drop or rename them; nothing was written."
            )
        check_text_sizes(chunks, schema.text_max_length, schema.text)
        server = schema.server_embedding
        if server is not None and any(c.get("vector") is not None for c in chunks):
            raise MilvusProviderError(
                f"Collection '{schema.name}' computes its vectors in Milvus (function '{server.name}' embeds "
                f"'{server.input}' into '{server.output}'), so documents must not carry a 'vector': Milvus "
                "refuses a value for a function's output field. Drop the vectors; nothing was written."
            )
        for chunk in chunks:
            self._check_chunk(chunk)

    def _check_chunk(self, chunk: dict[str, Any]) -> None:
        schema = self.schema
        metadata = chunk["metadata"]
        source = next((metadata[k] for k in SOURCE_KEYS if isinstance(metadata.get(k), (str, int))), None)
        where = f"Chunk {chunk['id']!r:.80}" + (f" (source {source!r:.120})" if source is not None else "")
        if schema.int_ids and not schema.auto_id:
            self.primary_key(chunk)
        elif not schema.auto_id:
            limit = schema.primary_max_length
            if limit and len(str(chunk["id"]).encode()) > limit:
                raise MilvusProviderError(
                    f"{where}: the id is longer than {limit} bytes, the size of '{schema.primary}'."
                )
        if schema.partition_key and self.tenant is not None:
            value = metadata.get(schema.partition_key, self.tenant)
            if value != self.tenant:
                raise MilvusProviderError(
                    f"{where} has {schema.partition_key}={value!r} in its metadata but the task writes for "
                    f"partition_key_value={self.tenant!r}. Remove the key or make them agree."
                )
        for name, spec in schema.scalars.items():
            value = metadata.get(name)
            if name == schema.partition_key and self.tenant is not None:
                value = self.tenant
            if value is None:
                if spec.required:
                    hint = " (or pass partition_key_value)" if name == schema.partition_key else ""
                    raise MilvusProviderError(
                        f"{where} has no metadata '{name}', a required {spec.type_name} field of "
                        f"'{schema.name}'{hint}. Nothing was written."
                    )
                continue
            problem = _type_problem(spec.type, spec.max_length, value)
            if problem:
                raise MilvusProviderError(
                    f"{where}: metadata '{name}' = {value!r:.60} does not fit field '{name}' ({spec.type_name}): "
                    f"{problem}. Nothing was written."
                )
        vector = chunk.get("vector")
        if vector is not None:
            check_dimension(schema, len(vector), f"the vector of c{where[1:]}")

    def primary_key(self, chunk: dict[str, Any]) -> str | int:
        """Return the chunk's id in the collection's key type (derived ids become 63-bit numbers for INT64)."""
        chunk_id = chunk["id"]
        if not self.schema.int_ids:
            return str(chunk_id)
        if chunk.get("derived"):
            return int(chunk_id[:16], 16) & INT64_MASK
        if isinstance(chunk_id, int) or (isinstance(chunk_id, str) and chunk_id.lstrip("-").isdigit()):
            number = int(chunk_id)
            if -(1 << 63) <= number <= INT64_MASK:
                return number
        raise MilvusProviderError(
            f"Id {chunk_id!r:.60} is not a 64-bit integer, but the primary key '{self.schema.primary}' of "
            f"'{self.schema.name}' is INT64. Pass integer ids (or digit strings), or let the provider derive them."
        )

    def content(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """Return what the row stores besides its key and vectors (compared with Milvus to skip unchanged chunks)."""
        values = {k: v for k, v in chunk["metadata"].items() if v is not None and k != self.schema.primary}
        if self.schema.partition_key and self.tenant is not None:
            values[self.schema.partition_key] = self.tenant
        values[self.schema.text] = chunk["text"]
        if "digest" in chunk:  # the source ledger's proof that this row belongs to its source's version
            values[DIGEST_FIELD] = chunk["digest"]
        return values

    def row(self, chunk: dict[str, Any], vector: list[float] | None) -> dict[str, Any]:
        row = self.content(chunk)
        if not self.schema.auto_id:
            row[self.schema.primary] = self.primary_key(chunk)
        if vector is not None:
            row[self.schema.dense.name] = vector
        return row

    def stored_content(self, stored: dict[str, Any]) -> dict[str, Any]:
        """Return a row read back from Milvus in the shape of ``content``."""
        skip = {self.schema.primary, *(f.name for f in self.schema.dense_fields)}
        return {k: v for k, v in stored.items() if k not in skip and v is not None}


def same_content(a: Any, b: Any) -> bool:
    """Equal as stored: FLOAT fields and JSON numbers come back rounded, so numbers compare closely."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_content(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_content(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _type_problem(field_type: int, max_length: int | None, value: Any) -> str | None:
    if field_type in INT_TYPES:
        if not isinstance(value, int) or isinstance(value, bool):
            return "expected an integer"
        low, high = INT_RANGES[field_type]
        return None if low <= value <= high else f"outside the {TYPE_NAMES[field_type]} range {low} to {high}"
    if field_type in (FLOAT, DOUBLE):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return "expected a number"
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            return "not a finite number"
        if field_type == FLOAT and abs(number) > FLOAT32_MAX:
            return f"beyond FLOAT's 32-bit range (±{FLOAT32_MAX:.7g}): Milvus would store it as infinity"
        return None
    if field_type == BOOL:
        return None if isinstance(value, bool) else "expected true or false"
    if field_type == VARCHAR:
        if not isinstance(value, str):
            return "expected a string"
        if max_length and len(value.encode()) > max_length:
            return f"longer than {max_length} bytes"
        return None
    if field_type == JSON:
        return None
    return None
