"""Consistency on a real server (Milvus Lite ignores the level): what this package creates, what a search sends.

Collections made here are Strong, so a search that names no level reads everything written before it
(a write task and a search task run in different processes). A search with no ``consistency_level``
must then send none, so the collection's own level applies; ``consistency_level="Bounded"`` must send
Bounded. The requests are observed on the wire: a grpc.aio client interceptor on the channel pymilvus
opens records every ``Search`` request it sends to the server.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from airflow_provider_milvus.core.ledger import ledger_name
from airflow_provider_milvus.operators.milvus import MilvusAddDocumentsOperator, MilvusSearchToXComOperator

from tests.test_operators import docs

STRONG, BOUNDED = 0, 2  # common.proto ConsistencyLevel


class RecordingInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """Records (method, request) of every unary call; the call itself goes on to the server unchanged."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        self.calls.append((method.decode() if isinstance(method, bytes) else method, request))
        return await continuation(client_call_details, request)

    def requests(self, name: str) -> list[Any]:
        return [request for method, request in self.calls if method.endswith(f"/{name}")]


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> RecordingInterceptor:
    """Every async channel opened from now on (the provider's searches run inline, in this process) records."""
    interceptor = RecordingInterceptor()
    original = grpc.aio.insecure_channel

    def channel(target, options=None, compression=None, interceptors=None):
        return original(
            target, options=options, compression=compression, interceptors=[*(interceptors or []), interceptor]
        )

    monkeypatch.setattr(grpc.aio, "insecure_channel", channel)
    return interceptor


@pytest.fixture
def written(standalone_conn_id, embedding_conn_id, collection_name) -> str:
    MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=standalone_conn_id,
        embedding_conn_id=embedding_conn_id,
        collection_name=collection_name,
        documents=docs(20),
        replace_by="source",
    ).execute(context={})
    return collection_name


def test_collections_made_here_and_their_ledger_are_strong(written, standalone_client):
    levels = {
        name: standalone_client.describe_collection(name)["consistency_level"]
        for name in (written, ledger_name(written))
    }
    assert levels == {written: STRONG, ledger_name(written): STRONG}


def search(conn_id: str, embedding_conn_id: str, collection: str, **kwargs: Any) -> list:
    return MilvusSearchToXComOperator(
        task_id="s",
        milvus_conn_id=conn_id,
        embedding_conn_id=embedding_conn_id,
        collection_name=collection,
        queries=["airflow tasks", "milvus vectors"],
        k=3,
        deferrable=False,
        **kwargs,
    ).execute(context={})


def test_a_search_without_a_level_sends_none(written, standalone_conn_id, embedding_conn_id, wire):
    hits = search(standalone_conn_id, embedding_conn_id, written)
    sent = [(r.use_default_consistency, r.consistency_level) for r in wire.requests("Search")]
    assert sent == [(True, STRONG)], "one request, asking for the collection's own level (and naming none)"
    assert [len(h) for h in hits] == [3, 3]


def test_a_bounded_search_sends_bounded(written, standalone_conn_id, embedding_conn_id, wire):
    hits = search(standalone_conn_id, embedding_conn_id, written, consistency_level="Bounded")
    sent = [(r.use_default_consistency, r.consistency_level) for r in wire.requests("Search")]
    assert sent == [(False, BOUNDED)]
    assert [len(h) for h in hits] == [3, 3]
