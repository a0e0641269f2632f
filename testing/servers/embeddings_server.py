"""A real OpenAI-compatible ``/v1/embeddings`` HTTP server on loopback, for tests and the benchmark.

Embeddings are deterministic hashed bags of words (texts sharing words are close), so retrieval
tests mean something. The server can add latency, inject failures (429 with Retry-After, 500,
dropped connections), hold the requests that carry a given text until released (a test kills the
client meanwhile) and records the peak number of requests in flight.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import re
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=1 << 16)
def _word_slot(word: str, dimensions: int) -> tuple[int, float]:
    """The dimension a word adds to and its sign (words repeat: hashed once each, the server's main CPU cost)."""
    digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:4], "little") % dimensions, 1.0 if digest[4] & 1 else -1.0


def embed_text(text: str, dimensions: int) -> list[float]:
    vector = [0.0] * dimensions
    for word in _WORD.findall(text.lower()):
        index, sign = _word_slot(word, dimensions)
        vector[index] += sign
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    if norm == 1.0 and not any(vector):
        vector[0] = 1.0
    return [v / norm for v in vector]


@dataclass
class Fault:
    """Answer the next ``count`` requests with ``status`` (0 = drop the connection)."""

    status: int
    count: int
    retry_after: float | None = None


@dataclass
class EmbeddingServerStats:
    requests: int = 0
    inputs: int = 0
    failures_injected: int = 0
    held: int = 0  # requests held by ``hold()`` so far (answered once released, counted in ``inputs`` then)
    in_flight: int = 0
    peak_in_flight: int = 0
    # Measured at the server, per embedding request: from its body read to its answer written (the
    # ``latency`` sleep included), and that time without the sleep (parsing, vectors, encoding, sending).
    service_seconds: float = 0.0
    work_seconds: float = 0.0
    # Wall time (time.time()) of the first request's arrival and the last answer, and the seconds spent
    # with n requests in flight (index n): how well a client keeps its concurrency busy.
    first_arrival: float = 0.0
    last_answer: float = 0.0
    seconds_at_in_flight: list[float] = field(default_factory=list)
    authorization_headers: list[str] = field(default_factory=list)


class EmbeddingServer:
    """``with EmbeddingServer(dimensions=32) as server: server.base_url -> http://127.0.0.1:P/v1``."""

    def __init__(
        self,
        *,
        dimensions: int = 32,
        latency: float = 0.0,
        latency_per_input: float = 0.0,
        api_key: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.dimensions = dimensions
        self.latency = latency
        self.latency_per_input = latency_per_input
        self.api_key = api_key
        self.stats = EmbeddingServerStats()
        self._faults: deque[Fault] = deque()
        self._hold: tuple[str, threading.Event, float] | None = None
        self._lock = threading.Lock()
        self._level_since = 0.0  # when stats.in_flight last changed
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def start(self) -> EmbeddingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> EmbeddingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = EmbeddingServerStats()
            self._faults.clear()
            self._level_since = 0.0

    def _change_in_flight(self, delta: int, now: float) -> None:
        """Under ``_lock``: count the time spent at the current level, then move to the next."""
        stats = self.stats
        level = max(stats.in_flight, 0)  # below 0 after a reset with requests still in flight
        if self._level_since:
            levels = stats.seconds_at_in_flight
            levels.extend([0.0] * (level + 1 - len(levels)))
            levels[level] += now - self._level_since
        self._level_since = now
        stats.in_flight += delta
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)

    def inject(self, status: int, count: int = 1, *, retry_after: float | None = None) -> None:
        with self._lock:
            self._faults.append(Fault(status, count, retry_after))

    def hold(self, marker: str, *, timeout: float = 120.0) -> None:
        """Hold every request with an input containing ``marker`` until ``release()`` (at most ``timeout`` s)."""
        with self._lock:
            self._hold = (marker, threading.Event(), timeout)

    def release(self) -> None:
        """Let the held requests go on (and hold nothing more)."""
        with self._lock:
            hold, self._hold = self._hold, None
        if hold is not None:
            hold[1].set()

    def _wait_if_held(self, inputs: list[object]) -> float:
        """Under no lock: wait while ``inputs`` match the hold; return the seconds waited."""
        with self._lock:
            hold = self._hold
            if hold is None or not any(isinstance(text, str) and hold[0] in text for text in inputs):
                return 0.0
            self.stats.held += 1
        started = time.perf_counter()
        hold[1].wait(hold[2])
        return time.perf_counter() - started

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            fault.count -= 1
            if fault.count <= 0:
                self._faults.popleft()
            self.stats.failures_injected += 1
            return fault

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # TCP_NODELAY, as real API servers set it: the answer goes out in two writes (headers, then body),
            # and with Nagle on the body waits for the client's delayed ACK of the headers - about 40 ms on
            # Linux, added to every request (measured: 171 ms seen by the client for a 100 ms server).
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    self._json(200, {"object": "list", "data": [{"id": "test-embedding", "object": "model"}]})
                else:
                    self._json(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(length)
                arrived, started = time.time(), time.perf_counter()
                with server._lock:
                    server.stats.requests += 1
                    server.stats.first_arrival = server.stats.first_arrival or arrived
                    server._change_in_flight(+1, arrived)
                    server.stats.authorization_headers.append(self.headers.get("Authorization", ""))
                self._slept = 0.0
                try:
                    self._answer(json.loads(raw or b"{}"))
                finally:
                    service = time.perf_counter() - started
                    with server._lock:
                        server.stats.service_seconds += service
                        server.stats.work_seconds += service - self._slept
                        server.stats.last_answer = time.time()
                        server._change_in_flight(-1, server.stats.last_answer)

            _slept = 0.0

            def _answer(self, body: dict) -> None:
                if not self.path.rstrip("/").endswith("/embeddings"):
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    self._json(
                        401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
                    )
                    return
                inputs = body.get("input", [])
                if isinstance(inputs, str):
                    inputs = [inputs]
                self._slept = server.latency + server.latency_per_input * len(inputs)
                time.sleep(self._slept)
                self._slept += server._wait_if_held(inputs)
                fault = server._next_fault()
                if fault is not None:
                    if fault.status == 0:
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
                    self._json(fault.status, {"error": {"message": f"injected {fault.status}"}}, headers)
                    return
                dimensions = int(body.get("dimensions") or server.dimensions)
                as_base64 = body.get("encoding_format") == "base64"
                data = []
                for index, text in enumerate(inputs):
                    if not isinstance(text, str):
                        self._json(400, {"error": {"message": "input must be strings (no token arrays)"}})
                        return
                    vector = embed_text(text, dimensions)
                    encoded: object = (
                        base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode() if as_base64 else vector
                    )
                    data.append({"object": "embedding", "index": index, "embedding": encoded})
                with server._lock:
                    server.stats.inputs += len(inputs)
                self._json(
                    200,
                    {
                        "object": "list",
                        "data": data,
                        "model": body.get("model", "test-embedding"),
                        "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)},
                    },
                )

            def _json(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                raw = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(raw)

        return Handler


def main() -> None:
    """Run standalone: ``python -m testing.servers.embeddings_server --port 8089 --latency 0.1``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--dimensions", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--latency-per-input", type=float, default=0.0)
    args = parser.parse_args()
    server = EmbeddingServer(
        dimensions=args.dimensions, latency=args.latency, latency_per_input=args.latency_per_input, port=args.port
    ).start()
    print(f"embeddings at {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
