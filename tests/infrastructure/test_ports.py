"""Servers the tests start on a picked port get another one when that port is taken before they bind it."""

from __future__ import annotations

import itertools
import socket
import urllib.request

import pytest

from testing import ports
from testing.ports import PortTaken, start_on_free_port
from testing.servers.s3_server import S3Server


def test_a_taken_port_is_retried_on_another_and_the_last_failure_propagates(monkeypatch):
    picked = itertools.count(1001)
    monkeypatch.setattr(ports, "free_port", lambda host="127.0.0.1": next(picked))
    tried: list[int] = []

    def start(port: int) -> int:
        tried.append(port)
        if port < 1003:
            raise PortTaken(str(port))
        return port

    assert start_on_free_port(start) == 1003
    assert tried == [1001, 1002, 1003]
    with pytest.raises(PortTaken):
        start_on_free_port(lambda port: (_ for _ in ()).throw(PortTaken(str(port))))


def test_other_failures_are_not_retried(monkeypatch):
    calls = []

    def start(port: int) -> None:
        calls.append(port)
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        start_on_free_port(start)
    assert len(calls) == 1


def test_moto_started_on_a_port_another_process_took_moves_to_another(monkeypatch, tmp_path):
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    real = ports.free_port
    picked = iter([taken])
    monkeypatch.setattr(ports, "free_port", lambda host="127.0.0.1": next(picked, None) or real(host))
    try:
        with S3Server(log_path=tmp_path / "moto.log") as s3:
            assert s3.port != taken
            with urllib.request.urlopen(f"{s3.endpoint_url}/moto-api/", timeout=5) as response:
                assert response.status == 200
        assert ports.port_taken((tmp_path / "moto.log").read_text())
    finally:
        squatter.close()
