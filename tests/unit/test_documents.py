from __future__ import annotations

import pytest

from airflow_provider_milvus.core.documents import SplitOptions, prepare_chunks
from airflow_provider_milvus.exceptions import MilvusProviderError


def test_plain_strings_become_chunks_with_empty_metadata():
    chunks = prepare_chunks(["alpha", "beta"])
    assert [c["text"] for c in chunks] == ["alpha", "beta"]
    assert all(c["metadata"] == {} for c in chunks)


def test_ids_are_deterministic_across_runs():
    docs = [{"page_content": "some text " * 50, "metadata": {"source": "a.md"}}]
    first = prepare_chunks(docs, split=SplitOptions(chunk_size=100, chunk_overlap=10))
    second = prepare_chunks(docs, split=SplitOptions(chunk_size=100, chunk_overlap=10))
    assert [c["id"] for c in first] == [c["id"] for c in second]
    assert len(first) > 1


def test_changed_text_changes_the_id():
    before = prepare_chunks([{"page_content": "v1", "metadata": {"source": "a.md"}}])
    after = prepare_chunks([{"page_content": "v2", "metadata": {"source": "a.md"}}])
    assert before[0]["id"] != after[0]["id"]


def test_split_chunks_record_their_position():
    chunks = prepare_chunks(["word " * 100], split=SplitOptions(chunk_size=60))
    assert [c["metadata"]["chunk_index"] for c in chunks] == list(range(len(chunks)))


def test_id_key_takes_the_id_from_metadata():
    chunks = prepare_chunks([{"page_content": "x", "metadata": {"record_id": "sku-1"}}], id_key="record_id")
    assert chunks[0]["id"] == "sku-1"


def test_explicit_ids_must_match_the_documents():
    with pytest.raises(MilvusProviderError, match="2 ids for 1 documents"):
        prepare_chunks(["x"], ids=["a", "b"])


def test_document_without_text_is_rejected():
    with pytest.raises(MilvusProviderError, match="Document 1 has no text"):
        prepare_chunks(["ok", {"page_content": "  ", "metadata": {}}])


def test_metadata_that_is_not_json_is_rejected():
    with pytest.raises(MilvusProviderError, match="metadata 'when' is not JSON-able"):
        prepare_chunks([{"page_content": "x", "metadata": {"when": object()}}])


def test_text_longer_than_the_field_is_rejected_not_truncated():
    with pytest.raises(MilvusProviderError, match="nothing was truncated"):
        prepare_chunks(["é" * 40], text_max_bytes=64)


def test_duplicate_ids_in_one_task_are_rejected():
    with pytest.raises(MilvusProviderError, match="same id"):
        prepare_chunks(["a", "b"], ids=["same", "same"])


def test_no_documents_means_no_chunks():
    assert prepare_chunks([]) == []
    assert prepare_chunks(None) == []
