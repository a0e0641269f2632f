"""
New collections as the user chooses them, and reading any collection's schema for a run.

A new collection gets this provider's defaults unless the DAG says otherwise (``NewCollection``):
``pk`` VARCHAR, ``text`` VARCHAR, a dense ``vector`` (with embeddings, COSINE/AUTOINDEX) and/or a
``sparse`` BM25 output field, metadata in the dynamic field, Strong consistency, and the embedding
identity as a collection property. With ``embedding_function`` the dense field is filled by Milvus
itself (a ``TEXT_EMBEDDING`` function, Milvus 2.6+ or Milvus Lite 3.2).
``NewCollection.expected_schema`` is the schema ``create`` would make, so input is checked against it
before anything is created. Existing collections are used as they are: ``read_schema`` /
``aread_schema`` describe them (fields, indexes' metrics) as a ``CollectionSchema`` instead of assuming
names, and ``check_dimension`` / ``check_embedding_identity`` refuse vectors of another size or from
another model. Opening a collection for a run (load, tenant checks) is ``core/session.py``'s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.schema import (
    EMBEDDING_PROPERTY,
    VECTOR_TYPES,
    CollectionSchema,
    FieldChoice,
    ServerEmbedding,
)
from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from pymilvus import AsyncMilvusClient, MilvusClient

log = logging.getLogger(__name__)

PRIMARY_FIELD = "pk"
TEXT_FIELD = "text"
DENSE_FIELD = "vector"
SPARSE_FIELD = "sparse"
EMBEDDING_FUNCTION = "text_embedding"  # the TEXT_EMBEDDING function of a new collection that embeds server-side
PK_MAX_LENGTH = 512
DEFAULT_TEXT_MAX_LENGTH = 65535
# Tasks that write and tasks that search run in different processes: "Session" consistency would
# not let a search task see the ingest that just finished upstream.
CONSISTENCY = "Strong"
SCALAR_TYPES = ("BOOL", "INT8", "INT16", "INT32", "INT64", "FLOAT", "DOUBLE", "VARCHAR", "JSON")
_VARCHAR = re.compile(r"^VARCHAR(?:\((\d+)\))?$")


@dataclass(frozen=True)
class NewCollection:
    """
    How to create a collection that does not exist yet; ignored for existing ones.

    :param metric_type: ``COSINE``, ``IP`` or ``L2`` for the dense vector.
    :param index_type: e.g. ``AUTOINDEX``, ``HNSW``, ``IVF_FLAT``, ``FLAT``.
    :param index_params: The index's build parameters, e.g. ``{"M": 16, "efConstruction": 200}``.
    :param partition_key_field: A VARCHAR partition-key field for tenants (set by ``partition_key_value``).
    :param scalar_fields: Typed metadata fields, ``{"year": "INT64", "lang": "VARCHAR(16)"}``: filters on
        them are faster than on the dynamic field.
    :param dynamic_field: Keep other metadata keys in the dynamic field; off rejects unknown keys.
    :param full_text_search: Add BM25 full-text search (default: only when there are no embeddings).
    :param text_max_length: VARCHAR size of the text field; longer chunks are rejected, never truncated.
    :param embedding_function: Let Milvus embed (a ``TEXT_EMBEDDING`` function from ``text`` to ``vector``;
        Milvus 2.6+ or Milvus Lite 3.2): the function's params as Milvus takes them, e.g.
        ``{"provider": "openai", "model_name": "text-embedding-3-small", "dim": 1536, "credential":
        "apikey_prod"}``. ``dim`` is required (it sizes the vector field); every key goes to Milvus as it
        is. Writes then send text only and searches send query text: no embedding connection is used.
    """

    metric_type: str = "COSINE"
    index_type: str = "AUTOINDEX"
    index_params: dict[str, Any] = field(default_factory=dict)
    partition_key_field: str | None = None
    scalar_fields: dict[str, str] = field(default_factory=dict)
    dynamic_field: bool = True
    full_text_search: bool | None = None
    text_max_length: int = DEFAULT_TEXT_MAX_LENGTH
    embedding_function: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.embedding_function is not None:
            _check_embedding_function(self.embedding_function)

    @property
    def server_embedding(self) -> ServerEmbedding | None:
        """The ``TEXT_EMBEDDING`` function this collection gets; None when the client embeds."""
        params = self.embedding_function
        if params is None:
            return None
        return ServerEmbedding(
            name=EMBEDDING_FUNCTION,
            input=TEXT_FIELD,
            output=DENSE_FIELD,
            provider=str(params["provider"]),
            model=str(params["model_name"]),
        )

    @property
    def server_dimension(self) -> int | None:
        """The vector size ``embedding_function`` names; None when the client embeds."""
        return int(self.embedding_function["dim"]) if self.embedding_function is not None else None

    @classmethod
    def from_value(cls, value: NewCollection | dict[str, Any] | None) -> NewCollection:
        if value is None:
            return cls()
        if isinstance(value, NewCollection):
            return value
        if not isinstance(value, dict):
            raise MilvusProviderError(f"new_collection must be a dict or NewCollection, got {type(value).__name__}.")
        unknown = set(value) - set(cls.__dataclass_fields__)
        if unknown:
            raise MilvusProviderError(
                f"new_collection has unknown keys {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_full_text(self, dense: bool) -> bool:
        """BM25 is on when there are no embeddings, and on request next to them (hybrid search)."""
        full_text = self.full_text_search if self.full_text_search is not None else not dense
        if not dense and not full_text:
            raise MilvusProviderError(
                "A new collection would have no vectors: configure an embedding connection "
                "(embedding_conn_id), set new_collection.embedding_function, or leave full_text_search enabled."
            )
        return full_text

    def schema_and_index(self, dimension: int | None) -> tuple[Any, Any]:
        """Return the schema and index params; ``dimension`` sizes a client-embedded vector (a function's dim wins)."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        dimension = self.server_dimension or dimension
        dense = dimension is not None
        full_text = self.with_full_text(dense)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=self.dynamic_field)
        schema.add_field(PRIMARY_FIELD, DataType.VARCHAR, is_primary=True, max_length=PK_MAX_LENGTH)
        text_options: dict[str, Any] = {"enable_analyzer": True} if full_text else {}
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=self.text_max_length, **text_options)
        if self.partition_key_field:
            schema.add_field(self.partition_key_field, DataType.VARCHAR, max_length=256, is_partition_key=True)
        for name, type_name in self.scalar_fields.items():
            if name in (PRIMARY_FIELD, TEXT_FIELD, DENSE_FIELD, SPARSE_FIELD, self.partition_key_field):
                raise MilvusProviderError(f"new_collection.scalar_fields: '{name}' is a reserved field name.")
            schema.add_field(name, **_scalar_type(name, type_name))
        index = MilvusClient.prepare_index_params()
        if dense:
            schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
            if self.embedding_function is not None:
                schema.add_function(
                    Function(
                        name=EMBEDDING_FUNCTION,
                        function_type=FunctionType.TEXTEMBEDDING,
                        input_field_names=[TEXT_FIELD],
                        output_field_names=[DENSE_FIELD],
                        params=dict(self.embedding_function),
                    )
                )
            index.add_index(
                field_name=DENSE_FIELD,
                index_type=self.index_type,
                metric_type=self.metric_type,
                params=dict(self.index_params),
            )
        if full_text:
            schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="text_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=[TEXT_FIELD],
                    output_field_names=[SPARSE_FIELD],
                )
            )
            # Milvus Lite 3.2 accepts only this index for BM25; Milvus 2.5+ accepts it too.
            index.add_index(
                field_name=SPARSE_FIELD,
                index_type="SPARSE_INVERTED_INDEX",
                metric_type="BM25",
                params={"drop_ratio_build": 0},
            )
        return schema, index

    def expected_schema(self, name: str, dimension: int | None, choice: FieldChoice | None = None) -> CollectionSchema:
        """
        Return the schema ``create`` would make, read as an existing collection's is: to check input first.

        Without a known ``dimension`` (the embedding model is probed at creation) the dense field gets a
        stand-in size; only given vectors are compared with it, and those fix the dimension anyway.
        """
        schema, _ = self.schema_and_index(dimension)
        description = {**schema.to_dict(), "collection_name": name}
        return CollectionSchema.describe(description, {}, choice or FieldChoice())

    def create(
        self,
        client: MilvusClient,
        name: str,
        dimension: int | None,
        *,
        identity: dict[str, Any] | None = None,
        load: bool = True,
    ) -> bool:
        """
        Create ``name`` and its indexes unless it exists; a concurrent creator winning the race is not an error.

        Returns True only when this call created it: a write that lost the race to another task (shards
        of one new collection start together) must not treat the collection as its own, empty one.

        ``load=False`` leaves it unloaded: loading takes seconds on a real server (2.4-3.4 s on 2.3.5) and
        writes need none, so a write loads it while its first rows are embedded (``Session.load``).

        ``identity`` (what makes its vectors: connection kind, model, dimensions) is recorded as a
        collection property, so later writes and searches with another model are refused; its
        dimensions, when the model chose them, are the probed ``dimension``. With
        ``embedding_function`` the identity is the function's, and a server without functions
        (before Milvus 2.6) is refused before anything is created.
        """
        if client.has_collection(name):
            return False
        server = self.server_embedding
        if server is not None:
            check_functions_supported(client.get_server_version(), name)
            identity = server.identity(self.server_dimension)
        schema, index = self.schema_and_index(dimension)
        if identity is not None:
            identity = {**identity, "dimensions": identity.get("dimensions") or dimension}
        recorded = identity or ({"kind": "bm25", "function": "text_bm25"} if dimension is None else None)
        properties = {EMBEDDING_PROPERTY: json.dumps(recorded, sort_keys=True)} if recorded else None
        try:
            client.create_collection(name, schema=schema, consistency_level=CONSISTENCY, properties=properties)
        except Exception as error:
            if "exist" in str(error).lower():  # "already exists", Lite's "File exists": another task won
                _wait_until_indexed(client, name)
                return False
            raise
        try:
            client.create_index(name, index)
            if load:
                client.load_collection(name)
        except Exception:
            # Milvus creates the collection before its indexes: never leave a half-made one.
            if client.has_collection(name):
                client.drop_collection(name)
            raise
        return True


