from __future__ import annotations

import pytest
from airflow.models.connection import Connection

from airflow_provider_milvus.exceptions import MilvusProviderError
from airflow_provider_milvus.hooks.milvus import MilvusConnectionSettings, settings_from_connection
from airflow_provider_milvus.local_server import LocalServerError


def conn(**kwargs) -> Connection:
    return Connection(conn_id="m", conn_type="milvus", **kwargs)


def test_host_is_the_uri_and_password_the_token():
    settings = settings_from_connection(conn(host="https://x.zillizcloud.com", password="api-key"))
    assert settings.client_kwargs() == {"uri": "https://x.zillizcloud.com", "timeout": 30.0, "token": "api-key"}


def test_port_is_added_only_when_the_uri_has_none():
    assert settings_from_connection(conn(host="http://milvus", port=19530)).uri == "http://milvus:19530"
    assert settings_from_connection(conn(host="http://milvus:1", port=19530)).uri == "http://milvus:1"


def test_login_and_password_are_sent_as_user_and_password():
    kwargs = settings_from_connection(conn(host="http://m:19530", login="root", password="Milvus")).client_kwargs()
    assert (kwargs["user"], kwargs["password"]) == ("root", "Milvus")
    assert "token" not in kwargs


def test_extras_set_database_tls_and_timeout():
    settings = settings_from_connection(
        conn(host="http://m:19530", extra={"db_name": "prod", "secure": "true", "timeout": "5"})
    )
    assert (settings.db_name, settings.secure, settings.timeout) == ("prod", True, 5.0)


def test_repr_never_shows_secrets():
    settings = MilvusConnectionSettings(uri="http://m", token="sentinel-token", password="sentinel-pw")
    assert "sentinel" not in repr(settings)


def test_missing_uri_says_what_to_set():
    with pytest.raises(MilvusProviderError, match=r"Connection 'm' has no URI: set its host to e\.g\. http://"):
        settings_from_connection(conn())


def test_local_path_without_a_server_says_how_to_start_one(tmp_path):
    with pytest.raises(LocalServerError, match="airflow-milvus-lite start --data-dir"):
        settings_from_connection(conn(host=str(tmp_path / "data")))
