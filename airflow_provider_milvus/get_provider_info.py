"""
Provider metadata read by Airflow through the ``apache_airflow_provider`` entry point.

The Airflow 3.2+ UI builds the connection form from ``conn-fields`` and
``ui-field-behaviour`` alone; it never imports the hook.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_milvus import __version__


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-milvus",
        "name": "Milvus",
        "description": "Load, upsert, delete and search Milvus vector collections with langchain-milvus.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Milvus",
                "external-doc-url": "https://milvus.io/docs",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "Milvus", "python-modules": ["airflow_provider_milvus.hooks.milvus"]}],
        "operators": [
            {
                "integration-name": "Milvus",
                "python-modules": [
                    "airflow_provider_milvus.operators.milvus",
                    "airflow_provider_milvus.operators.rebuild",
                ],
            }
        ],
        "triggers": [{"integration-name": "Milvus", "python-modules": ["airflow_provider_milvus.triggers.milvus"]}],
        "connection-types": [
            {
                "connection-type": "milvus",
                "hook-class-name": "airflow_provider_milvus.hooks.milvus.MilvusHook",
                "hook-name": "Milvus",
                "conn-fields": {
                    "db_name": {
                        "label": "Database",
                        "description": "Milvus database to use. Leave empty for 'default'.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "secure": {
                        "label": "Use TLS",
                        "description": "Connect with TLS. Implied by an https:// URI.",
                        "schema": {"type": ["boolean", "null"]},
                    },
                    "server_pem_path": {
                        "label": "Server CA certificate path",
                        "description": "PEM file to verify the server's TLS certificate (one-way TLS).",
                        "schema": {"type": ["string", "null"]},
                    },
                    "server_name": {
                        "label": "TLS server name",
                        "description": "Override the host name checked in the server's TLS certificate.",
                        "schema": {"type": ["string", "null"]},
                    },
                    "timeout": {
                        "label": "Timeout (seconds)",
                        "description": "Connect and per-request timeout. Default 30.",
                        "schema": {"type": ["number", "null"], "minimum": 0.1},
                    },
                    "embedding_conn_id": {
                        "label": "Embedding connection id",
                        "description": (
                            "An Airflow connection for dense embeddings: type 'openai' (host = base URL, "
                            "password = API key) or common-ai's 'langchain' (extra embed_model = 'provider:model'). "
                            "Leave empty to use Milvus's built-in BM25 full-text search."
                        ),
                        "schema": {"type": ["string", "null"]},
                    },
                    "embedding_model": {
                        "label": "Embedding model",
                        "description": (
                            "Model name sent to the embedding endpoint, e.g. text-embedding-3-small "
                            "(for a 'langchain' connection: overrides its embed_model)."
                        ),
                        # The 3.3 UI ignores ui-field-behaviour placeholders for extra fields; JSON-schema
                        # "examples" render as suggestions (an HTML datalist) under the input instead.
                        "schema": {
                            "type": ["string", "null"],
                            "examples": ["text-embedding-3-small", "text-embedding-3-large"],
                        },
                    },
                    "embedding_dimensions": {
                        "label": "Embedding dimensions",
                        "description": "Optional output size for models that support it (text-embedding-3-*).",
                        "schema": {"type": ["integer", "null"], "minimum": 1},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "extra"],
                    "relabeling": {
                        "host": "URI",
                        "login": "User",
                        "password": "Token or Password",
                    },
                    "placeholders": {
                        "host": "http://localhost:19530, a Zilliz Cloud https:// endpoint, or /path/to/milvus_data",
                        "port": "19530 (only if the URI has no port)",
                        "login": "root (leave empty when using a token)",
                        "password": "user:password or a Zilliz Cloud API key",
                        "db_name": "default",
                        "timeout": "30",
                        "embedding_conn_id": "openai_default",
                        "embedding_model": "text-embedding-3-small",
                    },
                },
            }
        ],
    }
