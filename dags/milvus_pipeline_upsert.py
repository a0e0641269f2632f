"""
### Upsert records from an upstream task

An upstream task produces records (here: a product catalogue snapshot from the `records` param);
`MilvusUpsertOperator` writes them keyed by their own `record_id`, so a changed record replaces
its text and metadata in place and an unchanged one is rewritten identically.

**Connections:** `milvus_default` (type `milvus`).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_milvus.operators.milvus import MilvusUpsertOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_RECORDS_COLLECTION", "catalogue")

DEFAULT_RECORDS = [
    {
        "record_id": "sku-1001",
        "title": "Trail running shoe",
        "description": "Light shoe with a grippy sole for muddy trails.",
        "price": 129.0,
    },
    {
        "record_id": "sku-1002",
        "title": "Rain jacket",
        "description": "Waterproof breathable shell that packs into its pocket.",
        "price": 189.0,
    },
    {
        "record_id": "sku-1003",
        "title": "Headlamp",
        "description": "Rechargeable 400 lumen headlamp for night runs.",
        "price": 49.0,
    },
]

with DAG(
    dag_id="milvus_pipeline_upsert",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"records": Param(DEFAULT_RECORDS, type="array"), "collection": Param(COLLECTION, type="string")},
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:

    @task
    def extract_records(params: dict) -> list[dict]:
        """Shape upstream records as documents; metadata carries the record's own id."""
        return [
            {
                "page_content": f"{r['title']}. {r['description']}",
                "metadata": {"record_id": r["record_id"], "title": r["title"], "price": r["price"]},
            }
            for r in params["records"]
        ]

    # [START howto_operator_milvus_upsert]
    MilvusUpsertOperator(
        task_id="upsert_records",
        collection_name="{{ params.collection }}",
        documents=extract_records(),
        id_key="record_id",
    )
    # [END howto_operator_milvus_upsert]
