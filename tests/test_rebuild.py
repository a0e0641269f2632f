"""Rebuild behind an alias on Milvus Lite: versions, an atomic switch under search load, rollback, reuse of vectors.

The bodies take a connection id and a pymilvus client, so tests/standalone/test_rebuild_on_a_server.py runs
the same specifications on a real Milvus 2.3.5. Embeddings come over loopback HTTP from the test server,
which counts the texts it embeds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
)
from airflow_provider_milvus.operators.rebuild import MilvusRebuildCollectionOperator, MilvusRollbackAliasOperator

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS
from tests.test_operators import run

EMBEDDINGS = "embeddings_test"


def corpus(files: int = 8, paragraphs: int = 4) -> list[dict[str, Any]]:
    """Even files are one short paragraph (one chunk at any chunk size here), odd ones several."""
    docs = []
    for f in range(files):
        body = "\n\n".join(
            f"File {f} paragraph {p}: " + " ".join(f"w{(f * 7 + p * 3 + i) % 97}" for i in range(12))
            for p in range(1 if f % 2 == 0 else paragraphs)
        )
        docs.append({"page_content": body, "metadata": {"source": f"docs/file{f:02d}.md"}})
    return docs


def rebuild(conn_id: str, alias: str, mode: str = "inline", **kwargs: Any) -> dict[str, Any]:
    options: dict[str, Any] = dict(
        documents=corpus(), chunk_size=200, replace_by="source", embedding_conn_id=EMBEDDINGS, batch_size=16
    )
    options.update(kwargs)
    operator = MilvusRebuildCollectionOperator(
        task_id="rebuild", milvus_conn_id=conn_id, collection_name=alias, **options
    )
    return run(operator, mode)


def rollback(conn_id: str, alias: str, mode: str = "inline", **kwargs: Any) -> dict[str, Any]:
    return run(
        MilvusRollbackAliasOperator(task_id="rollback", milvus_conn_id=conn_id, collection_name=alias, **kwargs), mode
    )


def target(client: Any, alias: str) -> str:
    return client.describe_alias(alias)["collection_name"]


def pks(client: Any, collection: str) -> set[str]:
    rows = client.query(collection, filter='pk != ""', output_fields=["pk"], limit=16384, consistency_level="Strong")
    return {r["pk"] for r in rows}


def versions(client: Any, alias: str) -> list[str]:
    return sorted(n for n in client.list_collections() if n.startswith(f"{alias}_v"))


@dataclass
class SearchLoop:
    """Searches the alias ~20 times a second from a thread with its own client; records every outcome."""

    uri: str
    alias: str
    results: list[tuple[float, set[str]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    empty: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> SearchLoop:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        from pymilvus import MilvusClient

        client = MilvusClient(uri=self.uri)
        vector = embed_text("File 3 paragraph 1: w24 w25", EMBEDDING_DIMENSIONS)
        try:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    hits = client.search(self.alias, data=[vector], limit=3, output_fields=["pk"])[0]
                    if not hits:
                        self.empty += 1
                    self.results.append((began, {hit.get("pk", hit.get("id")) for hit in hits}))
                except Exception as error:
                    self.failures.append(f"{type(error).__name__}: {error}"[:300])
                self._stop.wait(max(0.0, 0.05 - (time.monotonic() - began)))
        finally:
            client.close()

    def since(self, moment: float) -> list[set[str]]:
        return [hits for began, hits in self.results if began >= moment]


# --- the specifications, run on each server ------------------------------------------------------------------


def check_switch_under_search_load(conn_id: str, client: Any, uri: str, alias: str, embeddings: Any) -> None:
    first = rebuild(conn_id, alias, chunk_size=200)
    assert first["collection"] == f"{alias}_v1"
    assert first["previous"] is None
    assert target(client, alias) == f"{alias}_v1"
    old = pks(client, f"{alias}_v1")
    with SearchLoop(uri, alias) as loop:
        time.sleep(0.5)
        embedded_before = embeddings.stats.inputs
        second = rebuild(conn_id, alias, chunk_size=120, sample_queries=["paragraph about w24"], min_count=10)
        switched = time.monotonic()
        time.sleep(0.5)
        new = pks(client, f"{alias}_v2")
        back = rollback(conn_id, alias)
        rolled_back = time.monotonic()
        time.sleep(0.5)
    assert loop.failures == []
    assert loop.empty == 0
    assert len(loop.results) >= 20
    assert second["collection"] == f"{alias}_v2"
    assert second["previous"] == f"{alias}_v1"
    assert second["rows"] == len(new)
    assert new != old
    after_switch = [hits for began, hits in loop.results if switched <= began < rolled_back - 0.3]
    assert after_switch
    assert all(hits <= new for hits in after_switch)
    assert back == {"operation": "rollback", "alias": alias, "collection": f"{alias}_v1", "previous": f"{alias}_v2"}
    assert target(client, alias) == f"{alias}_v1"
    assert loop.since(rolled_back)
    assert all(hits <= old for hits in loop.since(rolled_back))
    # Same model, other chunking: the embedding server saw only texts v1 did not hold (+ the new collection's
    # dimension probe and the sample query).
    write = second["write"]
    assert write["known_vectors"] == 4  # the four one-paragraph files: same chunk text at both sizes
    assert second["embedded"] + write["known_vectors"] == write["chunks"]
    assert embeddings.stats.inputs - embedded_before == second["embedded"] + 2


def check_failed_validation_keeps_the_alias(conn_id: str, client: Any, alias: str) -> None:
    rebuild(conn_id, alias)
    with pytest.raises(
        MilvusProviderError,
        match=rf"fewer than min_count=100000\. .*'{alias}' still points at '{alias}_v1'; the half-built",
    ):
        rebuild(conn_id, alias, chunk_size=120, min_count=100000)
    assert target(client, alias) == f"{alias}_v1"
    assert versions(client, alias) == [f"{alias}_v1", f"{alias}_v1__sources"]


def check_model_change_embeds_everything(conn_id: str, client: Any, alias: str, embeddings: Any) -> None:
    rebuild(conn_id, alias)
    embeddings.reset_stats()
    summary = rebuild(conn_id, alias, mode="deferred", embedding_model="another-embedding")
    assert summary["known_vectors"] == 0
    assert summary["embedded"] == summary["rows"] == summary["write"]["chunks"]
    assert embeddings.stats.inputs == summary["rows"] + 1  # + the dimension probe of the new collection
    assert target(client, alias) == f"{alias}_v2"


def check_operators_follow_the_alias(conn_id: str, client: Any, alias: str) -> None:
    rebuild(conn_id, alias)
    rebuild(conn_id, alias, chunk_size=120)
    live = f"{alias}_v2"
    added = run(
        MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=conn_id,
            collection_name=alias,
            documents=[{"page_content": "A new file about w5 and w6.", "metadata": {"source": "docs/new.md"}}],
            chunk_size=120,
            replace_by="source",
            embedding_conn_id=EMBEDDINGS,
        ),
        "inline",
    )
    assert added["written"] == 1
    assert client.has_collection(f"{live}__sources")
    assert not client.has_collection(f"{alias}__sources")
    ledger = client.query(f"{live}__sources", filter='id != ""', output_fields=["source"], consistency_level="Strong")
    assert [row["source"] for row in ledger if "docs/new.md" in row["source"]]
    hits = run(
        MilvusSearchToXComOperator(
            task_id="search",
            milvus_conn_id=conn_id,
            collection_name=alias,
            queries=["A new file about w5 and w6."],
            k=1,
            embedding_conn_id=EMBEDDINGS,
        ),
        "inline",
    )
    assert hits[0][0]["metadata"]["source"] == "docs/new.md"
    deleted = run(
        MilvusDeleteByExprOperator(
            task_id="delete", milvus_conn_id=conn_id, collection_name=alias, expr='source == "docs/new.md"'
        ),
        "inline",
    )
    assert deleted["deleted"] == 1
    assert client.query(live, filter='source == "docs/new.md"', output_fields=["pk"], consistency_level="Strong") == []
    assert len(pks(client, f"{alias}_v1")) == rebuild_rows(client, f"{alias}_v1")


def rebuild_rows(client: Any, collection: str) -> int:
    return int(
        client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]
    )


# --- Milvus Lite -----------------------------------------------------------------------------------------------


@pytest.fixture
def lite(milvus_conn_id: str, milvus_client: Any, milvus_lite: Any, embedding_conn_id: str) -> tuple[str, Any, str]:
    assert embedding_conn_id == EMBEDDINGS
    return milvus_conn_id, milvus_client, milvus_lite.uri


def test_searches_of_the_alias_never_fail_or_come_back_empty_through_a_rebuild_and_a_rollback(
    lite, collection_name, embeddings
):
    conn_id, client, uri = lite
    check_switch_under_search_load(conn_id, client, uri, collection_name, embeddings)


def test_a_rebuild_that_fails_validation_leaves_the_alias_and_no_half_built_version(lite, collection_name):
    conn_id, client, _ = lite
    check_failed_validation_keeps_the_alias(conn_id, client, collection_name)


def test_a_new_model_embeds_every_chunk_again(lite, collection_name, embeddings):
    conn_id, client, _ = lite
    check_model_change_embeds_everything(conn_id, client, collection_name, embeddings)


def test_writes_searches_deletes_and_the_source_ledger_follow_the_alias(lite, collection_name):
    conn_id, client, _ = lite
    check_operators_follow_the_alias(conn_id, client, collection_name)


def test_older_versions_beyond_keep_versions_are_dropped_with_their_ledgers(lite, collection_name):
    conn_id, client, _ = lite
    for size in (200, 150, 120):
        summary = rebuild(conn_id, collection_name, chunk_size=size, keep_versions=1)
    assert summary["dropped"] == [f"{collection_name}_v1"]
    assert versions(client, collection_name) == [
        f"{collection_name}_v2",
        f"{collection_name}_v2__sources",
        f"{collection_name}_v3",
        f"{collection_name}_v3__sources",
    ]


def test_a_plain_collection_is_refused_with_the_migration_steps_and_nothing_is_created(lite, collection_name):
    conn_id, client, _ = lite
    run(
        MilvusAddDocumentsOperator(
            task_id="add",
            milvus_conn_id=conn_id,
            collection_name=collection_name,
            documents=corpus(2),
            embedding_conn_id=EMBEDDINGS,
        ),
        "inline",
    )
    with pytest.raises(MilvusProviderError, match=rf"'{collection_name}' is a plain collection, not an alias.*"):
        rebuild(conn_id, collection_name)
    assert versions(client, collection_name) == []


def test_bad_input_is_refused_before_any_version_or_alias_exists(lite, collection_name):
    conn_id, client, _ = lite
    documents = [*corpus(2), {"page_content": "no source here", "metadata": {}}]
    with pytest.raises(MilvusProviderError, match=r"has no metadata 'source' \(replace_by\).*was never created"):
        rebuild(conn_id, collection_name, documents=documents)
    assert versions(client, collection_name) == []
    assert not client.has_collection(collection_name)


def test_rollback_without_an_earlier_version_says_so(lite, collection_name):
    conn_id, client, _ = lite
    rebuild(conn_id, collection_name)
    with pytest.raises(MilvusProviderError, match=r"no earlier validated version is kept"):
        rollback(conn_id, collection_name)
    assert target(client, collection_name) == f"{collection_name}_v1"


def test_a_cancelled_rebuild_leaves_the_alias_and_drops_the_half_built_version(lite, collection_name, embeddings):
    import asyncio

    from airflow_provider_milvus.core.jobs import RebuildJob, StoreConfig
    from airflow_provider_milvus.core.rebuild import run_rebuild

    conn_id, client, _ = lite
    rebuild(conn_id, collection_name)
    store = StoreConfig(milvus_conn_id=conn_id, collection_name=collection_name, embedding_conn_id=EMBEDDINGS)
    job = RebuildJob(
        store=store, documents=corpus(), chunk_size=120, replace_by="source", batch_size=4, max_concurrency=1
    )
    embeddings.latency = 0.3  # one request at a time, each taking a while (5 x 0.3 s): the cancel lands mid-write

    async def cancel_mid_write() -> None:
        task = asyncio.create_task(run_rebuild(job))
        for _ in range(600):  # until the new version exists (the write is under way), at most 30 s
            if client.has_collection(f"{collection_name}_v2"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_mid_write())
    assert target(client, collection_name) == f"{collection_name}_v1"
    assert versions(client, collection_name) == [f"{collection_name}_v1", f"{collection_name}_v1__sources"]


def test_a_sample_query_without_hits_fails_the_rebuild_before_the_switch(lite, collection_name):
    conn_id, client, _ = lite  # BM25 (no embedding connection): a word no chunk holds finds nothing
    rebuild(conn_id, collection_name, embedding_conn_id=None, sample_queries=["w24"])
    with pytest.raises(MilvusProviderError, match=r"1 of 2 sample queries found nothing: \['zzzunknownword'\]"):
        rebuild(conn_id, collection_name, embedding_conn_id=None, sample_queries=["w24", "zzzunknownword"])
    assert target(client, collection_name) == f"{collection_name}_v1"
    assert not client.has_collection(f"{collection_name}_v2")
