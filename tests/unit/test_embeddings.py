"""The openai-connection embeddings: the same vectors and errors as the SDK's resource, and a throttled run says so."""

from __future__ import annotations

import asyncio
import logging
import types

import openai
import pytest

from airflow_provider_milvus.embeddings import EmbeddingSettings, build_embeddings

from testing.servers.embeddings_server import EmbeddingServer, embed_text

KEY = "sk-unit-test-key"


@pytest.fixture
def server():
    with EmbeddingServer(dimensions=16, api_key=KEY) as running:
        yield running


def embeddings_for(server: EmbeddingServer, **extra):
    conn = types.SimpleNamespace(conn_type="openai", host=server.base_url, password=KEY, extra_dejson=extra)
    return build_embeddings(EmbeddingSettings(conn_id="unit", model="m"), conn)


def test_vectors_come_back_in_input_order_sync_and_async(server):
    embeddings = embeddings_for(server)
    texts = [f"text {i} words" for i in range(5)]
    expected = [pytest.approx(embed_text(t, 16), abs=1e-6) for t in texts]
    assert asyncio.run(embeddings.aembed_documents(texts)) == expected
    assert embeddings.embed_documents(texts) == expected
    assert embeddings.embed_query(texts[0]) == expected[0]


def test_a_rejected_key_raises_the_sdks_error_class(server):
    conn = types.SimpleNamespace(conn_type="openai", host=server.base_url, password="wrong", extra_dejson={})
    embeddings = build_embeddings(EmbeddingSettings(conn_id="unit", model="m"), conn)
    with pytest.raises(openai.AuthenticationError):
        asyncio.run(embeddings.aembed_documents(["x"]))


def test_a_throttled_request_is_retried_and_logged_as_a_warning_with_what_to_change(server, caplog):
    embeddings = embeddings_for(server, max_retries=2)
    server.inject(429, 1, retry_after=0.1)
    with caplog.at_level(logging.WARNING, logger="airflow_provider_milvus.embeddings"):
        vectors = asyncio.run(embeddings.aembed_documents(["a b c"]))
    assert len(vectors) == 1
    assert server.stats.failures_injected == 1
    (record,) = [r for r in caplog.records if r.name == "airflow_provider_milvus.embeddings"]
    message = record.getMessage()
    assert record.levelno == logging.WARNING
    for words in (
        "throttled (HTTP 429)",
        "asked to wait: 0.1 s (Retry-After)",
        "max_retries",
        "max_concurrency",
        "batch_size",
    ):
        assert words in message, message
