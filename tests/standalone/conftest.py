"""A real Milvus standalone server (PyPI ``milvus`` 2.3.5), installed by scripts/install_milvus_standalone.sh."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.servers.milvus_standalone import MilvusStandaloneServer
from tests.conftest import milvus_connection_json, require_standalone_executable


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/standalone/" in str(item.path):
            item.add_marker(pytest.mark.standalone)


@pytest.fixture(scope="session")
def milvus_standalone_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusStandaloneServer]:
    """A second server with authentication on: every call needs a token (root:Milvus, ``server.token``)."""
    executable = require_standalone_executable()
    with MilvusStandaloneServer(
        data_dir=tmp_path_factory.mktemp("milvus-standalone-auth"), executable=executable, authorization=True
    ) as server:
        yield server


@pytest.fixture
def standalone_conn_id(milvus_standalone: MilvusStandaloneServer, monkeypatch: pytest.MonkeyPatch) -> str:
    # root:Milvus is the default credential; 2.3.5 runs with auth off and accepts it.
    monkeypatch.setenv(
        "AIRFLOW_CONN_MILVUS_STANDALONE",
        milvus_connection_json(milvus_standalone.uri),
    )
    return "milvus_standalone"


@pytest.fixture
def standalone_client(milvus_standalone: MilvusStandaloneServer) -> Iterator[object]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_standalone.uri)
    yield client
    client.close()