def check_functions_supported(version: str, name: str) -> None:
    """
    Refuse ``new_collection.embedding_function`` on a server without ``TEXT_EMBEDDING`` functions.

    Milvus before 2.6 does not know functions: it would create the collection without one, and every
    write would then need client-side vectors. Milvus Lite 3.x has them; an unreadable version is left
    to the server.
    """
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.\d+.*", version.strip())
    if match is None or (int(match.group(1)), int(match.group(2))) >= (2, 6):
        return
    raise MilvusProviderError(
        f"Cannot create collection '{name}' with new_collection.embedding_function: this Milvus server "
        f"({version}) cannot embed server-side (TEXT_EMBEDDING functions need Milvus 2.6+ or Milvus Lite 3.2). "
        "Drop embedding_function and configure an embedding connection (embedding_conn_id) instead. "
        "Nothing was created or written."
    )


def _check_embedding_function(params: Any) -> None:
    """``embedding_function`` names a provider and a model and sizes the vector field; refused otherwise."""
    if not isinstance(params, dict):
        raise MilvusProviderError(
            f"new_collection.embedding_function must be a dict of the function's params, got {type(params).__name__}."
        )
    missing = [k for k in ("provider", "model_name", "dim") if params.get(k) in (None, "")]
    if missing:
        raise MilvusProviderError(
            f"new_collection.embedding_function needs {', '.join(missing)}, e.g. "
            '{"provider": "openai", "model_name": "text-embedding-3-small", "dim": 1536, "credential": "apikey_prod"} '
            "(dim sizes the vector field: the model's output size)."
        )
    dim = params["dim"]
    if isinstance(dim, bool) or not str(dim).isdigit() or int(dim) <= 0:
        raise MilvusProviderError(f"new_collection.embedding_function: dim must be a positive integer, got {dim!r}.")


