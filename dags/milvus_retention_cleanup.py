"""
### Retention cleanup

Deletes entities whose `ingested_on` date (YYYYMMDD, written into their metadata by the pipeline that
loads them, e.g. a daily feed) is older than `retention_days` before the run's logical date. A dry run logs the count first; the delete-all guard
stays on, so a window that would empty the collection fails instead.

**Connections:** `milvus_default` (type `milvus`).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_milvus.operators.milvus import MilvusDeleteByExprOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_COLLECTION", "sample_docs")
EXPIRED = "ingested_on < {cutoff}"

with DAG(
    dag_id="milvus_retention_cleanup",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "retention_days": Param(30, type="integer", minimum=1),
        "collection": Param(COLLECTION, type="string"),
    },
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:

    @task
    def retention_cutoff(params: dict, logical_date: pendulum.DateTime) -> dict:
        cutoff = logical_date.subtract(days=params["retention_days"])
        return {"cutoff": int(cutoff.strftime("%Y%m%d"))}

    cutoff = retention_cutoff()

    # [START howto_operator_milvus_delete_by_expr]
    count_expired = MilvusDeleteByExprOperator(
        task_id="count_expired",
        collection_name="{{ params.collection }}",
        expr=EXPIRED,
        expr_params=cutoff,
        dry_run=True,
    )
    delete_expired = MilvusDeleteByExprOperator(
        task_id="delete_expired",
        collection_name="{{ params.collection }}",
        expr=EXPIRED,
        expr_params=cutoff,
    )
    # [END howto_operator_milvus_delete_by_expr]

    count_expired >> delete_expired
