"""
### Rebuild a collection behind its alias (new model or chunking, no downtime), and roll it back

Trigger `milvus_rebuild` by hand with the embedding model and chunk size to move to. It builds
`<collection>_v<N>` from the files under `corpus_dir`, checks it (rows equal the corpus's chunks, at
least `min_count`, `sample_query` finds a hit), then switches the alias `<collection>` to it in one
step: DAGs that search or write `<collection>` see the old version or the new one, never a half-built
one. A failed check leaves the alias where it was and drops the new version. With the same model and
only another chunk size, chunks whose text is already stored reuse their vectors (only new chunk texts
are embedded); a new model embeds everything again. `keep_versions` earlier versions stay for rollback.

`milvus_rollback` (also manual) points the alias back at the previous version, just as atomically.
Guide: docs/rebuild.md (the one-time migration of a collection that is not an alias yet, costs).

**Connections:** `milvus_default` (type `milvus`). Leave `embedding_conn_id` empty to use the one on
`milvus_default`, or Milvus's built-in BM25 full-text search when it has none.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_milvus.operators.rebuild import MilvusRebuildCollectionOperator, MilvusRollbackAliasOperator

COLLECTION = os.environ.get("MILVUS_EXAMPLE_ALIAS", "sample_docs_live")
CORPUS_DIR = os.environ.get("MILVUS_EXAMPLE_CORPUS", str(Path(__file__).parent / "sample_corpus"))

with DAG(
    dag_id="milvus_rebuild",
    schedule=None,  # manual: a rebuild re-embeds the corpus (or its new chunks)
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one rebuild per alias at a time
    params={
        "collection": Param(COLLECTION, type="string", description="The alias DAGs search and write"),
        "corpus_dir": Param(CORPUS_DIR, type="string", description="Folder (or object-storage URL) of .md/.txt files"),
        "chunk_size": Param(500, type="integer", minimum=1),
        "chunk_overlap": Param(50, type="integer", minimum=0),
        "embedding_conn_id": Param("", type="string", description="Empty: the Milvus connection's (or BM25)"),
        "embedding_model": Param("", type="string", description="Empty: the embedding connection's default"),
        "sample_query": Param("How does Milvus search text?", type="string"),
        "min_count": Param(1, type="integer", minimum=0),
        "keep_versions": Param(1, type="integer", minimum=0),
    },
    render_template_as_native_obj=True,  # chunk_size, min_count, keep_versions stay integers
    doc_md=__doc__,
    tags=["milvus", "example"],
) as dag:
    # [START howto_operator_milvus_rebuild_collection]
    MilvusRebuildCollectionOperator(
        task_id="rebuild",
        collection_name="{{ params.collection }}",
        source_url="{{ params.corpus_dir }}",
        source_glob=["**/*.md", "**/*.txt"],
        chunk_size="{{ params.chunk_size }}",
        chunk_overlap="{{ params.chunk_overlap }}",
        embedding_conn_id="{{ params.embedding_conn_id }}",
        embedding_model="{{ params.embedding_model }}",
        replace_by="source",
        sample_queries=["{{ params.sample_query }}"],
        min_count="{{ params.min_count }}",
        keep_versions="{{ params.keep_versions }}",
        batch_size=64,
        max_concurrency=4,
    )
    # [END howto_operator_milvus_rebuild_collection]

with DAG(
    dag_id="milvus_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"collection": Param(COLLECTION, type="string", description="The alias to point back")},
    doc_md=__doc__,
    tags=["milvus", "example"],
) as rollback_dag:
    MilvusRollbackAliasOperator(task_id="rollback", collection_name="{{ params.collection }}")