def _wait_until_indexed(client: MilvusClient, name: str, timeout: float = 60.0) -> None:
    """Another task is creating ``name``: wait until its vector fields are indexed (they can be loaded then)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if client.has_collection(name):
            description = client.describe_collection(name)
            vectors = {f["name"] for f in description["fields"] if f["type"] in VECTOR_TYPES}
            if vectors <= set(describe_indexes(client, name)):
                return
        if time.monotonic() > deadline:
            raise MilvusProviderError(
                f"Collection '{name}' was being created by another task and was not ready within {timeout:.0f} s."
            )
        time.sleep(0.2)


def _scalar_type(name: str, type_name: str) -> dict[str, Any]:
    from pymilvus import DataType

    spec = type_name.strip().upper()
    varchar = _VARCHAR.match(spec)
    if varchar:
        return {"datatype": DataType.VARCHAR, "max_length": int(varchar.group(1) or 65535)}
    if spec not in SCALAR_TYPES:
        raise MilvusProviderError(
            f"new_collection.scalar_fields['{name}'] = {type_name!r}: use one of "
            f"{', '.join(SCALAR_TYPES[:-2])}, VARCHAR(n) or JSON."
        )
    return {"datatype": getattr(DataType, spec)}


def describe_indexes(client: MilvusClient, name: str) -> dict[str, dict[str, Any]]:
    """``describe_index`` of every index, keyed by field name (sync)."""
    indexes = {}
    for index_name in client.list_indexes(name):
        info = client.describe_index(name, index_name)
        indexes[info.get("field_name", index_name)] = info
    return indexes


async def adescribe_indexes(client: AsyncMilvusClient, name: str) -> dict[str, dict[str, Any]]:
    names = await client.list_indexes(name)
    infos = await asyncio.gather(*(client.describe_index(name, index_name) for index_name in names))
    return {info.get("field_name", index_name): info for index_name, info in zip(names, infos, strict=True)}


def missing_collection_error(name: str) -> MilvusProviderError:
    return MilvusProviderError(
        f"Collection '{name}' does not exist. Check collection_name and the connection's database, "
        "or run an ingest task first."
    )


def read_schema(client: MilvusClient, name: str, choice: FieldChoice) -> CollectionSchema:
    """Sync: the hook's path."""
    if not client.has_collection(name):
        raise missing_collection_error(name)
    return CollectionSchema.describe(client.describe_collection(name), describe_indexes(client, name), choice)


