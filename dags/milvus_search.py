"""
### Search Milvus and hand the hits to the next task

Runs every question in the `questions` param against `collection` with
`MilvusSearchToXComOperator` (bounded concurrent searches), then `print_answers` reads the JSON
hits from XCom. Scheduled whenever `milvus_nightly_ingest` updates the collection Asset.

**Connections:** `milvus_default` (type `milvus`); embeddings as configured on it (BM25 when none).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, task

from airflow_provider_milvus.operators.milvus import MilvusSearchToXComOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_COLLECTION", "sample_docs")

with DAG(
    dag_id="milvus_search",
    schedule=[Asset(f"milvus://milvus_default/{COLLECTION}")],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "questions": Param(
            [
                "How does Milvus do full-text search without an embedding model?",
                "Why must triggers never block the event loop?",
                "What happens to chunks of a deleted file?",
            ],
            type="array",
        ),
        "collection": Param(COLLECTION, type="string"),
        "k": Param(3, type="integer", minimum=1),
    },
    render_template_as_native_obj=True,
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:
    # [START howto_operator_milvus_search_to_xcom]
    search = MilvusSearchToXComOperator(
        task_id="search",
        collection_name="{{ params.collection }}",
        queries="{{ params.questions }}",
        k=3,
        max_concurrency=4,
    )
    # [END howto_operator_milvus_search_to_xcom]

    @task
    def print_answers(hits_per_question: list[list[dict]], params: dict) -> list[dict]:
        """Downstream consumer: plain JSON from XCom, no LangChain objects needed."""
        summary = []
        for question, hits in zip(params["questions"], hits_per_question, strict=True):
            print(f"Q: {question}")
            for rank, hit in enumerate(hits, 1):
                first_line = hit["page_content"].strip().splitlines()[0]
                print(f"  {rank}. [{hit['metadata'].get('source')}] {first_line[:80]}")
            top = hits[0]["metadata"].get("source") if hits else None
            summary.append({"question": question, "top_source": top, "hits": len(hits)})
        return summary

    print_answers(search.output)
