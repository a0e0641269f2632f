"""
### Maintain one tenant of a collection another application owns

A support-ticket collection made by an application (its own field names, its own primary key, a
partition key per customer) is kept fresh for one `tenant` at a time, with no field-mapping parameters:
the operators read the schema from Milvus.

1. `upsert_tickets`: records from an upstream system, upserted by their own ids (`id_key`) into the
   tenant's partition key; metadata keys that name the collection's fields land in those fields.
2. `close_stale_tickets`: deletes the tenant's tickets older than `keep_from`, never another tenant's.
3. `search_tickets`: searches only this tenant's tickets and hands the hits to the next task.

**Connections:** `milvus_default` (type `milvus`) with the embedding connection and model the
application's collection was built with (*Embedding connection id* / *Embedding model*).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_milvus.operators.milvus import (
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
    MilvusUpsertOperator,
)

with DAG(
    dag_id="milvus_tenant_maintenance",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "collection": Param("support_tickets", type="string"),
        "tenant": Param("acme", type="string"),
        "keep_from": Param(2024, type="integer", description="Delete the tenant's tickets opened before this year"),
        "question": Param("customer cannot log in", type="string"),
        "tickets": Param(
            [
                {"ticket_id": "acme-901", "subject": "Login fails after password reset", "year": 2026},
                {"ticket_id": "acme-902", "subject": "Invoice shows the wrong currency", "year": 2026},
            ],
            type="array",
        ),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:

    @task
    def to_documents(params: dict) -> list[dict]:
        return [
            {"page_content": t["subject"], "metadata": {"ticket_id": t["ticket_id"], "year": t["year"]}}
            for t in params["tickets"]
        ]

    # [START howto_operator_milvus_tenant]
    upsert_tickets = MilvusUpsertOperator(
        task_id="upsert_tickets",
        collection_name="{{ params.collection }}",
        documents=to_documents(),
        id_key="ticket_id",
        partition_key_value="{{ params.tenant }}",
    )
    close_stale_tickets = MilvusDeleteByExprOperator(
        task_id="close_stale_tickets",
        collection_name="{{ params.collection }}",
        expr="year < {keep_from}",
        expr_params={"keep_from": "{{ params.keep_from }}"},
        partition_key_value="{{ params.tenant }}",
    )
    search_tickets = MilvusSearchToXComOperator(
        task_id="search_tickets",
        collection_name="{{ params.collection }}",
        queries="{{ params.question }}",
        k=3,
        partition_key_value="{{ params.tenant }}",
    )
    # [END howto_operator_milvus_tenant]

    @task
    def report(hits: list[dict]) -> list[str]:
        return [f"{hit['id']}: {hit['page_content']} ({hit['score']:.2f})" for hit in hits]

    upsert_tickets >> close_stale_tickets >> search_tickets
    report(search_tickets.output)
