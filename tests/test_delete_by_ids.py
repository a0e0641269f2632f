"""Deletes by primary key (LangChain's ``delete(ids=...)``), resolved against the collection's own key.

Collections made directly with pymilvus, with an INT64 or a VARCHAR primary key ``rid`` and a partition
key ``org`` (tenants ``acme``: rows 0-9, ``zen``: rows 10-19). Exactly the named rows go; ids that do not
exist, or belong to another tenant, are reported as not found. On Milvus Lite and a real Milvus
standalone (2.3.5), inline and deferred, read back with pymilvus.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_milvus.core.jobs import DeleteJob
from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusDeleteByExprOperator

from testing.servers.embeddings_server import embed_text
from tests.conftest import EMBEDDING_DIMENSIONS, Tier
from tests.test_operators import MODES, run

ROWS = 20


def key(pk_type: str, row: int) -> str | int:
    return 100 + row if pk_type == "INT64" else f"r{row}"


def ledger(tier: Tier, name: str, pk_type: str) -> None:
    """``rid`` INT64 or VARCHAR (not auto-id), ``note``, partition key ``org``, ``v`` FLAT/COSINE."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    if pk_type == "INT64":
        schema.add_field("rid", DataType.INT64, is_primary=True)
    else:
        schema.add_field("rid", DataType.VARCHAR, is_primary=True, max_length=64)
    schema.add_field("note", DataType.VARCHAR, max_length=200)
    schema.add_field("org", DataType.VARCHAR, max_length=16, is_partition_key=True)
    schema.add_field("v", DataType.FLOAT_VECTOR, dim=EMBEDDING_DIMENSIONS)
    index = MilvusClient.prepare_index_params()
    index.add_index("v", index_type="FLAT", metric_type="COSINE")
    tier.client.create_collection(name, schema=schema, index_params=index, num_partitions=4, consistency_level="Strong")
    tier.client.insert(
        name,
        [
            {
                "rid": key(pk_type, i),
                "note": f"note {i}",
                "org": "acme" if i < 10 else "zen",
                "v": embed_text(f"note {i}", EMBEDDING_DIMENSIONS),
            }
            for i in range(ROWS)
        ],
    )


def remaining(tier: Tier, name: str) -> list[Any]:
    return sorted(row["rid"] for row in tier.rows(name, "", ["rid"]))


def delete(tier: Tier, name: str, ids: Any, mode: str = "inline", **kwargs: Any) -> dict[str, Any]:
    operator = MilvusDeleteByExprOperator(
        task_id="d", milvus_conn_id=tier.conn_id, collection_name=name, ids=ids, **kwargs
    )
    return run(operator, mode)


@pytest.fixture(params=["INT64", "VARCHAR"])
def pk_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("mode", MODES)
def test_exactly_the_named_rows_go_and_missing_ids_are_reported(tier, name, pk_type, mode):
    ledger(tier, name, pk_type)
    gone = [key(pk_type, i) for i in (1, 4, 12)]
    missing = [key(pk_type, 500), key(pk_type, 501)]
    result = delete(tier, name, [gone[0], missing[0], *gone, missing[1]], mode)
    assert {k: result[k] for k in ("requested", "matched", "deleted", "not_found", "missing_ids", "dry_run")} == {
        "requested": 5,  # a repeated id counts once
        "matched": 3,
        "deleted": 3,
        "not_found": 2,
        "missing_ids": missing,
        "dry_run": False,
    }
    assert remaining(tier, name) == sorted(key(pk_type, i) for i in range(ROWS) if i not in (1, 4, 12))


@pytest.mark.parametrize("mode", MODES)
def test_a_tenant_deletes_only_its_own_rows_and_another_tenants_id_is_not_found(tier, name, pk_type, mode):
    ledger(tier, name, pk_type)
    ours, theirs = key(pk_type, 3), key(pk_type, 15)
    result = delete(tier, name, [ours, theirs], mode, partition_key_value="acme")
    assert (result["matched"], result["deleted"], result["missing_ids"]) == (1, 1, [theirs])
    assert remaining(tier, name) == sorted(key(pk_type, i) for i in range(ROWS) if i != 3)


def test_a_dry_run_counts_and_deletes_nothing(tier, name, pk_type):
    ledger(tier, name, pk_type)
    result = delete(tier, name, [key(pk_type, 0), key(pk_type, 11), key(pk_type, 99)], dry_run=True)
    assert (result["matched"], result["deleted"], result["not_found"], result["dry_run"]) == (2, 0, 1, True)
    assert tier.count(name) == ROWS


def test_ids_naming_every_row_of_the_tenant_need_allow_delete_all(tier, name, pk_type):
    ledger(tier, name, pk_type)
    everything_of_zen = [key(pk_type, i) for i in range(10, ROWS)]
    with pytest.raises(MilvusProviderError, match=r"The 10 ids name all 10 entities of .* for tenant 'zen'"):
        delete(tier, name, everything_of_zen, partition_key_value="zen")
    assert tier.count(name) == ROWS
    result = delete(tier, name, everything_of_zen, partition_key_value="zen", allow_delete_all=True)
    assert result["deleted"] == 10
    assert remaining(tier, name) == [key(pk_type, i) for i in range(10)]


def test_an_empty_list_of_ids_deletes_nothing(tier, name, pk_type):
    """An upstream task that found nothing to remove must not turn into an empty (delete-all) filter."""
    ledger(tier, name, pk_type)
    result = delete(tier, name, [], allow_delete_all=True)
    assert (result["requested"], result["matched"], result["deleted"]) == (0, 0, 0)
    assert tier.count(name) == ROWS


