"""
OpenLineage datasets for Milvus collections (used when apache-airflow-providers-openlineage is installed).

Naming follows the OpenLineage naming spec for databases (namespace = ``scheme://host:port`` of the service,
name = ``{database}.{table}``):

- a Milvus server or Zilliz Cloud endpoint: namespace ``milvus://{host}:{port}`` (port 19530 when the URI has
  none, 443 for ``https://``), name ``{db_name or "default"}.{collection}``;
- a local Milvus Lite data directory: the connection resolves to ``http://127.0.0.1:{port}`` of whichever
  shared server runs now, and that port changes on every start. The data directory is what identifies the
  data, so the namespace is ``milvus-lite://{absolute data dir}`` (``milvus-lite:///srv/milvus_data``) and the
  name ``{db_name or "default"}.{collection}`` as for a server.

User names, passwords, tokens, query strings and paths of server URIs never enter a namespace.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage

DEFAULT_PORT = 19530
DEFAULT_DB = "default"


@dataclass(frozen=True)
class MilvusDatasetName:
    """An OpenLineage dataset identity: namespace (the Milvus instance) and name (``db.collection``)."""

    namespace: str
    name: str


def dataset_name(conn: Any, collection_name: str) -> MilvusDatasetName:
    """OpenLineage namespace and name of ``collection_name`` on the Milvus behind connection ``conn``."""
    from airflow_provider_milvus.local_server import is_local_path
    from airflow_provider_milvus.settings import configured_uri_and_db

    uri, db_name = configured_uri_and_db(conn)
    name = f"{db_name or DEFAULT_DB}.{collection_name}"
    if is_local_path(uri):
        data_dir = Path(uri).expanduser().resolve()
        return MilvusDatasetName(namespace=f"milvus-lite://{data_dir.as_posix()}", name=name)
    parts = urlsplit(uri if "://" in uri else f"http://{uri}")
    host = (parts.hostname or "").lower()
    try:
        explicit_port = parts.port
    except ValueError:
        explicit_port = None
    port = explicit_port or conn.port or (443 if parts.scheme == "https" else DEFAULT_PORT)
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return MilvusDatasetName(namespace=f"milvus://{host}:{port}", name=name)


def operator_lineage(conn: Any, collection_name: str, *, is_input: bool) -> OperatorLineage:
    """``OperatorLineage`` with the collection as the one input (search) or output (writes, deletes)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

    named = dataset_name(conn, collection_name)
    dataset = Dataset(namespace=named.namespace, name=named.name)
    if is_input:
        return OperatorLineage(inputs=[dataset])
    return OperatorLineage(outputs=[dataset])


def operator_lineage_for(operator: Any, *, is_input: bool) -> OperatorLineage:
    """
    Lineage of a Milvus operator: its (rendered) collection on its Milvus connection.

    Search reads the collection (``is_input``); add, upsert and delete change it (output).
    """
    from airflow_provider_milvus.hooks.milvus import MilvusHook

    conn = MilvusHook.get_connection(operator.milvus_conn_id)
    return operator_lineage(conn, operator.collection_name, is_input=is_input)
