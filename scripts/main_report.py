"""Print what the main job did: files, chunks written, collection count, top hits per question.

Reads the XComs of the latest `milvus_nightly_ingest` and `milvus_search` runs from the Airflow
metadata DB, and counts the collection independently with pymilvus.
"""

from __future__ import annotations

import json
import os
import sys

from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from pymilvus import MilvusClient

from airflow_provider_milvus.hooks.milvus import MilvusHook


def latest_xcom(dag_id: str, task_id: str):
    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=dag_id, task_id=task_id, key="return_value")
            .order_by(XComModel.timestamp.desc())
            .first()
        )
        if row is None:
            sys.exit(f"No result from {dag_id}.{task_id}: did the DAG run?")
        value = row.value
        return json.loads(value) if isinstance(value, str) else value


def main() -> None:
    collection = os.environ.get("MILVUS_EXAMPLE_COLLECTION", "sample_docs")
    written = latest_xcom("milvus_nightly_ingest", "write_chunks")
    search = latest_xcom("milvus_search", "search")
    questions = [s["question"] for s in latest_xcom("milvus_search", "print_answers")]

    settings = MilvusHook().settings
    client = MilvusClient(**settings.client_kwargs())
    count = client.query(collection, filter="", output_fields=["count(*)"])[0]["count(*)"]
    client.close()

    print()
    print("=" * 72)
    print(f"Milvus at {settings.uri}, collection '{collection}'")
    print(f"  files read:             {written['documents']} ({written['chunks']} chunks)")
    print(
        f"  chunks written:         {written['written']} in {written['batches']} batches "
        f"({written['elapsed_s']} s), unchanged: {written['unchanged']}"
    )
    print(
        f"  stale chunks removed:   {written['stale_deleted']}, "
        f"of deleted files: {written['vanished_deleted']} ({written['vanished_sources']} files)"
    )
    print(f"  entities in collection: {count}")
    for question, hits in zip(questions, search, strict=True):
        print(f"\nQ: {question}")
        for rank, hit in enumerate(hits, 1):
            line = hit["page_content"].strip().splitlines()[0][:70]
            print(f"  {rank}. {hit['metadata'].get('source', '?'):<34} {line}")
    print("=" * 72)


if __name__ == "__main__":
    main()
