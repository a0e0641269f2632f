"""Collection names and tenant values, checked before a job connects (``core/checks.py``)."""

from __future__ import annotations

import pytest

from airflow_provider_milvus.core.checks import check_collection_name, check_job, check_tenant
from airflow_provider_milvus.core.jobs import DeleteJob, StoreConfig, WriteJob
from airflow_provider_milvus.exceptions import MilvusProviderError


@pytest.mark.parametrize("name", ["docs", "_private", "Docs_2024", "a" * 255, "x1_"])
def test_names_a_milvus_server_takes_pass(name):
    assert check_collection_name(name) == name


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("my-coll", "only ASCII letters, digits and underscores"),
        ("has space", "only ASCII letters, digits and underscores"),
        ("caf\u00e9", "only ASCII letters, digits and underscores"),
        ("a$b", "only ASCII letters, digits and underscores"),
        ("1abc", "must start with a letter or an underscore"),
        ("a" * 256, "256 bytes; Milvus allows at most 255"),
        ("", "non-empty string"),
    ],
)
def test_names_a_milvus_server_refuses_are_refused_with_the_rule(name, rule):
    with pytest.raises(MilvusProviderError, match=rule):
        check_collection_name(name)


def test_the_refusal_suggests_a_name_that_passes():
    with pytest.raises(MilvusProviderError, match="'my_coll'"):
        check_collection_name("my-coll")
    with pytest.raises(MilvusProviderError, match="'_1abc'"):
        check_collection_name("1abc")


def _write(name: str, **options) -> WriteJob:
    return WriteJob(store=StoreConfig(collection_name=name), documents=[], **options)


def test_a_write_with_a_source_ledger_needs_room_for_its_suffix():
    name = "n" * 250
    check_job(_write(name))  # no ledger: 250 bytes fit
    check_job(_write(name, replace_by="source", track_sources=False))
    with pytest.raises(MilvusProviderError, match=r"source ledger.*259 bytes.*track_sources=False"):
        check_job(_write(name, replace_by="source"))
    check_job(_write("n" * 246, replace_by="source"))  # 246 + 9 = 255


@pytest.mark.parametrize("value", [None, "acme", " acme", "0"])
def test_tenant_values_that_name_one_tenant_pass(value):
    assert check_tenant(value) == value


@pytest.mark.parametrize(
    ("value", "why"),
    [("", "empty"), ("  \t", "blank"), (0, r"must be a string .*, got int 0"), (None.__class__, "must be a string")],
)
def test_tenant_values_that_would_reach_every_tenant_are_refused(value, why):
    with pytest.raises(MilvusProviderError, match=why):
        check_tenant(value)


def test_every_job_is_checked_for_its_tenant():
    with pytest.raises(MilvusProviderError, match="partition_key_value is empty"):
        check_job(DeleteJob(store=StoreConfig(collection_name="c", partition_key_value=""), expr="x == 1"))
