"""Decide from the listing: an unchanged object of ``source_url`` is not read at all; a changed or new one is.

Object storage is moto's S3 server on loopback; every request it answers is in its log, so the GETs counted
here are the ones the server saw. Milvus Lite, dense embeddings over loopback HTTP.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_milvus.core.files import list_sources
from airflow_provider_milvus.core.inline import run_in_worker
from airflow_provider_milvus.core.ledger import Ledger
from airflow_provider_milvus.core.listing import list_with_ledger
from airflow_provider_milvus.core.operations import run_job
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from testing.servers.s3_server import S3Server
from tests.test_operators import run

BUCKET = "corpus"
CONN = "corpus_s3"


class CountingS3:
    """moto's server plus the requests it answered since the last ``mark()`` (from its request log)."""

    def __init__(self, server: S3Server, log: Path) -> None:
        self.server = server
        self.log = log
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.log.stat().st_size

    def requests(self) -> list[str]:
        with self.log.open("rb") as handle:
            handle.seek(self.offset)
            text = handle.read().decode(errors="replace")
        return re.findall(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+ \S+) HTTP/1\.1', text)

    def gets(self, prefix: str) -> list[str]:
        """Object GETs (bodies read) under ``prefix``: not listings (``?list-type=2``)."""
        return sorted(
            r[len(f"GET /{BUCKET}/{prefix}/") :]
            for r in self.requests()
            if r.startswith(f"GET /{BUCKET}/{prefix}/") and "?" not in r
        )

    def lists(self) -> int:
        return sum(1 for r in self.requests() if r.startswith(f"GET /{BUCKET}?list-type=2"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CountingS3]:
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with S3Server(log_path=log) as server:
        server.create_bucket(BUCKET)
        yield CountingS3(server, log)


@pytest.fixture
def prefix(s3: CountingS3, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN.upper()}", s3.server.connection_json())
    return f"p{uuid.uuid4().hex[:8]}"


def body(i: int, version: int = 0) -> bytes:
    return f"Document {i} version {version}: ".encode() + b"about airflow and milvus. " * 12


def put(s3: CountingS3, prefix: str, i: int, version: int = 0) -> None:
    s3.server.put(BUCKET, f"{prefix}/doc{i:03d}.md", body(i, version))


def ingest(s3: CountingS3, prefix: str, milvus_conn_id: str, embedding_conn_id: str, collection: str, **kwargs):
    options = dict(chunk_size=200, replace_by="source", delete_missing=True, batch_size=50)
    options.update(kwargs)
    mode = options.pop("mode", "inline")
    s3.mark()
    return run(
        MilvusAddDocumentsOperator(
            task_id="ingest",
            milvus_conn_id=milvus_conn_id,
            embedding_conn_id=embedding_conn_id,
            collection_name=collection,
            source_url=f"s3://{BUCKET}/{prefix}",
            source_conn_id=CONN,
            **options,
        ),
        mode,
    )


def sources(milvus_client, collection: str) -> dict[str, str]:
    rows = milvus_client.query(collection, filter='pk != ""', output_fields=["source", "text"], limit=16384)
    found: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r["pk"]):
        found[row["source"]] = found.get(row["source"], "") + row["text"]
    return found


def local_ingest(folder: Path, milvus_conn_id: str, embedding_conn_id: str, collection: str, **kwargs):
    """The operator over a local folder (not run)."""
    return MilvusAddDocumentsOperator(
        task_id="ingest",
        milvus_conn_id=milvus_conn_id,
        embedding_conn_id=embedding_conn_id,
        collection_name=collection,
        source_url=str(folder),
        replace_by="source",
        **kwargs,
    )


@pytest.fixture
def corpus(s3: CountingS3, prefix: str) -> str:
    for i in range(6):
        put(s3, prefix, i)
    return prefix


@pytest.mark.parametrize("mode", ["inline", "deferred"])
def test_an_unchanged_rerun_reads_no_object(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, mode):
    first = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, mode=mode)
    assert len(s3.gets(corpus)) == 6
    assert first["written"] == first["chunks"]
    again = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, mode=mode)
    assert s3.gets(corpus) == []
    assert (again["written"], again["embedded"], again["skipped_sources"]) == (0, 0, 6)


