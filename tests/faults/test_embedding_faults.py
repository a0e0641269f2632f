"""Embedding API faults: 429 + Retry-After, 500, dropped connections, wrong key, a key-echoing server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusSearchToXComOperator,
)
from tests.faults.conftest import (
    EMBEDDING_SENTINEL,
    assert_clear_error,
    assert_exact_ids,
    count_entities,
    documents,
    run_in_thread,
    wait_for,
)

N_DOCS = 600
BATCH_SIZE = 50  # 12 batches
EXPECTED = {d["metadata"]["doc_id"] for d in documents(N_DOCS)}


def _add(conn_id: str, embedding_conn: str, collection: str) -> MilvusAddDocumentsOperator:
    return MilvusAddDocumentsOperator(
        task_id="add", milvus_conn_id=conn_id, embedding_conn_id=embedding_conn, collection_name=collection,
        documents=documents(N_DOCS), id_key="doc_id", batch_size=BATCH_SIZE, max_concurrency=3,
    )


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [(429, 1.0), (500, None), (0, None)],
    ids=["429_with_retry_after", "500", "dropped_connection"],
)
def test_transient_embedding_errors_are_retried_with_backoff_then_succeed(
    status, retry_after, milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    embedding_conn = make_embedding_conn(max_retries=2)
    op = _add(shared_conn, embedding_conn, collection_name)
    # The first two requests (the dimension probe, then a batch) fail; the client retries them.
    embeddings.inject(status, 2, retry_after=retry_after)
    started = time.monotonic()
    result = op.execute(context={})
    elapsed = time.monotonic() - started
    figures.fault(f"embedding_{status or 'drop'}", embeddings.stats.failures_injected)
    assert embeddings.stats.failures_injected == 2
    assert result["written"] == N_DOCS
    if retry_after:
        assert elapsed >= retry_after, "Retry-After was not honoured"
    assert_exact_ids(milvus_lite.uri, collection_name, EXPECTED, figures)


@pytest.mark.parametrize(
    ("status", "keywords"),
    [(500, ("embedding API", "500", "after all retries")),
     (429, ("embedding API", "429", "rate-limit")),
     (0, ("embedding API", "unavailable"))],
    ids=["500", "429", "dropped_connection"],
)
def test_embedding_errors_outlasting_retries_mid_ingest_fail_clearly_then_rerun_completes(
    status, keywords, milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    embedding_conn = make_embedding_conn(max_retries=1)
    embeddings.latency = 0.02
    thread, box = run_in_thread(lambda: _add(shared_conn, embedding_conn, collection_name).execute(context={}))
    wait_for(lambda: embeddings.stats.requests >= 5, what="first batches")  # probe + a few batches written
    embeddings.inject(status, 1000, retry_after=0.05 if status == 429 else None)
    thread.join(60)
    assert not thread.is_alive()
    figures.fault(f"embedding_{status or 'drop'}", embeddings.stats.failures_injected)
    assert "result" not in box, "a summary was returned for a partly written ingest"
    assert isinstance(box["error"], MilvusProviderError), repr(box["error"])
    assert_clear_error(box["error"], *keywords, where=f"embedding {status} outlasting retries")
    partial = count_entities(milvus_lite.uri, collection_name)
    assert partial is not None and 0 < partial < N_DOCS, f"expected a partial write, found {partial}"

    embeddings.reset_stats()
    embeddings.latency = 0.0
    assert _add(shared_conn, embedding_conn, collection_name).execute(context={})["written"] == N_DOCS
    assert_exact_ids(milvus_lite.uri, collection_name, EXPECTED, figures)


def test_wrong_embedding_api_key_fails_with_401_message_and_writes_nothing(
    milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    embedding_conn = make_embedding_conn(api_key=EMBEDDING_SENTINEL)
    with pytest.raises(MilvusProviderError) as error:
        _add(shared_conn, embedding_conn, collection_name).execute(context={})
    figures.fault("wrong_credentials")
    figures.bad_input("wrong embedding API key")
    message = assert_clear_error(error.value, "embedding API", "API key", "401", where="wrong embedding key")
    assert "Milvus rejected" not in message, "an embedding 401 must not blame Milvus credentials"
    assert count_entities(milvus_lite.uri, collection_name) is None, "collection created despite the failure"


def test_wrong_embedding_api_key_on_search_fails_with_401_message(
    milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    _add(shared_conn, make_embedding_conn(), collection_name).execute(context={})
    bad = make_embedding_conn("faults_embeddings_bad", api_key=EMBEDDING_SENTINEL)
    with pytest.raises(MilvusProviderError) as error:
        MilvusSearchToXComOperator(
            task_id="search", milvus_conn_id=shared_conn, embedding_conn_id=bad, collection_name=collection_name,
            queries="topic 3",
        ).execute(context={})
    figures.fault("wrong_credentials")
    figures.bad_input("wrong embedding API key (search)")
    assert_clear_error(error.value, "embedding API", "API key", where="wrong embedding key search")


class _EchoingAuthServer:
    """An OpenAI-compatible endpoint that rejects every key and echoes it back in the error (some do)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                key = self.headers.get("Authorization", "").removeprefix("Bearer ")
                raw = json.dumps({"error": {"message": f"Incorrect API key provided: {key}"}}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def echoing_server() -> Iterator[_EchoingAuthServer]:
    server = _EchoingAuthServer()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_embedding_error_echoing_the_api_key_is_redacted(
    milvus_lite, shared_conn, make_embedding_conn, echoing_server, collection_name, figures
):
    conn = make_embedding_conn(api_key=EMBEDDING_SENTINEL, base_url=echoing_server.base_url)
    with pytest.raises(MilvusProviderError) as error:
        _add(shared_conn, conn, collection_name).execute(context={})
    figures.fault("key_echoing_api")
    assert_clear_error(error.value, "embedding API", "401", "***", where="key-echoing embedding API")
