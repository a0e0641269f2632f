from __future__ import annotations

import random

import pytest

from airflow_provider_milvus.core.documents import SplitOptions, check_text_sizes, normalize_documents, prepare_chunks
from airflow_provider_milvus.exceptions import MilvusProviderError


def ids(documents, **kwargs) -> list:
    return [c["id"] for c in prepare_chunks(documents, **kwargs).chunks]


def test_plain_strings_become_chunks_with_empty_metadata():
    chunks = prepare_chunks(["alpha", "beta"]).chunks
    assert [c["text"] for c in chunks] == ["alpha", "beta"]
    assert all(c["metadata"] == {} for c in chunks)


def test_ids_are_deterministic_across_runs():
    docs = [{"page_content": "some text " * 50, "metadata": {"source": "a.md"}}]
    split = SplitOptions(chunk_size=100, chunk_overlap=10)
    first, second = ids(docs, split=split), ids(docs, split=split)
    assert first == second
    assert len(first) > 1


def test_ids_do_not_depend_on_the_order_of_the_input():
    strings = [f"string number {i}" for i in range(50)]
    shuffled = strings[:]
    random.Random(7).shuffle(shuffled)
    assert set(ids(strings)) == set(ids(shuffled)) == set(ids(list(reversed(strings))))
    assert set(ids(["a new string", *strings])) == set(ids(strings)) | set(ids(["a new string"]))


def test_dicts_without_a_source_get_ids_from_their_content():
    docs = [{"page_content": f"text {i}", "metadata": {"n": i}} for i in range(20)]
    assert set(ids(docs)) == set(ids(list(reversed(docs))))


def test_the_same_text_in_two_sources_gets_two_ids():
    docs = [{"page_content": "boilerplate", "metadata": {"source": s}} for s in ("a.md", "b.md")]
    assert len(set(ids(docs))) == 2


def test_identical_documents_are_written_once_and_counted():
    prepared = prepare_chunks(["same", "other", "same", {"page_content": "same", "metadata": {}}])
    assert [c["text"] for c in prepared.chunks] == ["same", "other"]
    assert prepared.duplicates == 2


def test_a_repeated_text_within_one_document_keeps_both_chunks():
    text = ("repeat this paragraph. " * 3 + "\n\n") * 4
    chunks = prepare_chunks(
        [{"page_content": text, "metadata": {"source": "r.md"}}], split=SplitOptions(chunk_size=80)
    ).chunks
    assert len({c["id"] for c in chunks}) == len(chunks) > 2


def test_an_edit_changes_only_the_ids_of_the_edited_chunks():
    paragraphs = [f"Paragraph {i}: " + "words " * 12 for i in range(10)]
    split = SplitOptions(chunk_size=90)
    before = ids([{"page_content": "\n\n".join(paragraphs), "metadata": {"source": "a.md"}}], split=split)
    edited = ["A new first paragraph."] + paragraphs
    after = ids([{"page_content": "\n\n".join(edited), "metadata": {"source": "a.md"}}], split=split)
    assert set(before) < set(after)
    assert len(set(after) - set(before)) == 1


def test_changed_text_changes_the_id():
    assert ids([{"page_content": "v1", "metadata": {"source": "a.md"}}]) != ids(
        [{"page_content": "v2", "metadata": {"source": "a.md"}}]
    )


def test_split_chunks_record_their_position():
    chunks = prepare_chunks(["word " * 100], split=SplitOptions(chunk_size=60)).chunks
    assert [c["metadata"]["chunk_index"] for c in chunks] == list(range(len(chunks)))


def test_id_key_takes_the_id_from_metadata():
    assert ids([{"page_content": "x", "metadata": {"record_id": "sku-1"}}], id_key="record_id") == ["sku-1"]


def test_id_key_with_splitting_numbers_the_chunks():
    chunk_ids = ids(
        [{"page_content": "word " * 60, "metadata": {"record_id": "r1"}}],
        id_key="record_id",
        split=SplitOptions(chunk_size=50),
    )
    assert chunk_ids[:2] == ["r1#0", "r1#1"]


def test_a_missing_id_key_names_the_document():
    with pytest.raises(MilvusProviderError, match="Document 1 has no metadata key 'record_id'"):
        prepare_chunks([{"page_content": "x", "metadata": {"record_id": 1}}, "y"], id_key="record_id")


