"""Ordinary sequences that once left a collection different from its corpus for good (issue 20).

Each runs on Milvus Lite and a real Milvus standalone 2.3.5 (which keeps duplicate primary keys) with
dense embeddings over loopback HTTP. After the sequence, the next ingest of the corpus must leave the
collection equal to it, read back row by row with pymilvus (ids, texts, metadata, vectors of the
configured model), and the run after that must write nothing.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from airflow_provider_milvus.core.documents import SplitOptions, prepare_chunks
from airflow_provider_milvus.core.ledger import DIGEST_FIELD, ledger_name
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS
from tests.test_incremental_ingest import corpus, ingest
from tests.test_operators import run

FILES = 10


@pytest.fixture(autouse=True)
def _embedding_connection(embedding_conn_id):
    """``ingest`` embeds through the loopback server's connection."""


def expected_rows(documents: list[dict], key: str = "source", chunk_size: int | None = 200) -> dict[str, tuple]:
    """The corpus as rows: id -> (text, metadata), as the provider derives them."""
    prepared = prepare_chunks(documents, split=SplitOptions(chunk_size=chunk_size), scope_key=key)
    return {c["id"]: (c["text"], c["metadata"]) for c in prepared.chunks}


def stored_rows(tier, collection: str, primary: str = "pk", text: str = "text", vector: str = "vector") -> dict:
    """Every row, read back at Strong consistency: id -> (text, metadata); vectors checked against the model."""
    rows = tier.client.query(
        collection,
        filter="",
        output_fields=[primary, text, vector, "$meta"],
        limit=16384,
        consistency_level="Strong",
    )
    by_id: dict = {}
    ids = [row[primary] for row in rows]
    assert len(ids) == len(set(ids)), f"duplicate primary keys: {len(ids) - len(set(ids))}"
    for stored in rows:
        row = dict(stored)
        assert row.pop(vector) == pytest.approx(embed_text(row[text], EMBEDDING_DIMENSIONS), abs=1e-5)
        pk, body = row.pop(primary), row.pop(text)
        row.pop(DIGEST_FIELD, None)
        by_id[pk] = (body, row)
    return by_id


def assert_equals_corpus(tier, collection: str, documents: list[dict], **options) -> None:
    assert stored_rows(tier, collection) == expected_rows(documents, **options)


def assert_converged(tier, collection: str, documents: list[dict], **kwargs) -> None:
    """The next run repairs the collection; the run after it writes nothing."""
    ingest(tier, collection, documents, **kwargs)
    assert_equals_corpus(tier, collection, documents)
    again = ingest(tier, collection, documents, **kwargs)
    assert again["written"] == 0
    assert_equals_corpus(tier, collection, documents)


def pks_of(tier, collection: str, source: str) -> list[str]:
    return [r["pk"] for r in tier.rows(collection, f"source == {json.dumps(source)}", ["pk"])]


