"""The rebuild's pure decisions: which model may reuse vectors, lookup batches, rollback targets, refused parameters."""

from __future__ import annotations

import pytest

from airflow_provider_milvus.core.jobs import RebuildJob, StoreConfig
from airflow_provider_milvus.core.rebuild import (
    Version,
    _rollback_target,
    check_rebuild,
    same_model,
)
from airflow_provider_milvus.exceptions import MilvusProviderError

MODEL = {"kind": "openai", "model": "text-embedding-3-small", "dimensions": 1536}


def test_vectors_are_reused_only_from_the_same_kind_model_and_dimensions():
    assert same_model(MODEL, {**MODEL, "dimensions": None})  # the model's default size was recorded at creation
    assert same_model(MODEL, dict(MODEL))
    assert not same_model(MODEL, {**MODEL, "model": "text-embedding-3-large"})
    assert not same_model(MODEL, {**MODEL, "kind": "langchain"})
    assert not same_model(MODEL, {**MODEL, "dimensions": 512})
    assert not same_model(None, MODEL)  # a collection made elsewhere records no model
    assert not same_model({"kind": "bm25", "function": "text_bm25"}, MODEL)


VERSIONS = [Version(4, "docs_v4", True), Version(3, "docs_v3", False), Version(2, "docs_v2", True)]


def test_rollback_goes_to_the_newest_validated_version_before_the_live_one():
    assert _rollback_target("docs", "docs_v4", 4, VERSIONS, None).name == "docs_v2"  # v3 was never validated
    assert _rollback_target("docs", "docs_v4", 4, VERSIONS, 3).name == "docs_v3"  # named: taken as asked


def test_rollback_refuses_a_missing_version_the_live_one_or_no_earlier_one():
    with pytest.raises(
        MilvusProviderError, match=r"'docs_v9' does not exist \(versions kept: docs_v4, docs_v3, docs_v2\)"
    ):
        _rollback_target("docs", "docs_v4", 4, VERSIONS, 9)
    with pytest.raises(MilvusProviderError, match=r"points at 'docs_v4' already"):
        _rollback_target("docs", "docs_v4", 4, VERSIONS, 4)
    with pytest.raises(MilvusProviderError, match=r"no earlier validated version is kept"):
        _rollback_target("docs", "docs_v2", 2, VERSIONS, None)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"keep_versions": -1}, r"keep_versions must be an integer >= 0"),
        ({"min_count": -5}, r"min_count must be an integer >= 0"),
        ({"sample_queries": ["ok", " "]}, r"sample_queries must be a list of non-blank strings"),
        ({"sample_queries": "one query"}, r"sample_queries must be a list"),
        (
            {"store": StoreConfig(collection_name="docs", partition_key_value="acme")},
            r"partition_key_value would build",
        ),
    ],
)
def test_bad_rebuild_parameters_are_refused_before_connecting(changes, message):
    job = RebuildJob(store=StoreConfig(collection_name="docs"), documents=[])
    with pytest.raises(MilvusProviderError, match=message):
        check_rebuild(RebuildJob(**{**job.to_dict(), "store": job.store, **changes}))
