"""``MilvusOperationTrigger`` as the triggerer sees it: serialised by the worker, rebuilt from plaintext kwargs.

Trigger kwargs are stored in plaintext (the ``trigger`` table's ``kwargs``), so they carry connection ids and
staged references, never a secret or the bulk input, and they survive Airflow's serde unchanged.
"""

from __future__ import annotations

import importlib
import json

import pytest
from airflow.exceptions import TaskDeferred

from airflow_provider_milvus.core import staging
from airflow_provider_milvus.core.jobs import DeleteJob, SearchJob, StoreConfig, WriteJob
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator
from airflow_provider_milvus.triggers.milvus import MAX_INLINE_EVENT_BYTES, MilvusOperationTrigger

from tests.compat import serde

SECRET = "sentinel-password-4f1c"  # a marker to look for in the kwargs, not a credential
STORE = StoreConfig(milvus_conn_id="m", collection_name="c", embedding_conn_id="e", partition_key_value="acme")
JOBS = [
    WriteJob(store=STORE, documents=[{"page_content": "a", "metadata": {"source": "a.md"}}], replace_by="source"),
    DeleteJob(store=STORE, expr="n > {n}", expr_params={"n": 1}),
    SearchJob(store=STORE, queries=[[0.5, 0.25]], k=3, search_params={"ef": 64}, consistency_level="Bounded"),
]


def rebuild(classpath: str, kwargs: dict) -> MilvusOperationTrigger:
    """What the triggerer does with a trigger row: import the class path, call it with the kwargs."""
    module, _, name = classpath.rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


@pytest.mark.parametrize("job", JOBS, ids=lambda job: job.operation)
def test_a_trigger_round_trips_through_serde_to_the_same_job(job):
    trigger = MilvusOperationTrigger(operation=job.operation, job=job.to_dict(), staging_url="/staging")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_milvus.triggers.milvus.MilvusOperationTrigger"
    stored = serde.deserialize(serde.serialize(kwargs))
    assert stored == kwargs
    rebuilt = rebuild(classpath, stored)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert type(job).from_dict(rebuilt.job) == job


def test_the_kwargs_are_plain_json(tmp_path):
    kwargs = MilvusOperationTrigger(operation="write", job=JOBS[0].to_dict(), staging_url=str(tmp_path)).serialize()[1]
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_a_deferred_task_puts_conn_ids_in_the_kwargs_never_the_connections_secrets(monkeypatch, tmp_path):
    connection = {"conn_type": "milvus", "host": "http://127.0.0.1:1", "password": SECRET, "extra": {"token": SECRET}}
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_MILVUS", json.dumps(connection))
    operator = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id="secret_milvus",
        collection_name="c",
        documents=["some text"],
        deferrable=True,
        inline_max_items=0,
        staging_url=str(tmp_path),
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["job"]["store"]["milvus_conn_id"] == "secret_milvus"
    assert SECRET not in json.dumps(serde.serialize(kwargs))


def test_bulk_documents_travel_by_reference_not_in_the_kwargs(tmp_path):
    operator = MilvusAddDocumentsOperator(
        task_id="add",
        collection_name="c",
        documents=[f"document {i} " + "x" * 200 for i in range(200)],
        deferrable=True,
        inline_max_items=0,
        staging_url=str(tmp_path),
    )
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute({})
    job = deferred.value.trigger.serialize()[1]["job"]
    assert job["documents"] is None
    assert len(staging.load_json(job["documents_ref"])) == 200
    assert len(json.dumps(deferred.value.trigger.serialize()[1])) < 2048


def test_a_large_result_is_staged_and_a_small_one_travels_in_the_event(tmp_path):
    trigger = MilvusOperationTrigger(operation="search", job=JOBS[2].to_dict(), staging_url=str(tmp_path))
    small = [{"id": "1", "score": 0.5}]
    assert trigger._success_event(small) == {"status": "success", "result": small}
    large = [{"id": str(i), "page_content": "y" * 100} for i in range(MAX_INLINE_EVENT_BYTES // 100)]
    event = trigger._success_event(large)
    assert set(event) == {"status", "result_ref"}
    assert staging.load_json(event["result_ref"]) == large
