"""Sharded ingest: mapped shards of one listing write disjoint sources; one unsharded run removes vanished ones.

Milvus Lite (BM25, no embedding model), a local folder; the example DAG through real Airflow (`dags test`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.test_operators import run

REPO = Path(__file__).resolve().parents[1]
SHARDS = 4


def write_corpus(root: Path, files: int = 24) -> None:
    for i in range(files):
        path = root / f"dir{i % 3}" / f"doc{i:02d}.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# Document {i}\n\n" + f"Paragraph about shard planning number {i}. " * 8)


def write(folder: Path, conn_id: str, collection: str, **kwargs):
    options = dict(
        task_id="write",
        milvus_conn_id=conn_id,
        collection_name=collection,
        source_url=str(folder),
        chunk_size=200,
        replace_by="source",
    )
    return run(MilvusAddDocumentsOperator(**options, **kwargs), "inline")


def stored(milvus_client, collection: str) -> dict[str, int]:
    rows = milvus_client.query(collection, filter='pk != ""', output_fields=["pk", "source"], limit=16384)
    assert len({r["pk"] for r in rows}) == len(rows)
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["source"]] = counts.get(row["source"], 0) + 1
    return counts


def files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*.md")}


@pytest.fixture
def corpus(tmp_path) -> Path:
    write_corpus(tmp_path)
    return tmp_path


def test_shards_then_one_cleanup_equal_the_corpus(corpus, milvus_conn_id, collection_name, milvus_client):
    written = [
        write(corpus, milvus_conn_id, collection_name, shard_index=i, shard_count=SHARDS)["documents"]
        for i in range(SHARDS)
    ]
    assert sum(written) == 24  # disjoint shards
    assert all(written)  # none empty
    assert set(stored(milvus_client, collection_name)) == files(corpus)
    for gone in ("dir0/doc00.md", "dir1/doc07.md", "dir2/doc23.md"):  # in several shards
        (corpus / gone).unlink()
    (corpus / "dir0" / "new.md").write_text("A file added after the first night.")
    for i in range(SHARDS):
        write(corpus, milvus_conn_id, collection_name, shard_index=i, shard_count=SHARDS)
    cleanup = write(corpus, milvus_conn_id, collection_name, delete_missing=True)
    assert (cleanup["vanished_sources"], cleanup["written"], cleanup["skipped_sources"]) == (3, 0, 22)
    assert set(stored(milvus_client, collection_name)) == files(corpus)


def test_a_shard_never_deletes_other_shards_sources(corpus, milvus_conn_id, collection_name, milvus_client):
    with pytest.raises(ValueError, match="delete_missing=True on a shard would delete the sources of every other"):
        MilvusAddDocumentsOperator(
            task_id="w",
            collection_name=collection_name,
            source_url=str(corpus),
            replace_by="source",
            delete_missing=True,
            shard_index=0,
            shard_count=SHARDS,
        )
    for i in range(SHARDS):
        write(corpus, milvus_conn_id, collection_name, shard_index=i, shard_count=SHARDS)
    before = stored(milvus_client, collection_name)
    (corpus / "dir0" / "doc03.md").unlink()
    write(corpus, milvus_conn_id, collection_name, shard_index=1, shard_count=SHARDS)
    assert stored(milvus_client, collection_name) == before  # only the cleanup step removes a vanished file


def test_a_retried_shard_writes_nothing_twice(corpus, milvus_conn_id, collection_name, milvus_client):
    first = write(corpus, milvus_conn_id, collection_name, shard_index=2, shard_count=SHARDS)
    rows = stored(milvus_client, collection_name)
    retried = write(corpus, milvus_conn_id, collection_name, shard_index=2, shard_count=SHARDS)
    assert stored(milvus_client, collection_name) == rows
    assert (retried["written"], retried["skipped_sources"]) == (0, first["documents"])


@pytest.mark.slow  # ~100 s: a fresh Airflow home and two DAG runs of six tasks
def test_the_sharded_example_dag_equals_the_corpus_after_each_run(airflow, corpus, collection_name, milvus_client):
    conf = {"corpus_dir": str(corpus), "collection": collection_name, "shards": SHARDS}
    airflow.run("dags", "test", "milvus_sharded_ingest", "2026-01-01", "-c", json.dumps(conf))
    assert set(stored(milvus_client, collection_name)) == files(corpus)
    (corpus / "dir1" / "doc04.md").unlink()
    (corpus / "dir2" / "doc05.md").unlink()
    airflow.run("dags", "test", "milvus_sharded_ingest", "2026-01-02", "-c", json.dumps(conf))
    assert set(stored(milvus_client, collection_name)) == files(corpus)
