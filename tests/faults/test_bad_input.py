"""Bad input is rejected with a message naming the problem, and nothing is written or deleted.

Each input is counted by how it ends (``tests/faults/report.py``): rejected with a message, handled as
a documented no-op (an empty document list), or accepted as data (injection payloads are matched
literally and delete nothing, a value that really contains quotes, a re-typed metadata value, ...).
"""

from __future__ import annotations

import datetime
import logging
import socket
import time

import pytest

from airflow_provider_milvus.exceptions import TLS_HINT, MilvusProviderError
from airflow_provider_milvus.operators.milvus import (
    MilvusAddDocumentsOperator,
    MilvusDeleteByExprOperator,
    MilvusSearchToXComOperator,
)

from tests.faults.conftest import (
    assert_exact_ids,
    count_entities,
    documents,
    reject,
)
from tests.faults.report import ACCEPTED, MISHANDLED, NOOP

N_SEED = 40
SEED = documents(N_SEED)
SEED_IDS = {d["metadata"]["doc_id"] for d in SEED}


@pytest.fixture
def seeded(milvus_lite, shared_conn, embedding_conn, embeddings, collection_name) -> str:
    """A 32-dim collection holding ``SEED``; returns its name."""
    MilvusAddDocumentsOperator(
        task_id="seed",
        milvus_conn_id=shared_conn,
        embedding_conn_id=embedding_conn,
        collection_name=collection_name,
        documents=SEED,
        id_key="doc_id",
    ).execute(context={})
    return collection_name


def _rejected(figures, name: str, run, *keywords: str, untouched) -> str:
    """Recorded from what happened (rejected, message, data unchanged), then asserted: ``conftest.reject``."""
    return reject(figures, name, run, *keywords, untouched=untouched)


def absent(uri: str, collection: str):
    """Nothing was created."""
    return lambda: count_entities(uri, collection) is None


def holds(uri: str, collection: str, n: int):
    """The collection still holds exactly ``n`` entities."""
    return lambda: count_entities(uri, collection) == n


def _add(conn, emb, collection, docs, **kwargs):
    return MilvusAddDocumentsOperator(
        task_id="add",
        milvus_conn_id=conn,
        embedding_conn_id=emb,
        collection_name=collection,
        documents=docs,
        **kwargs,
    ).execute(context={})


def _delete(conn, collection, expr, **kwargs):
    # No embedding connection: a delete needs no model, even on a dense-only collection.
    return MilvusDeleteByExprOperator(
        task_id="delete", milvus_conn_id=conn, collection_name=collection, expr=expr, **kwargs
    ).execute(context={})


def _search(conn, emb, collection, queries, **kwargs):
    return MilvusSearchToXComOperator(
        task_id="search",
        milvus_conn_id=conn,
        embedding_conn_id=emb,
        collection_name=collection,
        queries=queries,
        **kwargs,
    ).execute(context={})


# -- unknown collection -------------------------------------------------------------------------------------


def test_delete_from_unknown_collection_is_rejected_and_not_created(milvus_lite, shared_conn, embedding_conn, figures):
    _rejected(
        figures,
        "delete: unknown collection",
        lambda: _delete(shared_conn, "no_such_coll", 'source == "x"'),
        "no_such_coll",
        "does not exist",
        untouched=absent(milvus_lite.uri, "no_such_coll"),
    )
    assert count_entities(milvus_lite.uri, "no_such_coll") is None


def test_search_unknown_collection_is_rejected_and_not_created(
    milvus_lite, shared_conn, embedding_conn, embeddings, figures
):
    _rejected(
        figures,
        "search: unknown collection",
        lambda: _search(shared_conn, embedding_conn, "no_such_coll", "x"),
        "no_such_coll",
        "does not exist",
        untouched=absent(milvus_lite.uri, "no_such_coll"),
    )
    assert count_entities(milvus_lite.uri, "no_such_coll") is None


# -- filters --------------------------------------------------------------------------------------------------


