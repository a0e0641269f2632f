"""The ``airflow-milvus-lite`` command, run as users run it: a real process per call, a real server.

start (twice: the second reports the running server and starts none), status, stop, a state file
left behind by ``kill -9`` of the server, and a port that another process already holds.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_milvus.local_server import STATE_FILENAME, find_local_server, stop_local_server

COMMAND = str(Path(sys.executable).parent / "airflow-milvus-lite")


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], capture_output=True, text=True, timeout=timeout, check=False)


def server_pids(data_dir: Path) -> list[int]:
    """Every ``serve`` process on this machine for ``data_dir`` (read from /proc, not from our state file)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        args = [a.decode(errors="replace") for a in argv]
        if "airflow_provider_milvus.local_server" in args and "serve" in args and str(data_dir) in args:
            pids.append(int(entry.name))
    return sorted(pids)


def wait_until(predicate, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def list_collections(uri: str) -> list[str]:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=10)
    try:
        return client.list_collections()
    finally:
        client.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    directory = (tmp_path / "milvus-data").resolve()
    yield directory
    stop_local_server(directory)
    for pid in server_pids(directory):  # whatever a failing test left behind
        os.kill(pid, signal.SIGKILL)


pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads processes from /proc")


def test_start_twice_reports_the_running_server_and_starts_no_second_one(data_dir):
    first = cli("start", "--data-dir", str(data_dir))
    assert first.returncode == 0, first.stderr
    server = find_local_server(data_dir)
    assert server is not None
    assert f"at {server.uri} (pid {server.pid})" in first.stdout
    assert server_pids(data_dir) == [server.pid]

    second = cli("start", "--data-dir", str(data_dir))
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith("already running"), second.stdout
    assert f"at {server.uri} (pid {server.pid})" in second.stdout
    assert server_pids(data_dir) == [server.pid], "a second start started a second server"
    assert isinstance(list_collections(server.uri), list)


def test_status_then_stop_then_status(data_dir):
    missing = cli("status", "--data-dir", str(data_dir))
    assert missing.returncode == 1
    assert missing.stdout.startswith("not running")
    assert f"airflow-milvus-lite start --data-dir {data_dir}" in missing.stdout

    assert cli("start", "--data-dir", str(data_dir)).returncode == 0
    server = find_local_server(data_dir)
    status = cli("status", "--data-dir", str(data_dir))
    assert status.returncode == 0
    assert status.stdout.strip() == f"running at {server.uri} (pid {server.pid})"

    stop = cli("stop", "--data-dir", str(data_dir))
    assert stop.returncode == 0
    assert stop.stdout.strip() == "stopped"
    assert server_pids(data_dir) == [], "stop left the server running"
    assert not (data_dir / STATE_FILENAME).exists()
    after = cli("status", "--data-dir", str(data_dir))
    assert after.returncode == 1
    assert after.stdout.startswith("not running")
    assert "stale" not in after.stdout
    again = cli("stop", "--data-dir", str(data_dir))
    assert again.returncode == 0
    assert again.stdout.strip() == "no server was running"


def test_a_state_file_left_by_kill_9_is_reported_stale_and_a_new_start_replaces_it(data_dir):
    assert cli("start", "--data-dir", str(data_dir)).returncode == 0
    killed = find_local_server(data_dir)
    os.kill(killed.pid, signal.SIGKILL)
    wait_until(lambda: not server_pids(data_dir), what="the killed server to go")
    assert json.loads((data_dir / STATE_FILENAME).read_text())["pid"] == killed.pid  # left behind

    status = cli("status", "--data-dir", str(data_dir))
    assert status.returncode == 1
    assert "not running" in status.stdout
    assert "stale state file" in status.stdout
    assert str(killed.pid) in status.stdout

    restarted = cli("start", "--data-dir", str(data_dir))
    assert restarted.returncode == 0, restarted.stderr
    assert not restarted.stdout.startswith("already running"), restarted.stdout
    server = find_local_server(data_dir)
    assert server is not None
    assert server.pid != killed.pid
    assert server_pids(data_dir) == [server.pid]
    assert isinstance(list_collections(server.uri), list)


def test_a_stale_state_file_whose_pid_was_reused_is_not_taken_for_the_server(data_dir):
    """After kill -9 the pid may belong to an unrelated process: stop must not signal it."""
    data_dir.mkdir(parents=True)
    with socket.socket() as listener:  # an unrelated process (this one) listening on the recorded port
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        (data_dir / STATE_FILENAME).write_text(
            json.dumps({"data_dir": str(data_dir), "host": "127.0.0.1", "port": port, "pid": os.getpid()})
        )
        assert find_local_server(data_dir) is None
        stop = cli("stop", "--data-dir", str(data_dir))
        assert stop.returncode == 0, stop.stdout
        assert stop.stdout.startswith("no server was running"), stop.stdout
        assert "stale state file" in stop.stdout


def test_a_port_already_taken_is_refused_and_starts_nothing(data_dir):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        started = time.monotonic()
        result = cli("start", "--data-dir", str(data_dir), "--port", str(port))
        elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr, result.stderr
    assert server_pids(data_dir) == [], "a server was started on a taken port"
    assert not (data_dir / STATE_FILENAME).exists(), "a server that never served was recorded"
    assert elapsed < 30, f"refusing took {elapsed:.1f}s"
