"""MilvusHook: clients, connection arguments and LangChain vector stores from an Airflow connection."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_provider_milvus.exceptions import (
    MilvusProviderError,
    describe_milvus_error,
)
from airflow_provider_milvus.local_server import is_local_path, resolve_local_uri

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_milvus import Milvus
    from pymilvus import AsyncMilvusClient, MilvusClient


DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True)
class MilvusConnectionSettings:
    """Everything needed to reach one Milvus; ``repr`` never shows the token or password."""

    uri: str
    db_name: str = ""
    token: str = field(default="", repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    secure: bool | None = None
    server_pem_path: str | None = None
    server_name: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    embedding_conn_id: str | None = None
    embedding_model: str | None = None
    embedding_dimensions: int | None = None

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.token, self.password) if s]

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments shared by ``MilvusClient``, ``AsyncMilvusClient`` and langchain-milvus."""
        kwargs: dict[str, Any] = {"uri": self.uri, "timeout": self.timeout}
        if self.db_name:
            kwargs["db_name"] = self.db_name
        if self.token:
            kwargs["token"] = self.token
        elif self.user:
            kwargs["user"] = self.user
            kwargs["password"] = self.password
        if self.secure is not None:
            kwargs["secure"] = self.secure
        if self.server_pem_path:
            kwargs["server_pem_path"] = self.server_pem_path
        if self.server_name:
            kwargs["server_name"] = self.server_name
        return kwargs


def settings_from_connection(conn: Any) -> MilvusConnectionSettings:
    """Map an Airflow connection to Milvus's own words: host -> uri, password -> token."""
    extra = dict(conn.extra_dejson)
    uri = (conn.host or "").strip() or extra.get("uri", "")
    if not uri:
        raise MilvusProviderError(
            f"Connection '{conn.conn_id}' has no URI: set its host to e.g. http://localhost:19530, "
            "a Zilliz Cloud endpoint, or a local Milvus Lite data directory."
        )
    if is_local_path(uri):
        uri = resolve_local_uri(uri)
    else:
        uri = _with_port(uri if "://" in uri else f"http://{uri}", conn.port)
    login = conn.login or ""
    password = conn.password or ""
    timeout = extra.get("timeout")
    dimensions = extra.get("embedding_dimensions")
    return MilvusConnectionSettings(
        uri=uri,
        db_name=extra.get("db_name") or conn.schema or "",
        token="" if login else password,
        user=login,
        password=password if login else "",
        secure=_as_bool(extra.get("secure")),
        server_pem_path=extra.get("server_pem_path") or None,
        server_name=extra.get("server_name") or None,
        timeout=float(timeout) if timeout not in (None, "") else DEFAULT_TIMEOUT,
        embedding_conn_id=extra.get("embedding_conn_id") or None,
        embedding_model=extra.get("embedding_model") or None,
        embedding_dimensions=int(dimensions) if dimensions not in (None, "") else None,
    )


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

    @classmethod
    async def aget_settings(cls, milvus_conn_id: str) -> MilvusConnectionSettings:
        """Resolve settings without blocking the event loop (for triggers)."""
        conn = await cls.aget_connection(milvus_conn_id)
        return await asyncio.to_thread(settings_from_connection, conn)

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
        """A new ``AsyncMilvusClient``; it binds to the event loop that first awaits it."""
        from pymilvus import AsyncMilvusClient

        return AsyncMilvusClient(**self.settings.client_kwargs())

    def get_embeddings(
        self,
        *,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
    ) -> Embeddings | None:
        """Dense embeddings from an OpenAI-compatible connection, or None for BM25 full-text."""
        from airflow_provider_milvus.embeddings import (
            EmbeddingSettings,
            build_embeddings,
        )

        embedding = EmbeddingSettings.choose(
            self.settings,
            conn_id=embedding_conn_id,
            model=embedding_model,
            dimensions=embedding_dimensions,
        )
        if embedding is None:
            return None
        return build_embeddings(embedding, self.get_connection(embedding.conn_id))

    def get_vector_store(
        self,
        collection_name: str,
        *,
        embedding_conn_id: str | None = None,
        embedding_model: str | None = None,
        embedding_dimensions: int | None = None,
        full_text_search: bool | None = None,
        **store_kwargs: Any,
    ) -> Milvus:
        """
        A ``langchain_milvus.Milvus`` for ``collection_name`` with this provider's schema conventions.

        Creates the collection when it does not exist yet (see ``CollectionSpec``).
        """
        from airflow_provider_milvus.core.collection import (
            CollectionSpec,
            build_vector_store,
        )

        embeddings = self.get_embeddings(
            embedding_conn_id=embedding_conn_id,
            embedding_model=embedding_model,
            embedding_dimensions=embedding_dimensions,
        )
        spec = CollectionSpec.for_embeddings(collection_name, embeddings, full_text_search=full_text_search)
        with describe_milvus_error(self.settings, action=f"open collection '{collection_name}'"):
            spec.ensure_exists(self.client, embeddings)
            return build_vector_store(spec, self.settings, embeddings, **store_kwargs)

    def test_connection(self) -> tuple[bool, str]:
        """One cheap real call, so ``airflow connections test`` and the UI's Test button work."""
        from pymilvus import MilvusClient

        try:
            settings = self.settings  # its errors (no URI, no local server) carry no secrets
        except Exception as error:  # noqa: BLE001 - reported to the user, not raised
            return False, str(error)
        try:
            client = MilvusClient(**settings.client_kwargs())
            try:
                version = client.get_server_version()
                collections = client.list_collections()
            finally:
                client.close()
        except Exception as error:  # noqa: BLE001 - reported to the user, not raised
            return False, str(MilvusProviderError.from_exception(error, settings.secrets, "connect"))
        database = settings.db_name or "default"
        return True, (
            f"Connected to Milvus {version} at {settings.uri}, database '{database}' "
            f"({len(collections)} collections)."
        )


def _with_port(uri: str, port: int | None) -> str:
    if not port:
        return uri
    parts = urlsplit(uri if "://" in uri else f"http://{uri}")
    if parts.port:
        return uri
    return parts._replace(netloc=f"{parts.netloc}:{port}").geturl()


def _as_bool(value: Any) -> bool | None:
    if value in (None, ""):
        return None
    if isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    return bool(value)