def test_changed_and_new_objects_alone_are_read_and_vanished_ones_deleted(
    s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    put(s3, corpus, 2, version=1)
    put(s3, corpus, 9)
    s3.server.client().delete_object(Bucket=BUCKET, Key=f"{corpus}/doc004.md")
    summary = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    assert s3.gets(corpus) == ["doc002.md", "doc009.md"]
    assert summary["vanished_sources"] == 1
    stored = sources(milvus_client, collection_name)
    assert sorted(stored) == [f"doc{i:03d}.md" for i in (0, 1, 2, 3, 5, 9)]
    assert "version 1" in stored["doc002.md"]


def test_changed_split_options_read_every_object_again(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name):
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    summary = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, chunk_size=120)
    assert len(s3.gets(corpus)) == 6
    assert summary["skipped_sources"] == 0
    assert summary["written"] > 0


def test_a_source_whose_rows_were_lost_is_read_again(
    s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    first = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    milvus_client.delete(collection_name, filter='source == "doc003.md"')
    summary = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    assert s3.gets(corpus) == ["doc003.md"]
    assert (
        milvus_client.query(collection_name, filter='pk != ""', output_fields=["count(*)"])[0]["count(*)"]
        == first["chunks"]
    )
    assert summary["skipped_sources"] == 5


def test_a_ledger_without_listing_rows_reads_each_object_once(
    s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    # A ledger made by the previous release: entries, no listing rows.
    milvus_client.delete(f"{collection_name}__sources", filter='key == "source#listing"')
    upgraded = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    assert len(s3.gets(corpus)) == 6
    assert (upgraded["written"], upgraded["skipped_sources"]) == (0, 6)
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    assert s3.gets(corpus) == []


def test_content_change_detection_reads_every_object(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name):
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    summary = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name, change_detection="content")
    assert len(s3.gets(corpus)) == 6
    assert summary["written"] == 0


def test_listing_reads_one_list_pass_and_no_object_head(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name):
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    assert [r for r in s3.requests() if r.startswith(f"HEAD /{BUCKET}/{corpus}/")] == []  # no HEAD per object
    assert s3.lists() <= 2  # the root's existence check, then one recursive listing (1,000 objects a page)


def test_an_unread_source_its_ledger_entry_no_longer_vouches_for_is_read_by_the_write_core(
    s3, corpus, tier, embedding_conn_id, collection_name
):
    milvus_conn_id = tier.conn_id
    first = ingest(s3, corpus, milvus_conn_id, embedding_conn_id, collection_name)
    put(s3, corpus, 1, version=1)  # changed since a (hypothetical) listing that still called it unchanged
    job = {
        "store": {
            "milvus_conn_id": milvus_conn_id,
            "collection_name": collection_name,
            "embedding_conn_id": embedding_conn_id,
        },
        "documents": [
            {
                "page_content": "",
                "metadata": {"source": "doc001.md"},
                "unread": "0" * 64,  # not the digest of its stored rows: its entry fails verification
                "path": f"s3://{BUCKET}/{corpus}/doc001.md",
            },
            {"page_content": "new text", "metadata": {"source": "new.md"}},
        ],
        "chunk_size": 200,
        "replace_by": "source",
        "source_conn_id": CONN,
    }
    s3.mark()
    summary = asyncio.run(run_job("write", job))
    assert s3.gets(corpus) == ["doc001.md"]  # read by the core, alone
    assert summary["written"] > 0
    stored = sources(tier.client, collection_name)
    assert "Document 1 version 1" in stored["doc001.md"]
    assert "version 0" not in stored["doc001.md"]  # its old rows were replaced, not kept beside the new ones
    assert stored["new.md"] == "new text"
    assert tier.count(collection_name) == first["chunks"] + 1  # same chunk count for doc001, one for new.md


def test_local_files_are_decided_by_size_and_mtime_unless_content_is_asked(
    tmp_path, milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    import os

    for i in range(4):
        (tmp_path / f"doc{i}.md").write_bytes(body(i))

    def ingest_folder(**kwargs):
        return run(local_ingest(tmp_path, milvus_conn_id, embedding_conn_id, collection_name, **kwargs), "inline")

    ingest_folder()
    # An edit that keeps the size and the modification time: the listing cannot see it.
    path = tmp_path / "doc1.md"
    before = path.stat()
    path.write_bytes(body(1).replace(b"Document", b"Dokument"))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    by_listing = ingest_folder()
    assert (by_listing["skipped_sources"], by_listing["written"]) == (4, 0)
    by_content = ingest_folder(change_detection="content")
    assert (by_content["skipped_sources"], by_content["written"]) == (3, 1)
    assert "Dokument 1" in sources(milvus_client, collection_name)["doc1.md"]
    # A touched file (new mtime, same body) is read, and its digest shows nothing changed.
    os.utime(tmp_path / "doc2.md")
    touched = ingest_folder()
    assert (touched["skipped_sources"], touched["written"]) == (4, 0)


def test_objects_in_subfolders_are_named_from_the_folder_and_read_back_by_their_url(s3, prefix):
    from airflow_provider_milvus.core.files import read_documents, read_unread
    from airflow_provider_milvus.core.listing import unread_documents

    names = ["a.md", "sub/b.md", "sub/deeper/c d#e.md"]
    bucket = f"whole-{prefix}"  # a bucket of its own, listed from its root too
    s3.server.create_bucket(bucket)
    for name in names:
        s3.server.put(BUCKET, f"{prefix}/{name}", f"body of {name}".encode())
        s3.server.put(bucket, name, f"body of {name}".encode())
    for url in (f"s3://{BUCKET}/{prefix}", f"s3://{BUCKET}/{prefix}/", f"s3://{bucket}", f"s3://{bucket}/"):
        listed = list_sources(url, conn_id=CONN)
        assert [item.source for item in listed] == names
        assert [d["page_content"] for d in read_documents(listed)] == [f"body of {name}" for name in names]
        assert [item.url for item in listed] == [str(item.path) for item in listed]
    # The core reads an unread file from the URL it travelled with (a ledger entry that failed verification).
    unread = unread_documents(listed, {name: "0" * 64 for name in names})
    again = read_unread(unread, set(names), conn_id=CONN, encoding="utf-8")
    assert sorted((d["metadata"]["source"], d["page_content"]) for d in again) == [
        (name, f"body of {name}") for name in names
    ]


def test_reading_listed_objects_never_searches_the_cached_listing(s3, prefix, monkeypatch):
    """An object is read in one GET; fsspec's ``info`` would scan the folder's cached listing (O(N) per object)."""
    from airflow_provider_milvus.core.files import read_documents

    for i in range(3):
        put(s3, prefix, i)
    listed = list_sources(f"s3://{BUCKET}/{prefix}", conn_id=CONN)
    filesystem = type(listed[0].path.fs)
    searched: list[str] = []
    original = filesystem._ls_from_cache

    def ls_from_cache(self, path, *args, **kwargs):
        searched.append(path)
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(filesystem, "_ls_from_cache", ls_from_cache)
    s3.mark()
    assert [d["metadata"]["source"] for d in read_documents(listed)] == ["doc000.md", "doc001.md", "doc002.md"]
    assert searched == []
    assert s3.gets(prefix) == ["doc000.md", "doc001.md", "doc002.md"]


def test_the_source_ledger_is_read_while_the_folder_is_being_listed(
    tmp_path, milvus_conn_id, embedding_conn_id, collection_name, monkeypatch
):
    """Listing waits on object storage and the ledger read on Milvus: a nightly run pays the longer, not both."""
    for i in range(3):
        (tmp_path / f"doc{i}.md").write_bytes(body(i))
    operator = local_ingest(tmp_path, milvus_conn_id, embedding_conn_id, collection_name, chunk_size=200)
    run(operator, "inline")
    listing_started, ledger_read = threading.Event(), threading.Event()
    read_listings = Ledger.read_listings

    async def read_once_the_listing_started(self):
        assert await asyncio.to_thread(listing_started.wait, 10), "the ledger was read before the listing started"
        rows = await read_listings(self)
        ledger_read.set()
        return rows

    monkeypatch.setattr(Ledger, "read_listings", read_once_the_listing_started)

    def list_once_the_ledger_is_read():
        listing_started.set()
        assert ledger_read.wait(10), "the folder was listed before the ledger was read"
        return list_sources(str(tmp_path))

    listed, known = run_in_worker(
        list_with_ledger(
            list_once_the_ledger_is_read,
            operator.store_config(),
            key="source",
            chunk_size=200,
            chunk_overlap=0,
            id_key=None,
        )
    )
    assert known is not None
    assert sorted(known.unchanged(listed)) == ["doc0.md", "doc1.md", "doc2.md"]


def test_a_listing_error_is_raised_as_it_is_while_the_ledger_is_being_read(
    tmp_path, milvus_conn_id, embedding_conn_id, collection_name
):
    missing = tmp_path / "missing"
    operator = local_ingest(missing, milvus_conn_id, embedding_conn_id, collection_name)
    with pytest.raises(MilvusProviderError, match="does not exist"):
        run_in_worker(
            list_with_ledger(
                lambda: list_sources(str(missing)),
                operator.store_config(),
                key="source",
                chunk_size=None,
                chunk_overlap=0,
                id_key=None,
            )
        )
