"""Embedding API faults: 429 + Retry-After, 500, dropped connections, wrong key, a key-echoing server."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
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
    reject,
    run_in_thread,
    wait_for,
)

N_DOCS = 600
BATCH_SIZE = 50  # 12 batches
EXPECTED = {d["metadata"]["doc_id"] for d in documents(N_DOCS)}


def _add(conn_id: str, embedding_conn: str, collection: str) -> MilvusAddDocumentsOperator:
    return MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn_id,
        embedding_conn_id=embedding_conn,
        collection_name=collection,
        documents=documents(N_DOCS),
        id_key="doc_id",
        batch_size=BATCH_SIZE,
        max_concurrency=3,
    )


@pytest.mark.parametrize("status", [500, 0], ids=["500", "dropped_connection"])
def test_transient_embedding_errors_are_retried_with_backoff_then_succeed(
    status, milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    embedding_conn = make_embedding_conn(max_retries=2)
    op = _add(shared_conn, embedding_conn, collection_name)
    # The first two requests (the dimension probe, then its retry) fail; the client retries them.
    embeddings.inject(status, 2)
    result = op.execute(context={})
    figures.fault(f"embedding_{status or 'drop'}", embeddings.stats.failures_injected)
    assert_exact_ids(milvus_lite.uri, collection_name, EXPECTED, figures)
    assert embeddings.stats.failures_injected == 2
    assert result["written"] == N_DOCS


class _RecordingProxy:
    """Forwards every request to the embedding server and records when it arrived and how it was answered.

    The record is taken at the server side of the wire, so the gap between a 429 and the client's
    next request is what the client really waited.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.exchanges: list[tuple[float, float, int]] = []  # (arrived, answered, status)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                return

            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                forwarded = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                request = urllib.request.Request(
                    proxy.upstream + self.path.removeprefix("/v1"), data=body, headers=forwarded, method="POST"
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, raw = response.status, response.headers, response.read()
                except urllib.error.HTTPError as error:
                    status, headers, raw = error.code, error.headers, error.read()
                self.send_response(status)
                for key in ("Content-Type", "Retry-After"):
                    if headers.get(key):
                        self.send_header(key, headers[key])
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                proxy.exchanges.append((arrived, time.monotonic(), status))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def recording_proxy(embeddings) -> Iterator[_RecordingProxy]:
    proxy = _RecordingProxy(embeddings.base_url)
    proxy.thread.start()
    yield proxy
    proxy.server.shutdown()
    proxy.server.server_close()


# The OpenAI client's own backoff between retries is 0.5 s, then 1 s (minus up to 25 % jitter), and it
# takes a Retry-After of up to 2 minutes instead. 3 s is well above its own backoff, so a gap of at
# least 3 s after each 429 shows the header was honoured.
RETRY_AFTER = 3.0
OWN_BACKOFF_MAX = 1.0


def test_429_with_retry_after_waits_what_the_server_asked_then_succeeds(
    milvus_lite, shared_conn, make_embedding_conn, embeddings, recording_proxy, collection_name, figures
):
    embedding_conn = make_embedding_conn(max_retries=2, base_url=recording_proxy.base_url)
    embeddings.inject(429, 2, retry_after=RETRY_AFTER)  # the dimension probe and its first retry
    result = _add(shared_conn, embedding_conn, collection_name).execute(context={})
    figures.fault("embedding_429", embeddings.stats.failures_injected)
    assert embeddings.stats.failures_injected == 2
    assert result["written"] == N_DOCS
    exchanges = sorted(recording_proxy.exchanges)
    statuses = [status for _, _, status in exchanges]
    assert statuses[:3] == [429, 429, 200], statuses
    gaps = [exchanges[i + 1][0] - exchanges[i][1] for i in range(2)]  # answered 429 -> next request arrived
    figures.measure("429 + Retry-After 3 s: client waited", ", ".join(f"{gap:.2f} s" for gap in gaps))
    for gap in gaps:
        assert gap >= RETRY_AFTER - 0.05, f"retried after {gap:.2f}s: Retry-After {RETRY_AFTER}s was not honoured"
        assert gap < RETRY_AFTER + 2 * OWN_BACKOFF_MAX + 5, f"waited {gap:.2f}s, far more than asked"
    assert_exact_ids(milvus_lite.uri, collection_name, EXPECTED, figures)


@pytest.mark.parametrize(
    ("status", "keywords"),
    [
        (500, ("embedding API", "500", "after all retries")),
        (429, ("embedding API", "429", "rate-limit")),
        (0, ("embedding API", "unavailable")),
    ],
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
    # One fault per scenario: how many requests hit the injected failures before the retries ran out
    # depends on timing (up to max_concurrency batches in flight), so it is a measurement, not a figure.
    figures.fault(f"embedding_{status or 'drop'}_outlasting_retries")
    figures.measure(
        f"embedding {status or 'drop'} outlasting retries: failed requests", str(embeddings.stats.failures_injected)
    )
    partial = count_entities(milvus_lite.uri, collection_name)
    figures.measure(
        f"embedding {status or 'drop'} outlasting retries: entities written before the failure", str(partial)
    )
    assert "result" not in box, "a summary was returned for a partly written ingest"
    assert isinstance(box["error"], MilvusProviderError), repr(box["error"])
    assert_clear_error(box["error"], *keywords, where=f"embedding {status} outlasting retries")
    assert partial is not None, "expected a partial write, found no collection"
    assert 0 < partial < N_DOCS, f"expected a partial write, found {partial}"

    embeddings.reset_stats()
    embeddings.latency = 0.0
    result = _add(shared_conn, embedding_conn, collection_name).execute(context={})
    assert_exact_ids(milvus_lite.uri, collection_name, EXPECTED, figures)
    # The batches written before the failure are skipped as unchanged; the rest is written.
    assert (result["written"], result["unchanged"]) == (N_DOCS - partial, partial), result


def test_wrong_embedding_api_key_fails_with_401_message_and_writes_nothing(
    milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    embedding_conn = make_embedding_conn(api_key=EMBEDDING_SENTINEL)
    figures.fault("wrong_credentials")
    message = reject(
        figures,
        "wrong embedding API key",
        lambda: _add(shared_conn, embedding_conn, collection_name).execute(context={}),
        "embedding API",
        "API key",
        "401",
        untouched=lambda: count_entities(milvus_lite.uri, collection_name) is None,
    )
    assert "Milvus rejected" not in message, "an embedding 401 must not blame Milvus credentials"


def test_wrong_embedding_api_key_on_search_fails_with_401_message(
    milvus_lite, shared_conn, make_embedding_conn, embeddings, collection_name, figures
):
    _add(shared_conn, make_embedding_conn(), collection_name).execute(context={})
    bad = make_embedding_conn("faults_embeddings_bad", api_key=EMBEDDING_SENTINEL)
    figures.fault("wrong_credentials")
    reject(
        figures,
        "wrong embedding API key (search)",
        lambda: MilvusSearchToXComOperator(
            task_id="search",
            milvus_conn_id=shared_conn,
            embedding_conn_id=bad,
            collection_name=collection_name,
            queries="topic 3",
        ).execute(context={}),
        "embedding API",
        "API key",
        untouched=lambda: count_entities(milvus_lite.uri, collection_name) == N_DOCS,
    )


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
