"""Incremental ingest: ids from content, unchanged chunks skipped, stale and vanished sources removed in batches.

On Milvus Lite and a real Milvus standalone, inline and deferred, with dense embeddings over loopback
HTTP whose requests and inputs the server counts. Results are read back with pymilvus.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.test_operators import MODES, run


def corpus(files: int, paragraphs: int = 6, edited: dict[int, str] | None = None) -> list[dict]:
    edited = edited or {}
    docs = []
    for f in range(files):
        body = "\n\n".join(
            f"File {f} paragraph {p}: " + " ".join(f"w{(f * 7 + p * 3 + i) % 97}" for i in range(20))
            for p in range(paragraphs)
        )
        if f in edited:
            body = edited[f] + "\n\n" + body
        docs.append({"page_content": body, "metadata": {"source": f"docs/file{f:04d}.md"}})
    return docs


def ingest(tier, collection, documents, mode="inline", **kwargs):
    # Dense embeddings on both tiers: BM25 needs Milvus 2.5+, the standalone tier is 2.3.
    options = dict(
        chunk_size=200,
        chunk_overlap=0,
        replace_by="source",
        batch_size=50,
        max_concurrency=4,
        embedding_conn_id=EMBEDDINGS,
    )
    options.update(kwargs)
    return run(
        MilvusAddDocumentsOperator(
            task_id="ingest", milvus_conn_id=tier.conn_id, collection_name=collection, documents=documents, **options
        ),
        mode,
    )


def pks(tier, collection) -> list[str]:
    return [r["pk"] for r in tier.rows(collection, 'pk != ""', ["pk"])]


EMBEDDINGS = "embeddings_test"


@pytest.fixture(autouse=True)
def dense(embedding_conn_id):
    assert embedding_conn_id == EMBEDDINGS
    return {}


@pytest.mark.parametrize("mode", MODES)
def test_reordered_extended_and_repeated_input_never_duplicates(tier, collection_name, mode):
    strings = [f"string number {i} about vectors" for i in range(50)]
    ingest(tier, collection_name, strings, mode, replace_by=None, chunk_size=None)
    ingest(tier, collection_name, list(reversed(strings)), mode, replace_by=None, chunk_size=None)
    summary = ingest(
        tier, collection_name, ["a brand new string", *strings, strings[3]], mode, replace_by=None, chunk_size=None
    )
    stored = pks(tier, collection_name)
    assert len(stored) == len(set(stored)) == 51
    assert (summary["written"], summary["unchanged"], summary["duplicates"]) == (1, 50, 1)


@pytest.mark.parametrize("mode", MODES)
def test_an_unchanged_rerun_embeds_and_writes_nothing(tier, collection_name, mode, dense, embeddings):
    docs = corpus(12)
    first = ingest(tier, collection_name, docs, mode, **dense)
    embeddings.reset_stats()
    shuffled = docs[:]
    random.Random(3).shuffle(shuffled)
    again = ingest(tier, collection_name, shuffled, mode, **dense)
    assert (embeddings.stats.requests, embeddings.stats.inputs) == (0, 0)
    assert (again["written"], again["unchanged"], again["stale_deleted"]) == (0, first["chunks"], 0)
    assert len(pks(tier, collection_name)) == first["chunks"]


@pytest.mark.parametrize("mode", MODES)
def test_an_edit_re_embeds_only_the_edited_chunks(tier, collection_name, mode, dense, embeddings):
    from airflow_provider_milvus.core.documents import SplitOptions, prepare_chunks

    before, after = corpus(10), corpus(10, edited={4: "A new opening paragraph for file four."})
    split = SplitOptions(chunk_size=200)
    new_texts = {c["text"] for c in prepare_chunks(after, split=split).chunks} - {
        c["text"] for c in prepare_chunks(before, split=split).chunks
    }
    ingest(tier, collection_name, before, mode, **dense)
    embeddings.reset_stats()
    summary = ingest(tier, collection_name, after, mode, **dense)
    assert embeddings.stats.inputs == summary["embedded"] == len(new_texts) <= 2
    # The paragraphs after the insertion moved: new chunk_index metadata, same text, stored vectors reused.
    assert summary["written"] == summary["embedded"] + summary["reused_vectors"]
    texts = [r["text"] for r in tier.rows(collection_name, 'source == "docs/file0004.md"', ["text"])]
    assert any(t.startswith("A new opening paragraph for file four.") for t in texts)
    assert (
        len(texts)
        == len(set(texts))
        == sum(1 for c in prepare_chunks(after, split=split).chunks if c["metadata"]["source"] == "docs/file0004.md")
    )


@pytest.mark.parametrize("mode", MODES)
def test_stale_chunks_and_vanished_sources_are_removed_exactly(tier, collection_name, mode):
    docs = corpus(20)
    ingest(tier, collection_name, docs, mode)
    before = {r["pk"]: r["source"] for r in tier.rows(collection_name, 'pk != ""', ["pk", "source"])}
    shortened = {"page_content": "Only one paragraph now.", "metadata": {"source": "docs/file0002.md"}}
    kept = [d for i, d in enumerate(docs) if i not in (2, 7, 11)] + [shortened]
    summary = ingest(tier, collection_name, kept, mode, delete_missing=True)
    after = {r["pk"]: r["source"] for r in tier.rows(collection_name, 'pk != ""', ["pk", "source"])}
    gone = {
        pk for pk, source in before.items() if source in ("docs/file0002.md", "docs/file0007.md", "docs/file0011.md")
    }
    assert set(before) - set(after) == gone
    assert summary["stale_deleted"] == sum(1 for s in before.values() if s == "docs/file0002.md")
    assert (summary["vanished_sources"], summary["vanished_deleted"]) == (2, len(gone) - summary["stale_deleted"])
    assert sorted(set(after.values())) == sorted(d["metadata"]["source"] for d in kept)


def test_a_thousand_source_replace_takes_a_bounded_number_of_round_trips(tier, collection_name):
    docs = corpus(1000, paragraphs=2)
    first = ingest(tier, collection_name, docs, batch_size=500, max_concurrency=4, chunk_size=None)
    # A collection this run created holds nothing: no lookups; one ledger upsert records the 1,000 sources.
    # The two embedding batches of 500 go to Milvus in one or two writes (a free writer takes what is embedded).
    # On Milvus Lite the collection and its ledger are flushed at the end.
    flushes = {} if tier.real_server else {"flush": 2}
    assert first["round_trips"] | {"write": 0} == {"write": 0, "lookup": 0, "ledger": 1, **flushes}
    assert 1 <= first["round_trips"]["write"] <= 2
    edited = [{**d, "page_content": d["page_content"] + " (edited)"} for d in docs[:500]] + docs[500:]
    summary = ingest(tier, collection_name, edited, batch_size=500, max_concurrency=4, chunk_size=None)
    assert summary["stale_deleted"] == 500
    assert summary["written"] == 500
    # ledger: read, the audit (count(*) and the untracked rows), forget the 500 edited sources, record them again
    assert summary["round_trips"] == {"lookup": 1, "write": 1, "delete": 1, "ledger": 5, **flushes}
    assert len(pks(tier, collection_name)) == 1000


def test_force_rewrites_and_re_embeds_everything(tier, collection_name, dense, embeddings):
    ingest(tier, collection_name, corpus(3), **dense)
    embeddings.reset_stats()
    summary = ingest(tier, collection_name, corpus(3), force=True, **dense)
    assert summary["written"] == summary["chunks"] == embeddings.stats.inputs
    assert summary["unchanged"] == 0


def test_a_metadata_change_keeps_the_stored_vector(tier, collection_name, dense, embeddings):
    docs = [{"page_content": f"record {i}", "metadata": {"source": f"s{i}", "owner": "ann"}} for i in range(5)]
    ingest(tier, collection_name, docs, chunk_size=None, **dense)
    embeddings.reset_stats()
    docs[2]["metadata"]["owner"] = "bob"
    summary = ingest(tier, collection_name, docs, chunk_size=None, **dense)
    assert (summary["written"], summary["reused_vectors"], embeddings.stats.inputs) == (1, 1, 0)
    assert tier.rows(collection_name, 'source == "s2"', ["owner"])[0]["owner"] == "bob"


# --- files by reference -----------------------------------------------------------------------------------


def write_files(root: Path, count: int) -> None:
    for i in range(count):
        path = root / ("nested" if i % 2 else "") / f"doc{i}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Doc {i}\n\n" + f"Sentence {i} about airflow and milvus. " * 20)
    (root / "notes.bin").write_bytes(b"\x00\x01")


@pytest.mark.parametrize("mode", MODES)
def test_files_are_read_by_reference_with_relative_sources(tier, collection_name, mode, tmp_path):
    write_files(tmp_path, 6)
    summary = ingest(
        tier, collection_name, None, mode, source_url=str(tmp_path), source_glob="**/*.md", delete_missing=True
    )
    sources = {r["source"] for r in tier.rows(collection_name, 'pk != ""', ["source"])}
    assert sources == {"doc0.md", "nested/doc1.md", "doc2.md", "nested/doc3.md", "doc4.md", "nested/doc5.md"}
    (tmp_path / "doc4.md").unlink()
    again = ingest(
        tier, collection_name, None, mode, source_url=f"file://{tmp_path}", source_glob="**/*.md", delete_missing=True
    )
    assert (again["written"], again["vanished_sources"]) == (0, 1)
    assert summary["chunks"] - again["chunks"] == again["vanished_deleted"]


def test_a_missing_source_url_names_the_path(tier, collection_name, tmp_path):
    with pytest.raises(MilvusProviderError, match=f"source_url '{tmp_path}/nope' does not exist"):
        ingest(tier, collection_name, None, source_url=str(tmp_path / "nope"))


def test_an_undecodable_file_is_named_and_nothing_is_written(tier, collection_name, tmp_path):
    write_files(tmp_path, 2)
    (tmp_path / "latin1.md").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(MilvusProviderError, match=r"latin1\.md' is not valid utf-8 text"):
        ingest(tier, collection_name, None, source_url=str(tmp_path), source_glob="*.md")
    assert not tier.client.has_collection(collection_name)


def test_documents_and_source_url_together_are_refused(tier, collection_name, tmp_path):
    with pytest.raises(MilvusProviderError, match="not both"):
        ingest(tier, collection_name, ["x"], source_url=str(tmp_path))


def test_two_tenants_writing_the_same_documents_keep_their_own_rows(tier, collection_name):
    tenants = dict(new_collection={"partition_key_field": "tenant"})
    acme = ingest(tier, collection_name, corpus(4), partition_key_value="acme", **tenants)
    globex = ingest(tier, collection_name, corpus(4), partition_key_value="globex", **tenants)
    assert globex["written"] == acme["written"] == acme["chunks"]
    assert tier.count(collection_name, 'tenant == "acme"') == acme["chunks"]
    assert tier.count(collection_name, 'tenant == "globex"') == globex["chunks"]
