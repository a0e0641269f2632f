"""Staging on a local directory: names, round trips, removal, clear errors and cleanup by age.

Object storage (S3 through an ``aws`` connection) is tested against a real S3 endpoint in
``tests/integration/test_s3_staging.py``; here the local directory, the default location.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from airflow_provider_milvus.core import staging


def test_a_staged_payload_reads_back_as_it_was(tmp_path: Path):
    payload = {"documents": [{"page_content": "ü ✓", "metadata": {"n": 1, "tags": ["a"]}}], "none": None}
    reference = staging.stage_json(payload, staging_url=str(tmp_path), name_hint="task-documents")
    assert staging.load_json(reference) == payload


def test_every_name_is_unique_and_records_the_host_that_staged_it(tmp_path: Path):
    first = staging.stage_json([1], staging_url=str(tmp_path), name_hint="t")
    second = staging.stage_json([1], staging_url=str(tmp_path), name_hint="t")
    assert first != second
    assert staging.host_of(first) == staging.this_host()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(Path(r).name for r in (first, second))


def test_a_hint_cannot_leave_the_staging_directory(tmp_path: Path):
    reference = staging.stage_json([1], staging_url=str(tmp_path / "dir"), name_hint="../../etc/x y")
    assert Path(reference).parent == tmp_path / "dir"


def test_file_urls_are_local_paths(tmp_path: Path):
    reference = staging.stage_json({"a": 1}, staging_url=f"file://{tmp_path}", name_hint="t")
    assert staging.load_json(reference) == {"a": 1}
    assert Path(reference.removeprefix("file://")).parent == tmp_path


def test_a_removed_object_is_gone_and_reading_it_names_the_host_that_staged_it(tmp_path: Path):
    reference = staging.stage_json([1], staging_url=str(tmp_path), name_hint="t")
    assert staging.remove(reference) is True
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(staging.StagingError, match="no longer exists|does not exist|not found") as error:
        staging.load_json(reference)
    assert staging.this_host() in str(error.value)


def test_removing_twice_is_not_an_error(tmp_path: Path):
    reference = staging.stage_json([1], staging_url=str(tmp_path), name_hint="t")
    assert staging.remove(reference)
    assert staging.remove(reference)


def test_an_unwritable_location_fails_with_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(staging.StagingError, match=str(blocker)):
        staging.stage_json([1], staging_url=str(blocker / "sub"), name_hint="t")


def test_cleanup_removes_only_staged_objects_older_than_the_age(tmp_path: Path):
    old = Path(staging.stage_json([1], staging_url=str(tmp_path), name_hint="old"))
    young = Path(staging.stage_json([2], staging_url=str(tmp_path), name_hint="young"))
    partial = tmp_path / "partial.tmp"
    partial.write_text("{")
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("kept")
    an_hour_ago = time.time() - 3600  # mtimes set, not slept for: no clock resolution in the way
    for path in (old, partial, unrelated):
        os.utime(path, (an_hour_ago, an_hour_ago))
    removed = staging.cleanup(str(tmp_path), older_than=timedelta(minutes=30))
    assert sorted(removed) == sorted([str(old), str(partial)])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([young.name, unrelated.name])


def test_cleanup_of_a_missing_directory_removes_nothing(tmp_path: Path):
    assert staging.cleanup(str(tmp_path / "never-made")) == []


def test_check_staging_proves_a_local_directory_usable_and_leaves_nothing(tmp_path: Path):
    staging.check_staging(str(tmp_path / "new"))
    assert list((tmp_path / "new").iterdir()) == []
