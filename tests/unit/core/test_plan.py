"""The write's pure decisions (``plan.decide``): what to write, keep, delete and re-digest."""

from __future__ import annotations

from airflow_provider_milvus.core.jobs import StoreConfig, WriteJob
from airflow_provider_milvus.core.ledger import DIGEST_FIELD
from airflow_provider_milvus.core.plan import decide
from airflow_provider_milvus.core.rows import RowBuilder
from airflow_provider_milvus.core.schema import CollectionSchema

DESCRIPTION = {
    "collection_name": "c",
    "enable_dynamic_field": True,
    "fields": [
        {"name": "pk", "type": 21, "is_primary": True, "params": {"max_length": 512}},
        {"name": "text", "type": 21, "params": {"max_length": 65535}},
        {"name": "vector", "type": 101, "params": {"dim": 4}},
    ],
}
BUILDER = RowBuilder(CollectionSchema.describe(DESCRIPTION, {}))
JOB = WriteJob(store=StoreConfig(collection_name="c"), replace_by="source")


def chunk(pk: str, text: str = "t", digest: str | None = None) -> dict:
    chunk = {"id": pk, "text": text, "metadata": {"source": "a.md"}}
    if digest is not None:
        chunk["digest"] = digest
    return chunk


def row(pk: str, text: str = "t", digest: str | None = None) -> dict:
    stored = {"pk": pk, "text": text, "source": "a.md"}
    if digest is not None:
        stored[DIGEST_FIELD] = digest
    return stored


def plan_for(chunks: list[dict], rows: list[dict]):
    return decide(JOB, BUILDER, chunks, {}, {"a.md": rows}, False, {"a.md"})


def test_a_tracked_chunk_stored_under_another_digest_is_rewritten_with_its_vector():
    plan = plan_for([chunk("1", digest="new")], [row("1", digest="old")])
    assert [c["id"] for c in plan.to_write] == ["1"]
    assert plan.reuse_vector == {"1"}


def test_a_tracked_chunk_stored_under_its_digest_is_unchanged():
    plan = plan_for([chunk("1", digest="d")], [row("1", digest="d")])
    assert (plan.to_write, plan.unchanged) == ([], 1)


def test_a_duplicated_primary_key_is_rewritten_even_when_its_content_matches():
    plan = plan_for([chunk("1", digest="d")], [row("1", digest="d"), row("1", digest="d")])
    assert [c["id"] for c in plan.to_write] == ["1"]


def test_an_untracked_run_ignores_stored_digests_when_comparing():
    plan = plan_for([chunk("1")], [row("1", digest="d")])
    assert (plan.to_write, plan.unchanged, plan.replaced_digests) == ([], 1, set())


def test_an_untracked_rewrite_names_the_digests_it_breaks_and_clears_them():
    plan = plan_for([chunk("1", text="edited")], [row("1", digest="d1"), row("2", digest="d1")])
    assert plan.stale == ["2"]
    assert plan.replaced_digests == {"d1"}
    assert plan.clear_digest == {"1"}