async def aread_schema(
    client: AsyncMilvusClient, name: str, choice: FieldChoice, *, metrics: bool = True, exists: bool = False
) -> CollectionSchema:
    """
    Read the schema; ``metrics=False`` skips the index descriptions (writes and deletes need no metric).

    ``exists=True`` when the caller has just checked or created the collection (saves a round trip).
    """
    if not exists and not await client.has_collection(name):
        raise missing_collection_error(name)
    if not metrics:
        return CollectionSchema.describe(await client.describe_collection(name), {}, choice)
    description, indexes = await asyncio.gather(client.describe_collection(name), adescribe_indexes(client, name))
    return CollectionSchema.describe(description, indexes, choice)


def check_dimension(schema: CollectionSchema, dimension: int, what: str) -> None:
    expected = schema.dense.dim
    if dimension != expected:
        raise MilvusProviderError(
            f"Dimension mismatch: collection '{schema.name}' field '{schema.dense.name}' stores {expected}-dimensional "
            f"vectors but {what} has {dimension}. Use the model the collection was built with (or set "
            "embedding_dimensions), or write to a new collection. Nothing was written."
        )


def check_embedding_identity(schema: CollectionSchema, identity: dict[str, Any] | None) -> None:
    """
    Refuse a write or search whose embedding model is not the one the collection was built with.

    Vectors of two models live in unrelated spaces: mixing them, or searching one with the other,
    gives wrong results without any error. Collections without a recorded identity (made elsewhere,
    or before this was recorded) are accepted with a warning.
    """
    if identity is None:
        return
    recorded = schema.embedding
    if recorded is None:
        log.warning(
            "Collection '%s' records no embedding model, so this task cannot check that %r made its vectors. "
            "Collections created by this package record it.",
            schema.name,
            identity.get("model"),
        )
        return
    if recorded.get("kind") == "bm25":
        return  # BM25-only: no dense vectors; using embeddings there fails with its own message
    keys = ("kind", "model")  # a dimension that differs fails check_dimension, with its own message
    differs = [
        k for k in keys if recorded.get(k) is not None and identity.get(k) is not None and recorded[k] != identity[k]
    ]
    if differs:
        raise MilvusProviderError(
            f"Collection '{schema.name}' was built with embedding model {recorded.get('model')!r} "
            f"({recorded.get('kind')}, dimensions {recorded.get('dimensions')}) but this task uses "
            f"{identity.get('model')!r} ({identity.get('kind')}, dimensions {identity.get('dimensions')}). "
            "Vectors of different models cannot be mixed or searched together. Use the collection's model "
            "(embedding_model / embedding_conn_id), or write the new model's vectors to a new collection. "
            "Nothing was written or searched."
        )
