"""
Connection settings: how an Airflow ``milvus`` connection maps onto pymilvus's own arguments.

The bottom layer: the async core, the hook and the operators all read settings from here.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.local_server import is_local_path, resolve_local_uri

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


def configured_uri_and_db(conn: Any) -> tuple[str, str]:
    """Return the URI and database as the connection states them (host or ``extra.uri``; db_name or schema)."""
    extra = dict(conn.extra_dejson)
    uri = (conn.host or "").strip() or str(extra.get("uri") or "").strip()
    return uri, extra.get("db_name") or conn.schema or ""


def settings_from_connection(conn: Any) -> MilvusConnectionSettings:
    """Map an Airflow connection to Milvus's own words: host -> uri, password -> token."""
    extra = dict(conn.extra_dejson)
    uri, db_name = configured_uri_and_db(conn)
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
        db_name=db_name,
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


async def aget_settings(conn_id: str) -> MilvusConnectionSettings:
    """Resolve a connection's settings without blocking the event loop (for triggers)."""
    from airflow_provider_milvus.version_compat import BaseHook

    conn = await BaseHook.aget_connection(conn_id)
    return await asyncio.to_thread(settings_from_connection, conn)


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
