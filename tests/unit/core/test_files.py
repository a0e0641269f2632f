"""Listing metadata: what ``list_sources`` records per file, read from the listing alone."""

from __future__ import annotations

import datetime
import json
import os

from airflow_provider_milvus.core.files import list_sources, local_listing, object_listing, read_documents
from airflow_provider_milvus.core.listing import in_shard


def test_an_object_is_known_by_its_version_or_etag_and_size():
    info = {"ETag": '"abc"', "size": 12, "LastModified": datetime.datetime(2026, 1, 1)}
    assert json.loads(object_listing(info)) == {"etag": '"abc"', "size": 12}
    assert json.loads(object_listing({**info, "VersionId": "v7"})) == {"versionid": "v7", "size": 12}


def test_without_a_version_or_etag_the_modification_time_stands_in_and_without_it_nothing():
    assert json.loads(object_listing({"size": 3, "mtime": 1700000000.5})) == {"modified": "1700000000.5", "size": 3}
    assert object_listing({"size": 3}) is None


def test_a_local_file_is_known_by_size_and_mtime_ns(tmp_path):
    path = tmp_path / "a.md"
    path.write_text("hello")
    first = local_listing(path.stat())
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 1))
    assert local_listing(path.stat()) != first
    assert json.loads(first)["size"] == 5


def test_a_folder_is_listed_sorted_by_relative_source_and_read_separately(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.md").write_text("z")
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "empty.md").write_text(" ")
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    listed = list_sources(str(tmp_path), glob="**/*.md")
    assert [item.source for item in listed] == ["a.md", "b/z.md", "empty.md"]
    assert all(item.listing for item in listed)
    assert read_documents(listed[:2]) == [
        {"page_content": "a", "metadata": {"source": "a.md"}},
        {"page_content": "z", "metadata": {"source": "b/z.md"}},
    ]


def test_shards_are_disjoint_and_cover_the_listing(tmp_path):
    for i in range(40):
        (tmp_path / f"f{i}.md").write_text(str(i))
    listed = list_sources(str(tmp_path))
    shards = [in_shard(listed, index, 4) for index in range(4)]
    names = [item.source for shard in shards for item in shard]
    assert sorted(names) == sorted(item.source for item in listed)
    assert len(names) == len(set(names))
    assert all(shards)
