"""Which Milvus the benchmark talks to: Milvus Lite (default), a standalone 2.3.5, or any URI."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Backend:
    uri: str
    description: str
    pid: int | None = None  # server process, for the machine description


@contextlib.contextmanager
def milvus_backend(*, uri: str | None, standalone: bool) -> Iterator[Backend]:
    if uri:
        yield Backend(uri, f"Milvus at {uri} (--milvus-uri)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-milvus-") as data_dir:
        if standalone:
            from testing.servers.milvus_standalone import MilvusStandaloneServer

            with MilvusStandaloneServer(data_dir=Path(data_dir)) as server:
                yield Backend(server.uri, "Milvus standalone 2.3.5 (PyPI milvus, testing/servers/milvus_standalone.py)")
            return
        from airflow_provider_milvus.local_server import start_local_server, stop_local_server

        server = start_local_server(data_dir)
        try:
            yield Backend(server.uri, "Milvus Lite 3.2.2 gRPC server (start_local_server)", server.pid)
        finally:
            stop_local_server(data_dir)
