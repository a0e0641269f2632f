"""The source ledger: unchanged sources skipped whole, and never trusted past what the collection holds.

On Milvus Lite and a real Milvus standalone, with dense embeddings over loopback HTTP. The collection
is changed behind the ledger's back with pymilvus (rows deleted, rows added by another application,
the collection dropped) to show each case falls back to comparing chunks, and a failed run leaves no
entry that could hide its half-written sources.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_milvus.core.ledger import ledger_name
from airflow_provider_milvus.exceptions import MilvusProviderError

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS, Tier, milvus_connection_json
from tests.test_incremental_ingest import corpus, ingest, pks
from tests.test_operators import MODES

FILES = 12


@pytest.fixture(autouse=True)
def _embedding_connection(embedding_conn_id):
    """``ingest`` embeds through the loopback server's connection."""


def ledger(tier, collection) -> dict[str, dict]:
    rows = tier.rows(ledger_name(collection), 'id != ""', ["source", "digest", "chunks", "scope"])
    return {json.loads(r["source"]): r for r in rows}


def source_pks(tier, collection, source: str) -> list[str]:
    return [r["pk"] for r in tier.rows(collection, f'source == "{source}"', ["pk"])]


@pytest.mark.parametrize("mode", MODES)
def test_an_unchanged_rerun_skips_every_source_without_reading_its_chunks(tier, collection_name, mode, embeddings):
    first = ingest(tier, collection_name, corpus(FILES), mode)
    shuffled = corpus(FILES)
    random.Random(5).shuffle(shuffled)
    embeddings.reset_stats()
    again = ingest(tier, collection_name, shuffled, mode)
    assert again["skipped_sources"] == FILES
    assert again["round_trips"]["lookup"] == 0, "skipped sources must not be read back"
    assert (again["written"], again["unchanged"], again["chunks"]) == (0, first["chunks"], first["chunks"])
    assert embeddings.stats.inputs == 0
    entries = ledger(tier, collection_name)
    assert sorted(entries) == sorted(d["metadata"]["source"] for d in corpus(FILES))
    assert sum(e["chunks"] for e in entries.values()) == tier.count(collection_name) == first["chunks"]


def test_a_first_run_creates_its_ledger_while_its_chunks_are_still_being_embedded(tier, collection_name, embeddings):
    """Creating a collection takes seconds on a real server: beside the embedding requests, not after the last."""
    embeddings.latency = 2.0
    answered_when_it_appeared: list[int] = []

    def watch() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if tier.client.has_collection(ledger_name(collection_name)):
                answered_when_it_appeared.append(embeddings.stats.requests - embeddings.stats.in_flight)
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    first = ingest(tier, collection_name, corpus(2), batch_size=1000)  # the chunks in one embedding request
    watcher.join()
    assert first["written"] == tier.count(collection_name) > 0
    assert len(answered_when_it_appeared) == 1, "the ledger never appeared"
    assert answered_when_it_appeared[0] < embeddings.stats.requests


def test_a_write_that_changed_rows_leaves_them_flushed_on_milvus_lite_and_an_unchanged_run_flushes_nothing(
    tier, collection_name, milvus_lite
):
    first = ingest(tier, collection_name, corpus(FILES))
    again = ingest(tier, collection_name, corpus(FILES))
    assert first["round_trips"].get("flush", 0) == (0 if tier.real_server else 2), "the collection and its ledger"
    assert again["round_trips"].get("flush", 0) == 0
    if not tier.real_server:  # Lite keeps unflushed rows in a write-ahead log, flushed ones in segment files
        for name in (collection_name, ledger_name(collection_name)):
            folder = Path(milvus_lite.data_dir) / "collections" / name
            assert list(folder.glob("partitions/*/data/*.parquet")), name
            assert not list(folder.glob("wal/wal_data_*")), name


