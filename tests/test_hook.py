"""MilvusHook against a real Milvus Lite gRPC server and a real loopback embeddings API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.local_server import LocalServerError, start_local_server, stop_local_server

from tests.conftest import milvus_connection_json


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_test_connection_succeeds_against_a_running_server(milvus_conn_id):
    ok, message = MilvusHook(milvus_conn_id).test_connection()
    assert ok, message
    assert "Connected to Milvus" in message


def test_test_connection_fails_fast_and_clearly_on_a_closed_port(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MILVUS_CLOSED", milvus_connection_json(f"http://127.0.0.1:{closed_port()}", timeout=3)
    )
    started = time.monotonic()
    ok, message = MilvusHook("milvus_closed").test_connection()
    assert not ok
    assert "Milvus did not answer" in message
    assert time.monotonic() - started < 10


def test_test_connection_never_prints_the_token(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MILVUS_SECRET",
        json.dumps(
            {
                "conn_type": "milvus",
                "host": f"http://127.0.0.1:{closed_port()}",
                "password": "sentinel-token-4242",
                "extra": {"timeout": 2},
            }
        ),
    )
    ok, message = MilvusHook("milvus_secret").test_connection()
    assert not ok
    assert "sentinel-token-4242" not in message


def test_local_path_resolves_to_the_shared_server(milvus_lite, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_LOCAL", milvus_connection_json(milvus_lite.data_dir))
    hook = MilvusHook("milvus_local")
    assert hook.settings.uri == milvus_lite.uri
    assert hook.test_connection()[0]


def test_local_path_locked_by_another_process_names_the_problem(tmp_path, monkeypatch):
    data_dir = tmp_path / "locked"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from milvus_lite.db import MilvusLite; MilvusLite(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        monkeypatch.setenv("AIRFLOW_CONN_MILVUS_LOCKED", milvus_connection_json(str(data_dir)))
        with pytest.raises(LocalServerError, match="locked by another process"):
            MilvusHook("milvus_locked").settings
        with pytest.raises(LocalServerError, match="locked by another process"):
            start_local_server(data_dir)
    finally:
        holder.kill()
        holder.wait()


def test_starting_the_shared_server_twice_reuses_it(tmp_path):
    first = start_local_server(tmp_path / "d")
    try:
        assert start_local_server(tmp_path / "d") == first
    finally:
        assert stop_local_server(tmp_path / "d")


def test_vector_store_with_embeddings_round_trips(milvus_conn_id, embedding_conn_id, collection_name, embeddings):
    store = MilvusHook(milvus_conn_id).get_vector_store(collection_name, embedding_conn_id=embedding_conn_id)
    store.add_texts(["milvus stores vectors", "airflow schedules tasks"], ids=["a", "b"])
    hits = store.similarity_search("schedules tasks", k=1)
    assert hits[0].page_content == "airflow schedules tasks"
    assert embeddings.stats.requests >= 2


def test_vector_store_without_embeddings_uses_bm25(milvus_conn_id, collection_name, milvus_client):
    store = MilvusHook(milvus_conn_id).get_vector_store(collection_name)
    store.add_texts(["full text search with bm25", "dense vectors need a model"], ids=["a", "b"])
    assert store.similarity_search("bm25 full text", k=1)[0].page_content == "full text search with bm25"
    fields = {f["name"] for f in milvus_client.describe_collection(collection_name)["fields"]}
    assert {"pk", "text", "sparse"} <= fields
    assert "vector" not in fields


def test_create_collection_refuses_a_name_a_milvus_server_refuses(milvus_conn_id, milvus_client):
    """Milvus Lite would create ``my-coll``; a real Milvus would not: refused on every server."""
    from airflow_provider_milvus.exceptions import MilvusProviderError

    with pytest.raises(MilvusProviderError, match="'my-coll' is refused by Milvus servers.*'my_coll'"):
        MilvusHook(milvus_conn_id).create_collection("my-coll")
    assert not milvus_client.has_collection("my-coll")


def test_create_collection_records_the_embedding_model_as_the_operators_do(
    milvus_conn_id, embedding_conn_id, collection_name, milvus_client
):
    from airflow_provider_milvus.core.schema import EMBEDDING_PROPERTY
    from airflow_provider_milvus.exceptions import MilvusProviderError
    from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator

    from tests.conftest import EMBEDDING_DIMENSIONS
    from tests.test_operators import run

    def recorded(name: str) -> dict:
        return json.loads(milvus_client.describe_collection(name)["properties"][EMBEDDING_PROPERTY])

    def add(name: str, model: str) -> None:
        documents = [{"page_content": "airflow schedules tasks", "metadata": {"source": "a.md"}}]
        store = dict(milvus_conn_id=milvus_conn_id, embedding_conn_id=embedding_conn_id, embedding_model=model)
        run(MilvusAddDocumentsOperator(task_id="add", collection_name=name, documents=documents, **store), "inline")

    hook = MilvusHook(milvus_conn_id)
    hook.create_collection(collection_name, embedding_conn_id=embedding_conn_id, embedding_model="model-one")
    by_operator = f"{collection_name}_op"
    add(by_operator, "model-one")
    assert recorded(collection_name) == recorded(by_operator)
    assert recorded(collection_name) == {"kind": "openai", "model": "model-one", "dimensions": EMBEDDING_DIMENSIONS}
    with pytest.raises(MilvusProviderError, match="built with embedding model 'model-one'.*uses 'model-two'"):
        add(collection_name, "model-two")
    with pytest.raises(MilvusProviderError, match="'model-one'.*'model-two'"):
        hook.get_vector_store(collection_name, embedding_conn_id=embedding_conn_id, embedding_model="model-two")