def test_invalid_filter_expression_on_delete_is_rejected_and_deletes_nothing(
    milvus_lite, shared_conn, embedding_conn, seeded, figures
):
    message = _rejected(
        figures,
        "delete: invalid filter",
        lambda: _delete(shared_conn, seeded, 'source === "a" and ('),
        "filter",
        "invalid",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert "credentials" not in message, "a parse error must not be blamed on credentials"
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


def test_invalid_filter_expression_on_search_is_rejected_with_filter_hint(
    milvus_lite, shared_conn, embedding_conn, seeded, figures
):
    message = _rejected(
        figures,
        "search: invalid filter",
        lambda: _search(shared_conn, embedding_conn, seeded, "topic", expr="n >>> 3"),
        "filter expression is invalid",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert "credentials" not in message


def test_filter_placeholder_without_value_is_rejected(milvus_lite, shared_conn, seeded, figures):
    _rejected(
        figures,
        "delete: placeholder without expr_params",
        lambda: _delete(shared_conn, seeded, "source == {src}"),
        "{src}",
        "expr_params",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


def test_match_everything_delete_is_refused_without_allow_delete_all(milvus_lite, shared_conn, seeded, figures):
    _rejected(
        figures,
        "delete: filter matching everything",
        lambda: _delete(shared_conn, seeded, "n >= 0"),
        "matches all",
        "allow_delete_all",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


def test_empty_filter_delete_is_refused_without_allow_delete_all(milvus_lite, shared_conn, seeded, figures):
    _rejected(
        figures,
        "delete: empty filter",
        lambda: _delete(shared_conn, seeded, ""),
        "empty filter",
        "allow_delete_all",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


@pytest.mark.parametrize(
    "payload",
    [
        'x" or pk != "',
        "x' or pk != '",
        'x\\" or pk != \\"',
        '" || true || "',
        'doc/1.md") or (n >= 0',
        'x"] or pk != ["',
    ],
    ids=["double_quote", "single_quote", "escaped_quote", "or_true", "paren", "bracket"],
)
def test_quote_injection_via_expr_params_deletes_nothing_else(payload, milvus_lite, shared_conn, seeded, figures):
    result = _delete(shared_conn, seeded, "source == {src}", expr_params={"src": payload})
    listed = _delete(shared_conn, seeded, "source in {srcs}", expr_params={"srcs": [payload, payload + "x"]})
    literal = (result["matched"], result["deleted"], listed["deleted"]) == (0, 0, 0)
    intact = count_entities(milvus_lite.uri, seeded) == N_SEED
    # Matched literally, deleting nothing: accepted as data. Recorded before it is asserted.
    figures.bad_input(f"delete: injection {payload!r}", ACCEPTED if literal and intact else MISHANDLED)
    assert literal, (result, listed)
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


def test_delete_needs_no_embedding_api_even_while_it_is_down(milvus_lite, shared_conn, embeddings, seeded, figures):
    embeddings.reset_stats()
    embeddings.inject(500, 1000)
    result = _delete(shared_conn, seeded, "source == {src}", expr_params={"src": "doc/1.md"})
    embeddings.reset_stats()
    figures.bad_input(
        "delete: embedding API down (delete must not need it)", ACCEPTED if result["deleted"] == 1 else MISHANDLED
    )
    assert result["deleted"] == 1
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS - {"doc-000001"}, figures)


def test_expr_params_value_with_quotes_matches_only_that_literal(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    """The same machinery deletes exactly the entity whose value really contains the quotes."""
    tricky = 'x" or pk != "'
    docs = [*SEED, {"page_content": "quoted", "metadata": {"doc_id": "quoted", "source": tricky, "n": -1}}]
    _add(shared_conn, embedding_conn, collection_name, docs, id_key="doc_id")
    deleted = _delete(shared_conn, collection_name, "source == {src}", expr_params={"src": tricky})["deleted"]
    figures.bad_input("delete: value containing quotes (legitimate)", ACCEPTED if deleted == 1 else MISHANDLED)
    assert deleted == 1
    assert_exact_ids(milvus_lite.uri, collection_name, SEED_IDS, figures)


# -- vectors, documents, metadata -----------------------------------------------------------------------------


def test_wrong_vector_dimension_write_is_rejected_and_writes_nothing(
    milvus_lite, shared_conn, embedding_conn, seeded, figures
):
    _rejected(
        figures,
        "write: 16-dim embeddings into a 32-dim collection",
        lambda: _add(shared_conn, embedding_conn, seeded, ["another doc"], embedding_dimensions=16),
        "dimension mismatch",
        "32",
        "16",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS, figures)


def test_wrong_vector_dimension_search_is_rejected(milvus_lite, shared_conn, embedding_conn, seeded, figures):
    _rejected(
        figures,
        "search: 16-dim query against a 32-dim collection",
        lambda: _search(shared_conn, embedding_conn, seeded, "topic", embedding_dimensions=16),
        "dimension mismatch",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )


def test_empty_document_list_is_a_logged_noop(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures, caplog, capfd
):
    with caplog.at_level(logging.INFO):
        result = _add(shared_conn, embedding_conn, collection_name, [])
    captured = capfd.readouterr()  # the task logger is structlog: it may print instead of propagating
    logged = "No documents given" in caplog.text + captured.out + captured.err
    created = count_entities(milvus_lite.uri, collection_name) is not None
    noop = (result["written"], result["chunks"], embeddings.stats.requests, created) == (0, 0, 0, False)
    figures.bad_input("write: empty document list", NOOP if noop and logged else MISHANDLED)
    assert result["written"] == 0
    assert result["chunks"] == 0
    assert logged
    assert embeddings.stats.requests == 0
    assert not created, "an empty write created the collection"


@pytest.mark.parametrize(
    "doc",
    [{"metadata": {"a": 1}}, {"page_content": "   "}, {"page_content": None}, {"page_content": 42}, 7],
    ids=["missing", "blank", "none", "number", "not_a_document"],
)
def test_document_without_text_is_rejected_and_writes_nothing(
    doc, milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    _rejected(
        figures,
        f"write: document without text {doc!r}",
        lambda: _add(shared_conn, embedding_conn, collection_name, ["fine", doc]),
        "document 1",
        untouched=absent(milvus_lite.uri, collection_name),
    )
    assert count_entities(milvus_lite.uri, collection_name) is None
    assert embeddings.stats.requests == 0, "rejected input still reached the embedding API"


def test_text_longer_than_new_collection_varchar_limit_is_rejected_before_anything_is_written(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    _rejected(
        figures,
        "write: text longer than text_max_length",
        lambda: _add(shared_conn, embedding_conn, collection_name, ["short", "x" * 200], text_max_length=64),
        "200 bytes",
        "at most 64",
        "chunk_size",
        untouched=absent(milvus_lite.uri, collection_name),
    )
    assert count_entities(milvus_lite.uri, collection_name) is None


def test_text_longer_than_existing_collection_varchar_limit_is_rejected_and_writes_nothing(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    _add(shared_conn, embedding_conn, collection_name, SEED[:5], id_key="doc_id", text_max_length=64)
    # The operator's own limit is the default 65535: the collection's real 64-byte limit must apply.
    _rejected(
        figures,
        "write: text longer than the existing collection's VARCHAR",
        lambda: _add(shared_conn, embedding_conn, collection_name, ["fine", "é" * 40]),
        "80 bytes",
        "at most 64",
        untouched=holds(milvus_lite.uri, collection_name, 5),
    )
    assert_exact_ids(milvus_lite.uri, collection_name, {d["metadata"]["doc_id"] for d in SEED[:5]}, figures)


@pytest.mark.parametrize(
    "value",
    [datetime.datetime(2024, 1, 1), float("nan"), float("inf"), {1, 2}, b"bytes", object()],
    ids=["datetime", "nan", "inf", "set", "bytes", "object"],
)
def test_metadata_not_jsonable_is_rejected_and_writes_nothing(
    value, milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    docs = [{"page_content": "ok", "metadata": {"k": 1}}, {"page_content": "bad", "metadata": {"k": value}}]
    _rejected(
        figures,
        f"write: metadata {type(value).__name__}",
        lambda: _add(shared_conn, embedding_conn, collection_name, docs),
        "metadata 'k'",
        "JSON",
        untouched=absent(milvus_lite.uri, collection_name),
    )
    assert count_entities(milvus_lite.uri, collection_name) is None


def test_metadata_key_not_a_string_is_rejected(
    milvus_lite, shared_conn, embedding_conn, embeddings, collection_name, figures
):
    _rejected(
        figures,
        "write: non-string metadata key",
        lambda: _add(shared_conn, embedding_conn, collection_name, [{"page_content": "x", "metadata": {1: "a"}}]),
        "metadata key",
        "not a string",
        untouched=absent(milvus_lite.uri, collection_name),
    )
    assert count_entities(milvus_lite.uri, collection_name) is None


def test_metadata_type_change_is_stored_as_is_in_the_dynamic_field(
    milvus_lite, shared_conn, embedding_conn, seeded, figures
):
    """Decided behaviour: metadata lives in Milvus's dynamic JSON field, which has no per-key type.

    A key whose type changes between documents (``n``: int, then str) is stored as given; a typed
    comparison (``n > 30``) simply does not match the string value, and nothing errors.
    """
    changed = [{"page_content": "typed differently", "metadata": {"doc_id": "typed", "source": "t", "n": "thirty"}}]
    _add(shared_conn, embedding_conn, seeded, changed, id_key="doc_id")
    hits = _search(shared_conn, embedding_conn, seeded, "typed differently", expr="n > 30", k=100)
    matched = _delete(shared_conn, seeded, 'n == "thirty"', dry_run=True)["matched"]
    stored = {h["metadata"]["n"] for h in hits} == set(range(31, N_SEED)) and matched == 1
    figures.bad_input("write: metadata whose type changed (int -> str)", ACCEPTED if stored else MISHANDLED)
    assert {h["metadata"]["n"] for h in hits} == set(range(31, N_SEED))
    assert matched == 1
    # Re-typing an existing record (upsert of the same id) replaces it: one entity, the new type.
    _add(
        shared_conn,
        embedding_conn,
        seeded,
        [{**SEED[0], "metadata": {**SEED[0]["metadata"], "n": "zero"}}],
        id_key="doc_id",
    )
    assert _delete(shared_conn, seeded, 'n == "zero"', dry_run=True)["matched"] == 1
    assert_exact_ids(milvus_lite.uri, seeded, SEED_IDS | {"typed"}, figures)


def test_empty_query_is_rejected(milvus_lite, shared_conn, embedding_conn, seeded, figures):
    _rejected(
        figures,
        "search: empty query",
        lambda: _search(shared_conn, embedding_conn, seeded, ["ok", "  "]),
        "query 1",
        "empty",
        untouched=holds(milvus_lite.uri, seeded, N_SEED),
    )


# -- credentials and transport --------------------------------------------------------------------------------


def test_milvus_lite_ignores_tokens_so_wrong_milvus_credentials_cannot_be_tested_here(milvus_lite, figures):
    """Documented: Milvus Lite accepts any token; wrong credentials are tested via the embedding key (401)."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_lite.uri, token="wrong:credentials")
    try:
        listed = client.list_collections()
    finally:
        client.close()
    figures.bad_input(
        "milvus: wrong token against Milvus Lite (Lite has no auth)",
        ACCEPTED if isinstance(listed, list) else MISHANDLED,
    )
    assert isinstance(listed, list)


DEAD_SERVER_HINT = "Milvus did not answer"
TLS_TIMEOUT = 10.0


def _dead_port() -> int:
    """A port that was free a moment ago: nothing listens on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_https_to_a_plain_milvus_port_fails_fast_with_tls_message(
    milvus_lite, make_milvus_conn, embedding_conn, embeddings, collection_name, figures
):
    """The TLS-specific advice, not the generic "did not answer" one (which also mentions https://).

    Fast means: about as fast as a refused connection measured just before in the same test (which
    also pays for the connection lookup and client setup), and far below the connection timeout.
    """
    dead = make_milvus_conn(f"http://127.0.0.1:{_dead_port()}", "faults_dead", timeout=TLS_TIMEOUT)
    started = time.monotonic()
    with pytest.raises(MilvusProviderError, match=DEAD_SERVER_HINT):
        _add(dead, embedding_conn, collection_name, ["x"])
    baseline = time.monotonic() - started

    conn_id = make_milvus_conn(milvus_lite.uri.replace("http://", "https://"), timeout=TLS_TIMEOUT)
    started = time.monotonic()
    message = _rejected(
        figures,
        "milvus: https:// to a plain port",
        lambda: _add(conn_id, embedding_conn, collection_name, ["x"]),
        TLS_HINT,
        "handshake failed",
        untouched=absent(milvus_lite.uri, collection_name),
    )
    elapsed = time.monotonic() - started
    figures.measure(
        "https:// to a plain port: failed after",
        f"{elapsed:.2f} s (refused connection in the same run: {baseline:.2f} s; timeout 10 s)",
    )
    assert DEAD_SERVER_HINT not in message, f"a TLS mismatch reported as a dead server: {message}"
    bound = min(TLS_TIMEOUT / 4, baseline + 2.0)
    assert elapsed < bound, f"TLS mismatch took {elapsed:.2f}s (bound {bound:.2f}s, refused: {baseline:.2f}s)"
    assert count_entities(milvus_lite.uri, collection_name) is None


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_dead_port_is_not_reported_as_a_tls_mismatch(
    scheme, milvus_lite, make_milvus_conn, embedding_conn, embeddings, collection_name, figures
):
    """Nothing listens: the generic advice, never the TLS one (so the test above can tell them apart)."""
    conn_id = make_milvus_conn(f"{scheme}://127.0.0.1:{_dead_port()}", timeout=5)
    message = _rejected(
        figures,
        f"milvus: {scheme}:// to a dead port",
        lambda: _add(conn_id, embedding_conn, collection_name, ["x"]),
        DEAD_SERVER_HINT,
        untouched=absent(milvus_lite.uri, collection_name),
    )
    assert TLS_HINT not in message, message
    assert "handshake" not in message.lower(), message
