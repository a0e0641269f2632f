"""The collection schema this provider writes, and the LangChain store that reads and writes it.

Field names are langchain-milvus's defaults (``pk``, ``text``, ``vector``) plus ``sparse`` for
Milvus's built-in BM25 function, so stores built elsewhere with langchain-milvus can read them.
Metadata lives in Milvus's dynamic field: any JSON-able metadata fits, and keys never get dropped.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.exceptions import MilvusProviderError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_milvus import Milvus
    from pymilvus import AsyncMilvusClient, MilvusClient

    from airflow_provider_milvus.hooks.milvus import MilvusConnectionSettings

PRIMARY_FIELD = "pk"
TEXT_FIELD = "text"
DENSE_FIELD = "vector"
SPARSE_FIELD = "sparse"
PK_MAX_LENGTH = 512
DEFAULT_TEXT_MAX_LENGTH = 65535
# Tasks that write and tasks that search run in different processes: "Session" consistency would
# not let a search task see the ingest that just finished upstream.
CONSISTENCY = "Strong"


@dataclass(frozen=True)
class CollectionSpec:
    """What a collection holds: a dense vector (with embeddings), BM25 sparse vectors, or both (hybrid)."""

    name: str
    dense: bool
    full_text: bool
    text_max_length: int = DEFAULT_TEXT_MAX_LENGTH

    @classmethod
    def for_embeddings(
        cls,
        name: str,
        embeddings: Embeddings | None,
        *,
        full_text_search: bool | None = None,
        text_max_length: int = DEFAULT_TEXT_MAX_LENGTH,
    ) -> CollectionSpec:
        """BM25 is on when there are no embeddings, and on request next to them (hybrid search)."""
        full_text = full_text_search if full_text_search is not None else embeddings is None
        if embeddings is None and not full_text:
            raise MilvusProviderError(
                f"Collection '{name}' would have no vectors: configure an embedding connection "
                "(embedding_conn_id) or leave full_text_search enabled."
            )
        return cls(name=name, dense=embeddings is not None, full_text=full_text, text_max_length=text_max_length)

    @property
    def vector_fields(self) -> list[str]:
        return [f for f, on in ((DENSE_FIELD, self.dense), (SPARSE_FIELD, self.full_text)) if on]

    def schema_and_index(self, dimension: int | None) -> tuple[Any, Any]:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
        schema.add_field(PRIMARY_FIELD, DataType.VARCHAR, is_primary=True, max_length=PK_MAX_LENGTH)
        text_options: dict[str, Any] = {"enable_analyzer": True} if self.full_text else {}
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=self.text_max_length, **text_options)
        index = MilvusClient.prepare_index_params()
        if self.dense:
            schema.add_field(DENSE_FIELD, DataType.FLOAT_VECTOR, dim=dimension)
            index.add_index(field_name=DENSE_FIELD, index_type="AUTOINDEX", metric_type="COSINE")
        if self.full_text:
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

    def ensure_exists(self, client: MilvusClient, embeddings: Embeddings | None) -> CollectionInfo:
        """Sync variant for the hook; tasks use ``aensure_exists``."""
        dimension = len(embeddings.embed_query("dimension probe")) if embeddings else None
        self._create_if_missing(client, dimension)
        return self.check_compatible(client.describe_collection(self.name), dimension)

    async def aensure_exists(
        self,
        client: AsyncMilvusClient,
        embeddings: Embeddings | None,
        *,
        create: bool,
        settings: MilvusConnectionSettings,
        check_vectors: bool = True,
    ) -> CollectionInfo:
        """
        Create the collection once, before any fan-out (concurrent first inserts race).

        ``check_vectors=False`` (deletes) only needs the collection to exist, whatever its vectors.
        """
        dimension = len(await embeddings.aembed_query("dimension probe")) if embeddings else None
        if not await client.has_collection(self.name):
            if not create:
                raise MilvusProviderError(
                    f"Collection '{self.name}' does not exist. Check collection_name and the "
                    "connection's database, or run an ingest task first."
                )
            # Sync client in a thread: the async create_collection waits on an index RPC Milvus Lite lacks.
            await asyncio.to_thread(self._create, settings, dimension)
        description = await client.describe_collection(self.name)
        info = self.check_compatible(description, dimension) if check_vectors else CollectionInfo.from_description(description)
        await client.load_collection(self.name)
        return info

    def _create(self, settings: MilvusConnectionSettings, dimension: int | None) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(**settings.client_kwargs())
        try:
            self._create_if_missing(client, dimension)
        finally:
            client.close()

    def _create_if_missing(self, client: MilvusClient, dimension: int | None) -> None:
        if client.has_collection(self.name):
            return
        schema, index = self.schema_and_index(dimension)
        try:
            client.create_collection(self.name, schema=schema, index_params=index, consistency_level=CONSISTENCY)
        except Exception:
            # Milvus creates the collection before its indexes: never leave a half-made one.
            if client.has_collection(self.name):
                client.drop_collection(self.name)
            raise

    def check_compatible(self, description: dict[str, Any], embeddings_dimension: int | None) -> CollectionInfo:
        info = CollectionInfo.from_description(description)
        if self.dense and info.dense_dimension is None:
            raise MilvusProviderError(
                f"Collection '{self.name}' has no dense '{DENSE_FIELD}' field, but an embedding model is "
                "configured. Drop the embedding settings (BM25 full-text) or use a new collection."
            )
        if embeddings_dimension is not None and info.dense_dimension not in (None, embeddings_dimension):
            raise MilvusProviderError(
                f"Dimension mismatch: collection '{self.name}' stores {info.dense_dimension}-dimensional "
                f"vectors but the embedding model returns {embeddings_dimension}. Use the model the "
                "collection was built with (or set embedding_dimensions), or write to a new collection."
            )
        if not self.dense and not info.full_text:
            raise MilvusProviderError(
                f"Collection '{self.name}' has dense vectors only; configure the embedding connection "
                "and model it was built with (embedding_conn_id / embedding_model)."
            )
        return info


@dataclass(frozen=True)
class CollectionInfo:
    text_max_length: int
    dense_dimension: int | None
    full_text: bool

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> CollectionInfo:
        fields = {f["name"]: f for f in description.get("fields", [])}
        text_params = fields.get(TEXT_FIELD, {}).get("params", {})
        dense_params = fields.get(DENSE_FIELD, {}).get("params", {})
        return cls(
            text_max_length=int(text_params.get("max_length", DEFAULT_TEXT_MAX_LENGTH)),
            dense_dimension=int(dense_params["dim"]) if "dim" in dense_params else None,
            full_text=SPARSE_FIELD in fields,
        )


def build_vector_store(
    spec: CollectionSpec,
    settings: MilvusConnectionSettings,
    embeddings: Embeddings | None,
    *,
    full_text: bool | None = None,
    **store_kwargs: Any,
) -> Milvus:
    """A ``Milvus`` store over an existing collection. Makes sync RPCs: call it in a thread from async code."""
    from langchain_milvus import BM25BuiltInFunction, Milvus

    use_full_text = spec.full_text if full_text is None else full_text
    vector_fields: list[str] = []
    search_params: list[dict[str, Any]] = []
    if embeddings is not None:
        vector_fields.append(DENSE_FIELD)
        search_params.append({"metric_type": "COSINE", "params": {}})
    builtin = None
    if use_full_text:
        vector_fields.append(SPARSE_FIELD)
        search_params.append({"metric_type": "BM25", "params": {}})
        builtin = BM25BuiltInFunction(
            input_field_names=TEXT_FIELD, output_field_names=SPARSE_FIELD, enable_match=False
        )
    return Milvus(
        embedding_function=embeddings,
        builtin_function=builtin,
        collection_name=spec.name,
        connection_args=settings.client_kwargs(),
        primary_field=PRIMARY_FIELD,
        text_field=TEXT_FIELD,
        vector_field=vector_fields[0] if len(vector_fields) == 1 else vector_fields,
        search_params=search_params[0] if len(search_params) == 1 else search_params,
        enable_dynamic_field=True,
        auto_id=False,
        consistency_level=CONSISTENCY,
        timeout=settings.timeout,
        **store_kwargs,
    )