def test_ids_are_typed_as_the_primary_key(tier, name, pk_type):
    """From a template or a CSV an INT64 id arrives as "105"; to a VARCHAR key an integer id means its digits."""
    ledger(tier, name, pk_type)
    if pk_type == "INT64":
        result = delete(tier, name, '["105", 106]')  # a Jinja-rendered XCom
        assert result["deleted"] == 2
        with pytest.raises(MilvusProviderError, match=r"ids\[1\] = 'r7' .* primary key 'rid' is INT64"):
            delete(tier, name, [107, "r7"])
    else:
        result = delete(tier, name, ["r5", 6])
        assert (result["deleted"], result["missing_ids"]) == (1, ["6"])
    assert tier.count(name) == ROWS - (2 if pk_type == "INT64" else 1)


def test_thousands_of_ids_are_staged_and_looked_up_in_batches(tier, name, pk_type, monkeypatch):
    """2,500 missing ids (more than a trigger row holds): counted, and the first 1,000 listed."""
    from pymilvus import AsyncMilvusClient

    ledger(tier, name, pk_type)
    lookups: list[str] = []
    original = AsyncMilvusClient.query

    async def query(self: Any, collection_name: str, **kwargs: Any) -> Any:
        lookups.append(kwargs.get("filter", ""))
        return await original(self, collection_name, **kwargs)

    monkeypatch.setattr(AsyncMilvusClient, "query", query)
    ids = [key(pk_type, 1000 + i) for i in range(2500)] + [key(pk_type, 2)]
    result = delete(tier, name, ids, "deferred")
    assert (result["requested"], result["deleted"], result["not_found"]) == (2501, 1, 2500)
    assert result["missing_ids"] == ids[:1000]
    assert sum(1 for f in lookups if f.startswith("rid in [")) == 3  # 1,000 keys per lookup
    assert remaining(tier, name) == sorted(key(pk_type, i) for i in range(ROWS) if i != 2)


def test_bad_ids_are_refused_before_connecting(milvus_conn_id, collection_name, monkeypatch):
    from pymilvus import AsyncMilvusClient

    def no_client(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a Milvus client was made")

    monkeypatch.setattr(AsyncMilvusClient, "__init__", no_client)
    for ids, message in (
        ("p1", r"ids must be a list of primary keys .* got str"),
        ([1, None], r"ids\[1\] = None is not a primary key"),
        ([True], r"ids\[0\] = True is not a primary key"),
    ):
        operator = MilvusDeleteByExprOperator(
            task_id="d", milvus_conn_id=milvus_conn_id, collection_name=collection_name, ids=ids
        )
        with pytest.raises(MilvusProviderError, match=message):
            operator.execute({})


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"expr": "n > 1", "ids": [1]}, "Pass expr .* or ids, not both"),
        ({"expr_params": {"n": 1}, "ids": [1]}, "Pass expr .* or ids, not both"),
        ({}, r"Pass expr \(a filter\) or ids"),
    ],
)
def test_expr_or_ids_is_checked_when_the_task_is_built(arguments, message):
    with pytest.raises(ValueError, match=message):
        MilvusDeleteByExprOperator(task_id="d", collection_name="c", **arguments)


def test_batch_size_is_deprecated_for_deletes_and_the_job_has_none():
    """A delete is one request: the argument is accepted (old DAGs still parse) with a warning, and goes nowhere."""
    with pytest.warns(AirflowProviderDeprecationWarning, match="ignores batch_size"):
        operator = MilvusDeleteByExprOperator(task_id="d", collection_name="c", expr="n > 1", batch_size=50)
    assert "batch_size" not in {f.name for f in dataclasses.fields(DeleteJob)}
    assert operator.max_concurrency == 8


def test_a_long_filter_is_shortened_at_info_and_whole_at_debug(tier, name, caplog):
    ledger(tier, name, "VARCHAR")
    values = [f"value-{i:05d}" for i in range(300)]
    caplog.set_level(logging.DEBUG, logger="airflow_provider_milvus.core.delete")
    result = MilvusDeleteByExprOperator(
        task_id="d",
        milvus_conn_id=tier.conn_id,
        collection_name=name,
        expr="note in {values}",
        expr_params={"values": [*values, "note 3"]},
    ).execute({})
    assert result["deleted"] == 1
    whole = "note in " + '["' + '", "'.join([*values, "note 3"]) + '"]'
    (info,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "matches" in r.getMessage()]
    assert f"({len(whole)} chars) matches 1 of {ROWS} entities" in info
    assert len(info) < 300
    assert any(r.levelno == logging.DEBUG and whole in r.getMessage() for r in caplog.records)


def test_many_ids_go_to_the_staging_location_not_the_trigger_row(milvus_conn_id, collection_name, tmp_path):
    from airflow.exceptions import TaskDeferred

    from airflow_provider_milvus.core import staging

    ids = [f"record-{i:06d}" for i in range(5000)]
    operator = MilvusDeleteByExprOperator(
        task_id="d",
        milvus_conn_id=milvus_conn_id,
        collection_name=collection_name,
        ids=ids,
        deferrable=True,
        staging_url=str(tmp_path),
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    job = deferred.value.trigger.serialize()[1]["job"]
    assert job["ids"] is None
    assert staging.load_json(job["ids_ref"]) == ids
    assert deferred.value.kwargs == {"staged": [job["ids_ref"]]}
