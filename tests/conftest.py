"""Fixtures that start real servers on loopback: Milvus Lite (gRPC) and an OpenAI-compatible embeddings API."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Airflow reads its home at import time: give the test process its own before anything imports it, whatever the
# developer's shell says (a real AIRFLOW_HOME must never receive the tests' connections, runs and DB migrations).
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-provider-milvus-home-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"

import pytest

from airflow_provider_milvus.local_server import LocalServer, start_local_server, stop_local_server

from testing.airflow_cli import AirflowCLI
from testing.servers.embeddings_server import EmbeddingServer

EMBEDDING_DIMENSIONS = 32
EMBEDDING_API_KEY = "sk-test-embedding-key-0000"


@pytest.fixture(scope="session")
def milvus_lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """One shared Milvus Lite gRPC server for the session, as the provider's embedded default runs it."""
    data_dir = tmp_path_factory.mktemp("milvus-lite")
    server = start_local_server(data_dir)
    yield server
    stop_local_server(data_dir)


@pytest.fixture(scope="session")
def embedding_server() -> Iterator[EmbeddingServer]:
    with EmbeddingServer(dimensions=EMBEDDING_DIMENSIONS, api_key=EMBEDDING_API_KEY) as server:
        yield server


@pytest.fixture
def embeddings(embedding_server: EmbeddingServer) -> EmbeddingServer:
    """The shared embeddings server with fresh counters and no pending faults."""
    embedding_server.reset_stats()
    embedding_server.latency = 0.0
    return embedding_server


def require_standalone_executable() -> str:
    """The Milvus standalone server binary; skip locally without it, fail in CI (which installs it)."""
    from testing.servers.milvus_standalone import find_milvus_server_executable

    executable = find_milvus_server_executable()
    if executable is None:
        message = "Milvus standalone is not installed: run scripts/install_milvus_standalone.sh"
        if os.environ.get("CI"):
            pytest.fail(message)  # a missing server must not pass silently
        pytest.skip(message)
    return executable


@pytest.fixture(scope="session")
def milvus_standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One real Milvus standalone server (PyPI ``milvus`` 2.3.5) for the session."""
    from testing.servers.milvus_standalone import MilvusStandaloneServer

    executable = require_standalone_executable()
    with MilvusStandaloneServer(data_dir=tmp_path_factory.mktemp("milvus-standalone"), executable=executable) as server:
        yield server


def milvus_connection_json(uri: str, **extra: object) -> str:
    return json.dumps({"conn_type": "milvus", "host": uri, "extra": {"timeout": 10, **extra}})


@pytest.fixture
def milvus_conn_id(milvus_lite: LocalServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_TEST", milvus_connection_json(milvus_lite.uri))
    return "milvus_test"


@pytest.fixture
def embedding_conn_id(embeddings: EmbeddingServer, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMBEDDINGS_TEST",
        json.dumps(
            {
                "conn_type": "openai",
                "host": embeddings.base_url,
                "password": EMBEDDING_API_KEY,
                "extra": {"model": "test-embedding", "max_retries": 2},
            }
        ),
    )
    return "embeddings_test"


@pytest.fixture
def collection_name() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def milvus_client(milvus_lite: LocalServer) -> Iterator[object]:
    """A plain pymilvus client to read results back independently of the provider."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_lite.uri)
    yield client
    client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


# --- one test body, two servers: Milvus Lite and a real Milvus standalone -------------------------------


@dataclass
class Tier:
    name: str
    conn_id: str
    client: Any

    @property
    def real_server(self) -> bool:
        return self.name == "standalone"

    def skip_unless_bm25(self) -> None:
        if self.real_server:
            pytest.skip("Milvus 2.3 has no BM25 function (Milvus 2.5+)")

    def skip_unless_multi_vector(self) -> None:
        if self.real_server:
            pytest.skip("Milvus 2.3 allows one vector field per collection (2.4+)")

    def count(self, collection: str, expr: str = "") -> int:
        rows = self.client.query(collection, filter=expr, output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def rows(self, collection: str, expr: str, fields: list[str]) -> list[dict[str, Any]]:
        return list(
            self.client.query(collection, filter=expr, output_fields=fields, limit=16384, consistency_level="Strong")
        )


@pytest.fixture(params=["lite", "standalone"])
def tier(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    from pymilvus import MilvusClient

    server = request.getfixturevalue("milvus_lite" if request.param == "lite" else "milvus_standalone")
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_EXISTING", milvus_connection_json(server.uri))
    client = MilvusClient(uri=server.uri)
    yield Tier(request.param, "milvus_existing", client)
    client.close()


@pytest.fixture
def name() -> str:
    return f"app_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory, milvus_lite: LocalServer) -> AirflowCLI:
    """A migrated Airflow home whose DAG folder is the example DAGs, with ``milvus_default`` on the shared Lite server."""
    cli = AirflowCLI(
        home=tmp_path_factory.mktemp("airflow-home"),
        dags_folder=Path(__file__).resolve().parents[1] / "dags",
        # A local path: resolved to the shared Milvus Lite server, as in the main job.
        env_overrides={"AIRFLOW_CONN_MILVUS_DEFAULT": milvus_connection_json(milvus_lite.data_dir)},
    )
    cli.migrate()
    # Register the DAGs' assets as a dag-processor would: on Airflow 3.0, `dags test` alone leaves them inactive.
    cli.run("dags", "reserialize")
    return cli