def test_ids_cannot_be_combined_with_splitting():
    with pytest.raises(MilvusProviderError, match="cannot be combined with splitting"):
        prepare_chunks(["x"], ids=["a"], split=SplitOptions(chunk_size=10))


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
        check_text_sizes(prepare_chunks(["é" * 40]).chunks, 64)


def test_two_different_documents_with_one_id_are_rejected():
    with pytest.raises(MilvusProviderError, match="Two different chunks have the id 'same'"):
        prepare_chunks(["a", "b"], ids=["same", "same"])


def test_a_document_may_carry_its_own_vector():
    chunks = prepare_chunks([{"text": "pre-embedded", "metadata": {}, "vector": [1, 0.5]}]).chunks
    assert chunks[0]["vector"] == [1.0, 0.5]
    assert chunks[0]["text"] == "pre-embedded"


def test_a_vector_that_is_not_numbers_is_rejected():
    with pytest.raises(MilvusProviderError, match="'vector' must be a non-empty list of numbers"):
        prepare_chunks([{"page_content": "x", "vector": ["a"]}])


def test_a_document_with_a_vector_cannot_be_split():
    with pytest.raises(MilvusProviderError, match="cannot be split"):
        prepare_chunks([{"page_content": "x " * 50, "vector": [0.1]}], split=SplitOptions(chunk_size=10))


def test_no_documents_means_no_chunks():
    assert prepare_chunks([]).chunks == []
    assert prepare_chunks(None).chunks == []


def test_a_tenant_gets_its_own_derived_ids_for_the_same_document():
    doc = {"page_content": "same text", "metadata": {"source": "a.md"}}
    plain, acme, globex = (prepare_chunks([doc], tenant=t).chunks[0]["id"] for t in (None, "acme", "globex"))
    assert len({plain, acme, globex}) == 3
    assert prepare_chunks([doc]).chunks[0]["id"] == plain, "without a tenant, ids stay as before"


@pytest.mark.parametrize(
    ("metadata", "where"),
    [
        ({"n": 2**63}, "metadata 'n' = 9223372036854775808"),
        ({"n": -(2**63) - 1}, "metadata 'n' = -9223372036854775809"),
        ({"n": {"deep": [0, 2**70]}}, r"metadata 'n'\['deep'\]\[1\] = 1180591620717411303424"),
    ],
)
def test_integers_outside_int64_are_refused_naming_document_and_key(metadata, where):
    docs = [{"page_content": "a", "metadata": {"n": 1}}, {"page_content": "b", "metadata": metadata}]
    with pytest.raises(MilvusProviderError, match=rf"Document 1: {where} is outside the INT64 range"):
        normalize_documents(docs)


def test_int64_bounds_and_booleans_pass():
    normalize_documents([{"page_content": "a", "metadata": {"lo": -(2**63), "hi": 2**63 - 1, "b": True}}])


def test_the_dynamic_fields_own_name_is_a_reserved_key():
    with pytest.raises(MilvusProviderError, match=r"Document 0: metadata key '\$meta' is reserved"):
        normalize_documents([{"page_content": "a", "metadata": {"$meta": {"x": 1}}}])


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-1, 0), (True, 0), (10, 10), (10, -1)])
def test_split_options_that_cannot_split_are_refused(size, overlap):
    with pytest.raises(MilvusProviderError, match="chunk_"):
        SplitOptions(chunk_size=size, chunk_overlap=overlap)


def test_derived_ids_hash_the_replace_by_value_so_sources_never_share_an_id():
    from airflow_provider_milvus.core.documents import prepare_chunks

    pages = [{"page_content": "footer", "metadata": {"source": "confluence", "path": f"p{n}"}} for n in (1, 2)]
    by_path = prepare_chunks(pages, scope_key="path").chunks
    assert len({c["id"] for c in by_path}) == 2
    numbers = [{"page_content": "x", "metadata": {"source": s}} for s in (1, "1")]
    assert len({c["id"] for c in prepare_chunks(numbers, scope_key="source").chunks}) == 2
    assert prepare_chunks(pages[:1], scope_key="source").chunks[0]["id"] == prepare_chunks(pages[:1]).chunks[0]["id"]
