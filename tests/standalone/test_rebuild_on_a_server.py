"""The rebuild specifications of tests/test_rebuild.py on a real Milvus standalone 2.3.5 (aliases, switch, rollback)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_rebuild import (
    EMBEDDINGS,
    check_failed_validation_keeps_the_alias,
    check_operators_follow_the_alias,
    check_switch_under_search_load,
)


@pytest.fixture
def server(standalone_conn_id: str, standalone_client: Any, milvus_standalone: Any, embedding_conn_id: str):
    assert embedding_conn_id == EMBEDDINGS
    return standalone_conn_id, standalone_client, milvus_standalone.uri


def test_searches_of_the_alias_never_fail_or_come_back_empty_through_a_rebuild_and_a_rollback(
    server, collection_name, embeddings
):
    conn_id, client, uri = server
    check_switch_under_search_load(conn_id, client, uri, collection_name, embeddings)


def test_a_rebuild_that_fails_validation_leaves_the_alias_and_no_half_built_version(server, collection_name):
    conn_id, client, _ = server
    check_failed_validation_keeps_the_alias(conn_id, client, collection_name)


def test_writes_searches_deletes_and_the_source_ledger_follow_the_alias(server, collection_name):
    conn_id, client, _ = server
    check_operators_follow_the_alias(conn_id, client, collection_name)
