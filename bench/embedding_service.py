"""The test embedding server in its own process, plus ``GET /stats`` and ``POST /reset`` endpoints.

The server runs in a child process so its threads (one per connection, JSON encoding) never hold
the GIL of the measured process. ``EmbeddingService`` is the parent-side handle.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict
from http.server import ThreadingHTTPServer
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
API_KEY = "sk-bench-0000"
MODEL = "bench-embedding"


def _serve(port: int, dimensions: int, latency: float, latency_per_input: float) -> None:
    """Child process: EmbeddingServer with a stats endpoint and a deep listen backlog."""
    from testing.servers.embeddings_server import EmbeddingServer

    # The stdlib default backlog (5) would make 1,000 simultaneous connects wait for SYN retries (1 s+),
    # which a real API does not do; the unbounded gather would be penalised for the test server's sake.
    ThreadingHTTPServer.request_queue_size = 4096

    class StatsServer(EmbeddingServer):
        def _handler_class(self):  # type: ignore[override]
            base = super()._handler_class()
            server = self

            class Handler(base):  # type: ignore[misc, valid-type]
                def do_GET(self) -> None:
                    if self.path.rstrip("/") == "/stats":
                        with server._lock:
                            stats = asdict(server.stats)
                        stats.pop("authorization_headers")
                        self._json(200, stats)
                    else:
                        super().do_GET()

                def do_POST(self) -> None:
                    if self.path.rstrip("/") == "/reset":
                        self.rfile.read(int(self.headers.get("Content-Length", 0)))
                        server.reset_stats()
                        self._json(200, {"reset": True})
                    else:
                        super().do_POST()

            return Handler

    server = StatsServer(
        dimensions=dimensions,
        latency=latency,
        latency_per_input=latency_per_input,
        api_key=API_KEY,
        port=port,
    ).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


class EmbeddingService:
    """Start/stop the child process; read and reset its counters over HTTP."""

    def __init__(self, *, dimensions: int, latency: float, latency_per_input: float) -> None:
        self.dimensions = dimensions
        self.latency = latency
        self.latency_per_input = latency_per_input
        self.base_url = ""
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> EmbeddingService:
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.embedding_service",
                str(self.dimensions),
                str(self.latency),
                str(self.latency_per_input),
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.base_url = (self._proc.stdout.readline() if self._proc.stdout else "").strip()
        if not self.base_url.startswith("http"):
            raise RuntimeError("embedding service did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else 0

    def _root(self) -> str:
        return self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self._root()}/stats", timeout=10) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self._root()}/reset", data=b"{}", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def ceiling(self, batch: int, concurrency: int) -> float:
        """Computed items/s: concurrency x batch / latency of one request of ``batch`` inputs."""
        return concurrency * batch / (self.latency + self.latency_per_input * batch)


if __name__ == "__main__":
    dims, latency, per_input = sys.argv[1:4]
    _serve(0, int(dims), float(latency), float(per_input))
