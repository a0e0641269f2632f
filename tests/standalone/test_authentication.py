"""Credentials against a real Milvus standalone server with authentication on.

Milvus Lite ignores tokens, so only a real server can prove that the right token connects and that a
wrong one fails at once with an error that names the credentials (not "did not answer", not a hang,
not a misleading "collection does not exist") and never shows the token.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusHook
from airflow_provider_milvus.operators.milvus import MilvusSearchToXComOperator

if TYPE_CHECKING:
    from testing.servers.milvus_standalone import MilvusStandaloneServer

TIMEOUT = 10  # the connection's timeout (extra.timeout), seconds
MARGIN = 1.0  # over the right token's connect time in the same run: scheduling noise on a loaded machine
CREDENTIALS_HINT = "Milvus rejected the credentials"
WRONG_TOKEN = "root:Wr0ngPassw0rd-7c1e"
WRONG_PASSWORD = "Wr0ngPassw0rd-5d2f"


@pytest.fixture
def connect(milvus_standalone_auth: MilvusStandaloneServer, monkeypatch: pytest.MonkeyPatch):
    """``connect(conn_id, password=..., login=...)``: an Airflow connection to the auth server, by env var."""

    def make(conn_id: str, *, password: str, login: str | None = None) -> str:
        conn = {
            "conn_type": "milvus",
            "host": milvus_standalone_auth.uri,
            "password": password,
            "extra": {"timeout": TIMEOUT},
        }
        if login is not None:
            conn["login"] = login
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
        return conn_id

    return make


def test_the_right_token_connects(connect, milvus_standalone_auth):
    ok, message = MilvusHook(connect("milvus_auth_ok", password=milvus_standalone_auth.token)).test_connection()
    assert ok, message
    assert "Connected to Milvus v2.3" in message


def test_login_and_password_fields_connect(connect):
    ok, message = MilvusHook(connect("milvus_auth_user", login="root", password="Milvus")).test_connection()
    assert ok, message


def test_a_wrong_token_fails_fast(connect, milvus_standalone_auth):
    """A rejected token returns in about the time a good one takes to connect, far below the timeout.

    Measured on the 2-core dev machine: 0.004-0.04 s for the rejection, against a 10 s timeout. The
    bound is the right token's connect time in this same run plus a margin, capped at a fifth of the
    timeout, so a rejection that waited for (most of) the timeout fails the test.
    """
    good = MilvusHook(connect("milvus_auth_good", password=milvus_standalone_auth.token))
    started = time.monotonic()
    ok, message = good.test_connection()
    baseline = time.monotonic() - started
    assert ok, message

    hook = MilvusHook(connect("milvus_auth_wrong", password=WRONG_TOKEN))
    started = time.monotonic()
    ok, _message = hook.test_connection()
    elapsed = time.monotonic() - started
    assert not ok
    bound = min(TIMEOUT / 5, baseline + MARGIN)
    assert elapsed < bound, (
        f"rejected after {elapsed:.2f}s (bound {bound:.2f}s; the right token connected in {baseline:.2f}s, "
        f"timeout {TIMEOUT}s): a rejected token must not wait for the timeout"
    )


def test_a_wrong_token_names_the_credentials_and_hides_the_token(connect):
    ok, message = MilvusHook(connect("milvus_auth_wrong", password=WRONG_TOKEN)).test_connection()
    assert not ok
    assert CREDENTIALS_HINT in message, message
    assert "did not answer" not in message, message
    assert WRONG_TOKEN not in message, message
    assert WRONG_TOKEN.split(":")[1] not in message, message


def test_a_wrong_password_in_the_password_field_names_the_credentials(connect):
    ok, message = MilvusHook(connect("milvus_auth_badpw", login="root", password=WRONG_PASSWORD)).test_connection()
    assert not ok
    assert CREDENTIALS_HINT in message, message
    assert WRONG_PASSWORD not in message, message


def test_an_operator_with_a_wrong_token_names_the_credentials_not_the_collection(connect):
    operator = MilvusSearchToXComOperator(
        task_id="search",
        milvus_conn_id=connect("milvus_auth_op", password=WRONG_TOKEN),
        collection_name="no_such_collection",
        queries="anything",
    )
    with pytest.raises(MilvusProviderError) as raised:
        operator.execute(context={})
    message = str(raised.value)
    assert CREDENTIALS_HINT in message, message
    assert "does not exist" not in message.lower(), message
    assert "not found" not in message.lower(), message
    assert WRONG_TOKEN not in message, message
    assert WRONG_TOKEN.split(":")[1] not in message, message
