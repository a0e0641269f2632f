"""The write path's shape: each document is normalised once (the operator does it; the core takes it as is)."""

from __future__ import annotations

from airflow_provider_milvus.core import documents as documents_module
from airflow_provider_milvus.operators import milvus as operators_module

from tests.test_operators import add, docs, run


def test_each_document_is_normalised_once_per_write(milvus_conn_id, collection_name, monkeypatch):
    calls: list[int] = []
    real = documents_module.normalize_documents

    def counting(documents):
        calls.append(len(documents))
        return real(documents)

    monkeypatch.setattr(documents_module, "normalize_documents", counting)
    monkeypatch.setattr(operators_module, "normalize_documents", counting)
    summary = run(add(collection_name, milvus_conn_id, docs(30), replace_by="source"), "inline")
    assert summary["written"] == 30
    assert calls == [30]
