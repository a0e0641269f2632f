"""Apache Airflow provider for Milvus, built on langchain-milvus."""

from __future__ import annotations

__version__ = "0.2.0"
