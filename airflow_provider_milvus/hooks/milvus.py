"""MilvusHook: clients, schemas and LangChain vector stores from an Airflow connection."""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_milvus.core.checks import check_collection_name
from airflow_provider_milvus.core.collection import (
    NewCollection,
    check_dimension,
    read_schema,
)
from airflow_provider_milvus.core.schema import CollectionSchema, FieldChoice
from airflow_provider_milvus.core.session import embedding_side
from airflow_provider_milvus.exceptions import MilvusProviderError, describe_milvus_error
from airflow_provider_milvus.settings import (
    MilvusConnectionSettings,
    settings_from_connection,
)
from airflow_provider_milvus.version_compat import BaseHook

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_milvus import Milvus
    from pymilvus import AsyncMilvusClient, MilvusClient

__all__ = ["MilvusConnectionSettings", "MilvusHook", "settings_from_connection"]


class MilvusHook(BaseHook):
    """
    Interact with Milvus (Milvus Lite, standalone, distributed or Zilliz Cloud).

    :param milvus_conn_id: Airflow connection of type ``milvus``.
    """

    conn_name_attr = "milvus_conn_id"
    default_conn_name = "milvus_default"
    conn_type = "milvus"
    hook_name = "Milvus"

    def __init__(self, milvus_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.milvus_conn_id = milvus_conn_id

    @cached_property
    def settings(self) -> MilvusConnectionSettings:
        return settings_from_connection(self.get_connection(self.milvus_conn_id))

    def get_connection_args(self) -> dict[str, Any]:
        """``connection_args`` for ``langchain_milvus.Milvus``."""
        return self.settings.client_kwargs()

    def get_conn(self) -> MilvusClient:
        return self.client

    @cached_property
    def client(self) -> MilvusClient:
        from pymilvus import MilvusClient

        with describe_milvus_error(self.settings, action="connect"):
            return MilvusClient(**self.settings.client_kwargs())

    def get_async_client(self) -> AsyncMilvusClient:
        """Return a new ``AsyncMilvusClient``; it binds to the event loop that first awaits it."""
        from pymilvus import AsyncMilvusClient

        return AsyncMilvusClient(**self.settings.client_kwargs())

    def get_embeddings(
        self,
        *,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
    ) -> Embeddings | None:
        """Dense embeddings from the embedding connection, or None for BM25 full-text."""
        return self._embeddings(embedding_conn_id, embedding_model, embedding_dimensions)[0]

    def _embeddings(
        self, conn_id: str | None, model: str | None, dimensions: int | None
    ) -> tuple[Embeddings | None, dict[str, Any] | None]:
        """Return the embeddings (None: BM25) and their identity, as the operators build them."""
        from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings, embedding_identity

        embedding = EmbeddingSettings.choose(self.settings, conn_id=conn_id, model=model, dimensions=dimensions)
        if embedding is None:
            return None, None
        conn = self.get_connection(embedding.conn_id)
        embeddings = build_embeddings(embedding, conn)
        return embeddings, embedding_identity(embedding, conn, embeddings)

    def get_collection_schema(
        self, collection_name: str, *, text_field: str | None = None, vector_field: str | None = None
    ) -> CollectionSchema:
        """Describe the collection's fields as every operator reads them (primary key, text, vectors, tenant key)."""
        with describe_milvus_error(self.settings, action=f"describe collection '{collection_name}'"):
            return read_schema(self.client, collection_name, FieldChoice(text_field, vector_field))

    def create_collection(
        self,
        collection_name: str,
        *,
        new_collection: NewCollection | dict[str, Any] | None = None,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
        embeddings: Embeddings | None = None,
    ) -> CollectionSchema:
        """
        Create ``collection_name`` as ``new_collection`` says (no-op when it exists); returns its schema.

        With ``embedding_conn_id`` the collection gets dense vectors of that model, whose identity
        (kind of connection, model, dimensions) is recorded with it as the operators record it, so a
        later write or search with another model is refused. Without one it is BM25 full-text.
        ``embeddings``, a LangChain object built elsewhere, records only its ``model`` attribute.
        """
        identity = None
        if embeddings is None and embedding_conn_id is not None:
            embeddings, identity = self._embeddings(embedding_conn_id, embedding_model, embedding_dimensions)
        elif embeddings is not None and getattr(embeddings, "model", None):
            identity = {"model": getattr(embeddings, "model"), "dimensions": embedding_dimensions}
        return self._create_collection(collection_name, new_collection, embeddings, identity)

    def _create_collection(
        self,
        collection_name: str,
        new_collection: NewCollection | dict[str, Any] | None,
        embeddings: Embeddings | None,
        identity: dict[str, Any] | None,
    ) -> CollectionSchema:
        check_collection_name(collection_name)  # a name Milvus Lite takes and a server refuses fails here too
        options = NewCollection.from_value(new_collection)
        with describe_milvus_error(self.settings, action=f"create collection '{collection_name}'"):
            dimension = len(embeddings.embed_query("dimension probe")) if embeddings is not None else None
            options.create(self.client, collection_name, dimension, identity=identity)
        return self.get_collection_schema(collection_name)

    def get_vector_store(
        self,
        collection_name: str,
        *,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
        text_field: str | None = None,
        vector_field: str | None = None,
        new_collection: NewCollection | dict[str, Any] | None = None,
        **store_kwargs: Any,
    ) -> Milvus:
        """
        Return a ``langchain_milvus.Milvus`` mapped onto the collection's own field names.

        A missing collection is created first (``new_collection``); an existing one is used as it is.
        """
        from langchain_milvus import BM25BuiltInFunction, Milvus, TextEmbeddingBuiltInFunction

        embeddings, identity = self._embeddings(embedding_conn_id, embedding_model, embedding_dimensions)
        with describe_milvus_error(self.settings, action=f"open collection '{collection_name}'"):
            if not self.client.has_collection(collection_name):
                self._create_collection(collection_name, new_collection, embeddings, identity)
            schema = self.get_collection_schema(collection_name, text_field=text_field, vector_field=vector_field)
            # The operators' rule: another model is refused; a collection Milvus embeds for needs no model.
            embeddings, _, _ = embedding_side(schema, embeddings, identity, [])
            if embeddings is not None:
                check_dimension(schema, len(embeddings.embed_query("dimension probe")), "the embedding model's output")
            vector_fields: list[str] = []
            search_params: list[dict[str, Any]] = []
            builtin: list[Any] = []
            server = schema.server_embedding
            if embeddings is not None or server is not None:
                vector_fields.append(schema.dense.name)
                search_params.append({"metric_type": schema.dense.metric, "params": {}})
            if server is not None:  # Milvus embeds text on write and query text on search
                builtin.append(
                    TextEmbeddingBuiltInFunction(
                        input_field_names=server.input,
                        output_field_names=server.output,
                        dim=schema.dense.dim,
                        params={"provider": server.provider, "model_name": server.model},
                        function_name=server.name,
                    )
                )
            if schema.bm25_field:
                vector_fields.append(schema.bm25_field)
                search_params.append({"metric_type": "BM25", "params": {}})
                builtin.append(
                    BM25BuiltInFunction(
                        input_field_names=schema.text, output_field_names=schema.bm25_field, enable_match=False
                    )
                )
            if not vector_fields:
                raise MilvusProviderError(
                    f"Collection '{collection_name}' has dense vectors only: pass embedding_conn_id (and "
                    "embedding_model) for the model it was built with."
                )
            return Milvus(
                embedding_function=embeddings,
                builtin_function=(builtin[0] if len(builtin) == 1 else builtin) or None,
                collection_name=collection_name,
                connection_args=self.settings.client_kwargs(),
                primary_field=schema.primary,
                text_field=schema.text,
                vector_field=vector_fields[0] if len(vector_fields) == 1 else vector_fields,
                search_params=search_params[0] if len(search_params) == 1 else search_params,
                enable_dynamic_field=schema.dynamic,
                auto_id=schema.auto_id,
                partition_key_field=schema.partition_key,
                timeout=self.settings.timeout,
                **store_kwargs,
            )

    def test_connection(self) -> tuple[bool, str]:
        """One cheap real call, so ``airflow connections test`` and the UI's Test button work."""
        from pymilvus import MilvusClient

        try:
            settings = self.settings  # its errors (no URI, no local server) carry no secrets
        except Exception as error:
            return False, str(error)
        try:
            client = MilvusClient(**settings.client_kwargs())
            try:
                version = client.get_server_version()
                collections = client.list_collections()
            finally:
                client.close()
        except Exception as error:
            return False, str(MilvusProviderError.from_exception(error, settings.secrets, "connect"))
        database = settings.db_name or "default"
        return True, (
            f"Connected to Milvus {version} at {settings.uri}, database '{database}' ({len(collections)} collections)."
        )
