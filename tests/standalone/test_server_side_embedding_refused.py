"""
Milvus 2.3.5 has no functions: a collection that would embed server-side is refused before anything.

2.3.5 does not know the schema's functions and would create the collection without its TEXT_EMBEDDING
function, so every later write would need vectors from the client. The version is checked first.
"""

from __future__ import annotations

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

from tests.test_operators import MODES, run


@pytest.mark.parametrize("mode", MODES)
def test_new_collection_with_an_embedding_function_is_refused_on_a_server_without_functions(
    mode, standalone_conn_id, standalone_client, embeddings, collection_name
):
    function = {"provider": "openai", "model_name": "test-embedding", "dim": 32, "base_url": embeddings.base_url}
    operator = MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=standalone_conn_id,
        collection_name=collection_name,
        documents=[{"page_content": "cats purr", "metadata": {"source": "pets.md"}}],
        replace_by="source",
        new_collection={"embedding_function": function},
    )
    with pytest.raises(
        MilvusProviderError, match=r"\(v2\.3\.5[^)]*\) cannot embed server-side.*Milvus 2\.6\+.*embedding_conn_id"
    ):
        run(operator, mode)
    assert not standalone_client.has_collection(collection_name), "nothing was created"
    assert not standalone_client.has_collection(f"{collection_name}__sources"), "no source ledger either"
    assert embeddings.stats.requests == 0