def test_our_own_delete_and_upsert_never_hide_a_missing_chunk(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    lost = pks_of(tier, collection_name, "docs/file0004.md")[:2]
    store = dict(milvus_conn_id=tier.conn_id, collection_name=collection_name, embedding_conn_id="embeddings_test")
    deleted = run(
        MilvusDeleteByExprOperator(task_id="d", expr="pk in {lost}", expr_params={"lost": lost}, **store), "inline"
    )
    assert deleted["deleted"] == 2
    extra = [{"page_content": f"manual note {i}", "metadata": {"source": f"manual/{i}.md"}} for i in range(2)]
    run(MilvusUpsertOperator(task_id="u", documents=extra, ids=["m0", "m1"], **store), "inline")
    assert tier.count(collection_name) == len(expected_rows(documents)), "the count alone cannot tell"
    assert_converged(tier, collection_name, documents, delete_missing=True)


def test_another_application_deleting_and_inserting_as_many_rows_is_repaired(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    lost = pks_of(tier, collection_name, "docs/file0002.md")[1:]
    tier.client.delete(collection_name, ids=lost)
    texts = [f"another application's row {i}" for i in range(len(lost))]
    tier.client.insert(
        collection_name,
        [
            {"pk": f"app-{i}", "text": t, "vector": embed_text(t, EMBEDDING_DIMENSIONS), "source": "app/x"}
            for i, t in enumerate(texts)
        ],
    )
    assert_converged(tier, collection_name, documents, delete_missing=True)


def test_two_overlapping_runs_converge_to_the_last_runs_input(tier, collection_name, embeddings):
    ingest(tier, collection_name, corpus(60))
    nightly = corpus(60, edited={f: f"Nightly edit of file {f}." for f in range(45)})
    short = corpus(60, edited={7: "A newer version of file seven, written by a short run."})
    embeddings.latency = 0.15  # the long run is still embedding when the short one writes
    failures: list[BaseException] = []

    def long_run() -> None:
        try:
            ingest(tier, collection_name, nightly, batch_size=10, max_concurrency=1)
        except BaseException as error:  # pragma: no cover - reported below
            failures.append(error)

    thread = threading.Thread(target=long_run)
    thread.start()
    deadline = time.monotonic() + 30
    while embeddings.stats.requests < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread.is_alive(), "the long run must still be running"
    ingest(tier, collection_name, [d for d in short if d["metadata"]["source"] == "docs/file0007.md"])
    thread.join()
    assert not failures
    embeddings.latency = 0.0
    assert_converged(tier, collection_name, nightly)


def test_another_replace_by_key_in_between_never_counts_as_unchanged(tier, collection_name):
    def with_doc_key(documents: list[dict]) -> list[dict]:
        return [{**d, "metadata": {**d["metadata"], "doc": f"d-{d['metadata']['source']}"}} for d in documents]

    documents = with_doc_key(corpus(FILES))
    ingest(tier, collection_name, documents)
    edited = with_doc_key(corpus(FILES))
    edited[3]["page_content"] = edited[3]["page_content"].replace("paragraph 2", "paragraph two")
    ingest(tier, collection_name, edited, replace_by="doc")
    assert_converged(tier, collection_name, documents)


def test_an_untracked_run_in_between_never_counts_as_unchanged(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    edited = corpus(FILES)
    edited[3]["page_content"] = edited[3]["page_content"].replace("paragraph 2", "paragraph two")
    ingest(tier, collection_name, edited, track_sources=False)
    assert_converged(tier, collection_name, documents)


def test_sources_sharing_a_chunk_text_never_share_an_id(tier, collection_name):
    footer = "Confluence footer: this page is maintained by the platform team."

    def page(n: int) -> dict:
        body = "\n\n".join(f"Page {n} section {s}: " + " ".join(f"p{n}w{s}{i}" for i in range(22)) for s in range(3))
        return {"page_content": f"{body}\n\n{footer}", "metadata": {"path": f"wiki/page{n}", "source": "confluence"}}

    ingest(tier, collection_name, [page(1)], replace_by="path")
    ingest(tier, collection_name, [page(2)], replace_by="path")
    for n in (1, 2):
        texts = [r["text"] for r in tier.rows(collection_name, f'path == "wiki/page{n}"', ["text"])]
        assert len(texts) == 4
        assert footer in texts
    both = ingest(tier, collection_name, [page(1), page(2)], replace_by="path")
    assert both["written"] == 0
    assert stored_rows(tier, collection_name) == expected_rows([page(1), page(2)], key="path")


def test_auto_id_collections_under_two_concurrent_runs_converge_after_one_more_run(tier, name, embedding_conn_id):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=True, enable_dynamic_field=True)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=2000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    documents = corpus(FILES)
    threads = [threading.Thread(target=ingest, args=(tier, name, documents)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ingest(tier, name, documents)
    wanted = sorted((text, json.dumps(meta, sort_keys=True)) for text, meta in expected_rows(documents).values())
    have = sorted((text, json.dumps(meta, sort_keys=True)) for text, meta in stored_rows(tier, name).values())
    assert have == wanted
    assert ingest(tier, name, documents)["written"] == 0


def test_unreadable_ledger_rows_are_ignored_and_counted(tier, collection_name, caplog):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    tier.client.insert(
        ledger_name(collection_name),
        [
            {
                "id": "broken",
                "key": "source",
                "scope": "",
                "source": "not json",
                "digest": "x",
                "chunks": 3,
                "vector": [0, 0],
            }
        ],
    )
    with caplog.at_level(logging.WARNING, logger="airflow_provider_milvus.core.ledger"):
        again = ingest(tier, collection_name, documents, delete_missing=True)
    assert again["written"] == 0
    assert "ignored 1 unreadable source ledger rows" in caplog.text
    assert_equals_corpus(tier, collection_name, documents)


def test_a_foreign_sources_collection_is_refused_before_anything_is_written(tier, collection_name):
    from pymilvus import DataType, MilvusClient

    ingest(tier, collection_name, corpus(2), track_sources=False)
    before = tier.count(collection_name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("digest", DataType.VARCHAR, max_length=8)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    tier.client.create_collection(ledger_name(collection_name), schema=schema, index_params=index)
    with pytest.raises(
        MilvusProviderError, match=rf"'{ledger_name(collection_name)}' exists but is not .*track_sources"
    ):
        ingest(tier, collection_name, corpus(FILES))
    assert tier.count(collection_name) == before


def test_a_name_whose_ledger_name_is_too_long_is_refused_before_anything_is_written(tier):
    name = "c" * 250
    with pytest.raises(
        MilvusProviderError, match="the source ledger of 'c+' .* is 259 bytes; Milvus allows at most 255"
    ):
        ingest(tier, name, corpus(2))
    assert not tier.client.has_collection(name)


def ledger_sources(tier, collection: str) -> set[str]:
    return {json.loads(r["source"]) for r in tier.rows(ledger_name(collection), 'id != ""', ["source"])}


def test_a_delete_through_this_package_invalidates_only_the_sources_it_touches(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    lost = pks_of(tier, collection_name, "docs/file0004.md")[:1]
    store = dict(milvus_conn_id=tier.conn_id, collection_name=collection_name)
    run(MilvusDeleteByExprOperator(task_id="d", expr="pk in {lost}", expr_params={"lost": lost}, **store), "inline")
    assert ledger_sources(tier, collection_name) == {d["metadata"]["source"] for d in documents} - {"docs/file0004.md"}
    assert ingest(tier, collection_name, documents)["skipped_sources"] == FILES - 1


def test_an_upsert_through_this_package_invalidates_the_sources_whose_rows_it_replaces(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    replaced = pks_of(tier, collection_name, "docs/file0005.md")[0]
    store = dict(milvus_conn_id=tier.conn_id, collection_name=collection_name, embedding_conn_id="embeddings_test")
    record = {"page_content": "rewritten by an upsert", "metadata": {"source": "docs/file0005.md"}}
    run(MilvusUpsertOperator(task_id="u", documents=[record], ids=[replaced], **store), "inline")
    assert ledger_sources(tier, collection_name) == {d["metadata"]["source"] for d in documents} - {"docs/file0005.md"}
    assert_converged(tier, collection_name, documents)


def test_a_write_with_another_embedding_model_is_refused_and_writes_nothing(tier, collection_name, embeddings):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents, embedding_model="model-one")
    before = stored_rows(tier, collection_name)
    embeddings.reset_stats()
    with pytest.raises(
        MilvusProviderError, match=r"built with embedding model 'model-one'.*uses 'model-two'.*new collection"
    ):
        ingest(tier, collection_name, documents, embedding_model="model-two")
    assert embeddings.stats.inputs == 0
    assert stored_rows(tier, collection_name) == before
    assert ingest(tier, collection_name, documents, embedding_model="model-one")["written"] == 0


def test_a_search_with_another_embedding_model_is_refused(tier, collection_name):
    ingest(tier, collection_name, corpus(2), embedding_model="model-one")
    search = dict(
        task_id="s",
        milvus_conn_id=tier.conn_id,
        collection_name=collection_name,
        embedding_conn_id="embeddings_test",
        queries=["paragraph"],
    )
    assert run(MilvusSearchToXComOperator(**search, embedding_model="model-one"), "inline")[0]
    with pytest.raises(MilvusProviderError, match="'model-one'.*'model-two'"):
        run(MilvusSearchToXComOperator(**search, embedding_model="model-two"), "inline")


def test_a_collection_without_a_recorded_model_is_accepted_with_one_warning(tier, name, caplog):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=True)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("text", DataType.VARCHAR, max_length=2000)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_milvus.core.collection"):
        ingest(tier, name, corpus(2), embedding_model="model-two")
    assert caplog.text.count("records no embedding model") == 1
    assert_equals_corpus(tier, name, corpus(2))


def test_a_foreign_sources_collection_is_refused_before_a_new_collection_is_created(tier, collection_name):
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    tier.client.create_collection(ledger_name(collection_name), schema=schema, index_params=index)
    with pytest.raises(MilvusProviderError, match="is not this package's source ledger"):
        ingest(tier, collection_name, corpus(2))
    assert not tier.client.has_collection(collection_name)


def test_a_lost_row_found_by_the_audit_is_attributed_with_one_scan_of_the_scope(tier, collection_name, monkeypatch):
    from airflow_provider_milvus.core import ledger

    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    tier.client.delete(collection_name, ids=pks_of(tier, collection_name, "docs/file0006.md")[:1])
    monkeypatch.setattr(ledger, "BATCH", 2)  # 10 sources make 5 "source in [...]" queries: scan instead
    again = ingest(tier, collection_name, documents)
    assert (again["skipped_sources"], again["written"]) == (FILES - 1, 1)
    # ledger: read; audit (count(*), untracked rows); one page of the scan; forget and record file 6
    assert again["round_trips"]["ledger"] == 6
    assert_equals_corpus(tier, collection_name, documents)


# --- what the audit (count(*) of the scope + its rows that are not exactly tracked) catches, and what it cannot ---


def full_rows(tier, collection: str, source: str) -> list[dict]:
    """Rows of one source as stored: primary key, text, vector and every metadata key (the digest included)."""
    return [
        dict(r) for r in tier.rows(collection, f"source == {json.dumps(source)}", ["pk", "text", "vector", "$meta"])
    ]


def test_a_row_filed_under_a_tracked_source_without_its_digest_is_removed_by_the_next_run(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    text = "another application's row, filed under file 3"
    vector = embed_text(text, EMBEDDING_DIMENSIONS)
    tier.client.insert(collection_name, [{"pk": "app-1", "text": text, "vector": vector, "source": "docs/file0003.md"}])
    assert tier.count(collection_name) == len(expected_rows(documents)) + 1
    assert_converged(tier, collection_name, documents)


def test_a_row_moved_to_another_source_value_keeping_its_digest_is_repaired(tier, collection_name):
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    moved = full_rows(tier, collection_name, "docs/file0004.md")[0]
    assert moved[DIGEST_FIELD]
    tier.client.upsert(collection_name, [{**moved, "source": "elsewhere/moved.md"}])
    assert tier.count(collection_name) == len(expected_rows(documents)), "the count alone cannot tell"
    assert_converged(tier, collection_name, documents, delete_missing=True)


def test_a_duplicate_primary_key_is_counted_by_the_audit_and_force_removes_it(tier, collection_name, caplog):
    if not tier.real_server:
        pytest.skip("Milvus Lite replaces a row inserted under an existing primary key")
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    tier.client.insert(collection_name, [full_rows(tier, collection_name, "docs/file0002.md")[0]])
    assert tier.count(collection_name) == len(expected_rows(documents)) + 1
    with caplog.at_level(logging.WARNING, logger="airflow_provider_milvus.core.ledger"):
        ingest(tier, collection_name, documents)
    # Queries return one row per primary key, so no read names the source: the audit's warning does.
    assert "1 tracked rows more than the source ledger's that no read attributes" in caplog.text
    ingest(tier, collection_name, documents, force=True)
    assert tier.count(collection_name) == len(expected_rows(documents))
    assert_converged(tier, collection_name, documents)


def test_blind_spot_a_copied_row_balancing_a_lost_row_of_another_source_goes_unseen_until_force(tier, collection_name):
    """
    The audit counts paired rows (a tracked value and a tracked digest); it does not attribute them.

    Another application deleting a row of file 3 while copying a row of file 5 (digest included) under a
    new primary key keeps every count equal: the next run skips both sources. ``force=True`` repairs it.
    """
    documents = corpus(FILES)
    ingest(tier, collection_name, documents)
    tier.client.delete(collection_name, ids=pks_of(tier, collection_name, "docs/file0003.md")[:1])
    tier.client.insert(collection_name, [{**full_rows(tier, collection_name, "docs/file0005.md")[0], "pk": "copy-5"}])
    unseen = ingest(tier, collection_name, documents)
    assert (unseen["skipped_sources"], unseen["written"]) == (FILES, 0)
    assert stored_rows(tier, collection_name) != expected_rows(documents)
    ingest(tier, collection_name, documents, force=True)
    assert_converged(tier, collection_name, documents)
