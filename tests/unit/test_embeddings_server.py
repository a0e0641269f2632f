"""The loopback embedding server answers in its nominal latency and measures what it really takes."""

from __future__ import annotations

import statistics
import time

import httpx

from testing.servers.embeddings_server import EmbeddingServer


def _post(client: httpx.Client, server: EmbeddingServer, texts: list[str]) -> float:
    started = time.perf_counter()
    response = client.post(f"{server.base_url}/embeddings", json={"input": texts, "model": "m"})
    response.raise_for_status()
    return time.perf_counter() - started


def test_an_answer_on_a_kept_alive_connection_is_not_held_back_by_delayed_acks():
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's delayed ACK
    # (about 40 ms on Linux) - on every request after the first of a connection.
    texts = ["a few words of text " * 20] * 64
    with EmbeddingServer(dimensions=64) as server, httpx.Client() as client:
        seconds = [_post(client, server, texts) for _ in range(12)][2:]
    assert statistics.median(seconds) < 0.025, seconds


def test_the_server_measures_its_service_time_and_the_time_at_each_number_of_requests_in_flight():
    with EmbeddingServer(dimensions=8, latency=0.05) as server, httpx.Client() as client:
        for _ in range(3):
            _post(client, server, ["one text"])
        stats = server.stats
    assert stats.requests == 3
    assert 3 * 0.05 <= stats.service_seconds < 3 * 0.05 + 0.3
    assert 0 <= stats.work_seconds < 0.3  # parsing, vectors, encoding, sleeps overrunning on a busy machine
    span = stats.last_answer - stats.first_arrival
    assert stats.seconds_at_in_flight[1] >= 3 * 0.05
    assert abs(sum(stats.seconds_at_in_flight) - span) < 0.01, (stats.seconds_at_in_flight, span)


def test_a_held_request_waits_until_released_and_the_others_pass():
    import threading

    with EmbeddingServer(dimensions=8) as server, httpx.Client() as client:
        server.hold("marker-7")
        answered: list[float] = []
        held = threading.Thread(target=lambda: answered.append(_post(client, server, ["x", "with marker-7 inside"])))
        held.start()
        deadline = time.monotonic() + 5
        while server.stats.held == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        with httpx.Client() as other:
            assert _post(other, server, ["no marker here"]) < 1.0  # not held
        time.sleep(0.3)
        assert answered == []  # still held
        server.release()
        held.join(timeout=5)
        stats = server.stats
    assert stats.held == 1
    assert len(answered) == 1
    assert answered[0] >= 0.3
    assert stats.inputs == 3