def test_a_long_write_on_milvus_lite_flushes_as_it_goes_not_only_at_the_end(milvus_lite, collection_name, monkeypatch):
    from airflow_provider_milvus.core import session

    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_EXISTING", milvus_connection_json(milvus_lite.uri))
    monkeypatch.setattr(session, "FLUSH_EVERY_ROWS", 10)
    tier = Tier("lite", "milvus_existing", None)
    summary = ingest(tier, collection_name, corpus(FILES), batch_size=5)
    # once 10 rows have gathered (a write may carry several embedding batches), then the tail and the ledger
    assert 1 <= summary["round_trips"]["flush"] - 2 <= summary["written"] // 10


def test_rows_deleted_behind_the_ledgers_back_are_written_again(tier, collection_name, embeddings):
    first = ingest(tier, collection_name, corpus(FILES))
    lost = source_pks(tier, collection_name, "docs/file0003.md")[:2]
    tier.client.delete(collection_name, ids=lost)
    embeddings.reset_stats()
    again = ingest(tier, collection_name, corpus(FILES))
    assert (again["written"], embeddings.stats.inputs) == (2, 2)
    assert sorted(pks(tier, collection_name)) == sorted(set(pks(tier, collection_name)))
    assert tier.count(collection_name) == first["chunks"]


def test_another_applications_rows_keep_the_ledger_usable_and_go_only_with_delete_missing(tier, collection_name):
    first = ingest(tier, collection_name, corpus(FILES))
    text = "a row another application wrote"
    foreign = {"pk": "other-1", "text": text, "vector": embed_text(text, EMBEDDING_DIMENSIONS), "source": "app/x"}
    tier.client.insert(collection_name, [foreign])
    kept = ingest(tier, collection_name, corpus(FILES))
    assert kept["skipped_sources"] == FILES, "the ledger's sources still count right: skip them"
    assert tier.count(collection_name) == first["chunks"] + 1
    synced = ingest(tier, collection_name, corpus(FILES), delete_missing=True)
    assert (synced["vanished_sources"], synced["vanished_deleted"]) == (1, 1)
    assert tier.count(collection_name) == first["chunks"]
    assert ingest(tier, collection_name, corpus(FILES), delete_missing=True)["skipped_sources"] == FILES


def test_a_failed_run_leaves_no_entry_for_the_sources_it_was_rewriting(tier, collection_name, embeddings):
    ingest(tier, collection_name, corpus(FILES))
    before = ledger(tier, collection_name)
    edited = corpus(FILES, edited={2: "A new first paragraph for file two."})
    embeddings.inject(400, count=1000)
    with pytest.raises(MilvusProviderError):
        ingest(tier, collection_name, edited)
    after = ledger(tier, collection_name)
    assert "docs/file0002.md" not in after
    assert {s: e["digest"] for s, e in after.items()} == {
        s: e["digest"] for s, e in before.items() if s != "docs/file0002.md"
    }
    embeddings.reset_stats()
    healed = ingest(tier, collection_name, edited)
    assert healed["skipped_sources"] == FILES - 1
    assert healed["written"] >= 1
    assert ledger(tier, collection_name)["docs/file0002.md"]["digest"] != before["docs/file0002.md"]["digest"]


def test_a_dropped_and_recreated_collection_is_written_in_full_and_the_ledger_rebuilt(tier, collection_name):
    first = ingest(tier, collection_name, corpus(FILES))
    tier.client.drop_collection(collection_name)
    again = ingest(tier, collection_name, corpus(FILES)[:6])
    assert again["written"] == tier.count(collection_name) > 0
    assert len(ledger(tier, collection_name)) == 6, "entries of the dropped collection must go"
    assert ingest(tier, collection_name, corpus(FILES))["skipped_sources"] == 6
    assert tier.count(collection_name) == first["chunks"]


def test_entries_another_writer_records_while_this_one_creates_the_collection_are_kept(
    tier, collection_name, monkeypatch
):
    """
    Shards of one new collection start together: one creates it, another finds it made and may record its
    entries before the creator has opened it. The creator forgets an earlier collection's entries before
    creating, never after (when it removed the other shard's entries, the cleanup read those files again).
    """
    import threading

    from airflow_provider_milvus.core import session

    docs = corpus(8)
    opened = session.Connection.open
    other: list[dict] = []

    async def open_after_the_other_writer(self, *, write, metrics, created=False):
        if created and not other:  # the collection exists now: the other writer runs whole, then this one goes on
            writer = threading.Thread(target=lambda: other.append(ingest(tier, collection_name, docs[4:])))
            writer.start()
            writer.join()
        return await opened(self, write=write, metrics=metrics, created=created)

    monkeypatch.setattr(session.Connection, "open", open_after_the_other_writer)
    ingest(tier, collection_name, docs[:4])
    monkeypatch.setattr(session.Connection, "open", opened)
    assert other, "the other writer did not run"
    assert other[0]["written"] > 0
    assert sorted(ledger(tier, collection_name)) == sorted(d["metadata"]["source"] for d in docs)
    assert ingest(tier, collection_name, docs)["skipped_sources"] == 8


def test_each_tenant_has_its_own_entries(tier, collection_name):
    tenants = dict(new_collection={"partition_key_field": "tenant"})
    ingest(tier, collection_name, corpus(4), partition_key_value="acme", **tenants)
    other = ingest(tier, collection_name, corpus(4), partition_key_value="globex", **tenants)
    assert other["skipped_sources"] == 0
    assert other["written"] == other["chunks"] > 0
    again = ingest(tier, collection_name, corpus(4), partition_key_value="globex", **tenants)
    assert again["skipped_sources"] == 4
    scopes = [r["scope"] for r in tier.rows(ledger_name(collection_name), 'id != ""', ["scope"])]
    assert sorted(scopes) == ["acme"] * 4 + ["globex"] * 4


def test_changed_split_options_rewrite_every_source(tier, collection_name):
    ingest(tier, collection_name, corpus(FILES), chunk_size=200)
    resplit = ingest(tier, collection_name, corpus(FILES), chunk_size=300)
    assert resplit["skipped_sources"] == 0
    assert resplit["stale_deleted"] > 0
    assert tier.count(collection_name) == resplit["chunks"]


def test_track_sources_off_keeps_no_ledger_and_compares_chunks(tier, collection_name):
    first = ingest(tier, collection_name, corpus(FILES), track_sources=False)
    again = ingest(tier, collection_name, corpus(FILES), track_sources=False)
    assert not tier.client.has_collection(ledger_name(collection_name))
    assert (again["skipped_sources"], again["unchanged"], again["written"]) == (0, first["chunks"], 0)
    assert again["round_trips"]["lookup"] >= 1


MANY = 2500  # sources: the audit costs the same two requests; a lost row makes the ledger scan the scope


def test_many_sources_an_unchanged_run_reads_the_ledger_and_the_scope_once_and_a_lost_row_is_rewritten(
    tier, collection_name, embeddings
):
    if tier.real_server:
        pytest.skip("the ledger's requests are the same on both servers; 2,500 sources are written once, on Lite")
    documents = [
        {"page_content": f"source {i} says w{i}", "metadata": {"source": f"s/{i:05d}.md"}} for i in range(MANY)
    ]
    first = ingest(tier, collection_name, documents, batch_size=500)
    assert first["written"] == MANY
    unchanged = ingest(tier, collection_name, documents, batch_size=500)
    # One read of the ledger and the audit (count(*) of the scope, its rows that are not exactly tracked); no row read.
    assert {phase: n for phase, n in unchanged["round_trips"].items() if n} == {"ledger": 3}
    assert (unchanged["skipped_sources"], unchanged["written"]) == (MANY, 0)

    tier.client.delete(collection_name, ids=source_pks(tier, collection_name, "s/01700.md"))
    embeddings.reset_stats()
    repaired = ingest(tier, collection_name, documents, batch_size=500)
    assert (repaired["skipped_sources"], repaired["written"], embeddings.stats.inputs) == (MANY - 1, 1, 1)
    assert tier.count(collection_name) == MANY
