"""
The shared embedded Milvus: one Milvus Lite gRPC server per local data directory.

Milvus Lite takes an exclusive ``flock`` on ``<data_dir>/LOCK``, and Airflow runs tasks and
triggers in different processes, so no Airflow process may open a local path itself. Instead one
``milvus-lite server`` process owns the directory and every process talks to it over gRPC.
The server's address is recorded in ``<data_dir>/airflow-provider-milvus-server.json``; a
connection whose URI is a local path resolves to that address, or fails saying how to start it.

Command line::

    airflow-milvus-lite start --data-dir ./milvus_data [--port 19530]
    airflow-milvus-lite status --data-dir ./milvus_data
    airflow-milvus-lite stop --data-dir ./milvus_data
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

STATE_FILENAME = "airflow-provider-milvus-server.json"
START_LOCK_FILENAME = "airflow-provider-milvus-server.start.lock"
LOG_FILENAME = "airflow-provider-milvus-server.log"
LOCK_FILENAME = "LOCK"
# Where a server started with no port writes the port it bound (port 0: the kernel picks, no race).
PORT_FILENAME = "airflow-provider-milvus-server.port"
T = TypeVar("T")


class LocalServerError(RuntimeError):
    """The shared Milvus Lite server is missing, locked by someone else, or failed to start."""


@dataclass(frozen=True)
class LocalServer:
    """Where the shared server for a data directory listens, and its process id."""

    data_dir: str
    host: str
    port: int
    pid: int

    @property
    def uri(self) -> str:
        return f"http://{self.host}:{self.port}"


def is_local_path(uri: str) -> bool:
    """
    Tell a filesystem path (``./milvus_data``, ``/srv/milvus.db``, True) from a server address (False).

    A bare ``milvus-standalone`` or ``localhost:19530`` is a host, not a directory.
    """
    if "://" in uri or uri.startswith(("unix:", "tcp:")):
        return False
    return uri.startswith(("/", "./", "../", "~", ".")) or uri.endswith(".db")


def start_command(data_dir: str | os.PathLike[str]) -> str:
    return f"airflow-milvus-lite start --data-dir {Path(data_dir).expanduser().resolve()}"


def recorded_server(data_dir: str | os.PathLike[str]) -> LocalServer | None:
    """Return the server recorded in ``data_dir``'s state file, alive or not (None without a readable file)."""
    state_path = Path(data_dir).expanduser().resolve() / STATE_FILENAME
    try:
        return LocalServer(**json.loads(state_path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def find_local_server(data_dir: str | os.PathLike[str]) -> LocalServer | None:
    """
    Return the live server recorded for ``data_dir``, or None.

    A state file left behind by a killed server (kill -9, a reboot) names a pid that is gone, or that
    the system has since given to an unrelated process: both count as "no server".
    """
    server = recorded_server(data_dir)
    if server is None:
        return None
    if _is_our_server(server.pid, server.data_dir) and _port_open(server.host, server.port):
        return server
    return None


def resolve_local_uri(path: str) -> str:
    """Map a local data path to the URI of the shared server that owns it."""
    server = find_local_server(path)
    if server is None:
        resolved = Path(path).expanduser().resolve()
        hint = f"Start it with: {start_command(resolved)}"
        if _lock_held(resolved):
            raise LocalServerError(
                f"The Milvus Lite data directory {resolved} is locked by another process that is not "
                f"the shared server (an in-process MilvusClient('{path}')?). Stop that process, then "
                f"serve the directory to every Airflow process. {hint}"
            )
        raise LocalServerError(
            f"No shared Milvus Lite server is serving {resolved}. Airflow tasks and triggers run in "
            f"separate processes, so a local path must be served by one server. {hint}"
        )
    return server.uri


def start_local_server(
    data_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    ready_timeout: float = 60.0,
) -> LocalServer:
    """
    Start the shared server for ``data_dir`` unless one is already serving it (idempotent).

    Concurrent starts for the same directory are serialised by a lock file, so they end with one
    server; a ``port`` that is already taken is refused before anything is started.
    """
    directory = Path(data_dir).expanduser().resolve()
    directory.mkdir(parents=True, exist_ok=True)
    with _start_lock(directory):
        return _start_locked(directory, host, port, ready_timeout)


def _start_locked(directory: Path, host: str, port: int, ready_timeout: float) -> LocalServer:
    running = find_local_server(directory)
    if running is not None:
        return running
    if _lock_held(directory):
        raise LocalServerError(
            f"{directory} is locked by another process; a second Milvus Lite server would fight it. "
            f"Stop the process holding {directory / LOCK_FILENAME} first."
        )
    if port and not _port_free(host, port):
        # Checked first: the readiness probe below would otherwise see the other process listening,
        # report success, and record a server that exits at once.
        raise LocalServerError(
            f"Port {port} on {host} is already in use by another process. Choose another --port, or "
            "--port 0 for a free one."
        )
    # No port given: the server binds port 0 itself and writes the port it got (picking a free port here
    # and binding it in the child would leave a gap in which another process can take it).
    port_file = directory / PORT_FILENAME
    port_file.unlink(missing_ok=True)
    log_file = open(directory / LOG_FILENAME, "ab")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_milvus.local_server",
            "serve",
            "--data-dir",
            str(directory),
            "--host",
            host,
            "--port",
            str(port),
            *(["--port-file", str(port_file)] if not port else []),
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log_file.close()
    deadline = time.monotonic() + ready_timeout
    if not port:
        port = _await_server(
            process, directory, deadline, lambda: _bound_port(port_file), f"bound no port after {ready_timeout}s"
        )
    server = LocalServer(data_dir=str(directory), host=host, port=port, pid=process.pid)
    _await_server(process, directory, deadline, lambda: _port_open(host, port), f"not ready after {ready_timeout}s")
    if process.poll() is not None:  # someone else took the port between the check and the bind
        raise _exited(process, directory)
    state = directory / STATE_FILENAME
    partial = state.with_suffix(".tmp")
    partial.write_text(json.dumps(asdict(server)))
    os.replace(partial, state)  # readers never see half a file
    return server


def _await_server(
    process: subprocess.Popen[bytes], directory: Path, deadline: float, ready: Callable[[], T], failure: str
) -> T:
    """Poll ``ready`` until it returns something true; fail if the server exits, or kill it at ``deadline``."""
    while not (value := ready()):
        if process.poll() is not None:
            raise _exited(process, directory)
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            raise LocalServerError(f"Milvus Lite server for {directory} {failure}")
        time.sleep(0.1)
    return value


def _exited(process: subprocess.Popen[bytes], directory: Path) -> LocalServerError:
    return LocalServerError(
        f"Milvus Lite server for {directory} exited with code {process.returncode}:\n{_log_tail(directory)}"
    )


def stop_local_server(data_dir: str | os.PathLike[str], *, timeout: float = 20.0) -> bool:
    """Stop the shared server for ``data_dir``; return False if none was running."""
    directory = Path(data_dir).expanduser().resolve()
    server = find_local_server(directory)
    with contextlib.suppress(FileNotFoundError):
        (directory / STATE_FILENAME).unlink()
    if server is None:
        return False
    os.kill(server.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _pid_alive(server.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _pid_alive(server.pid):
        os.kill(server.pid, signal.SIGKILL)
    return True


def _is_our_server(pid: int, data_dir: str) -> bool:
    """``pid`` is alive and is the ``serve`` process for ``data_dir`` (not a reused pid)."""
    if not _pid_alive(pid):
        return False
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return Path("/proc/self").exists() is False  # no procfs (macOS): trust the pid
    except OSError:
        return True
    args = [a.decode(errors="replace") for a in argv]
    return "airflow_provider_milvus.local_server" in args and "serve" in args and data_dir in args


@contextlib.contextmanager
def _start_lock(directory: Path) -> Any:
    import fcntl

    fd = os.open(directory / START_LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return not _port_open(host, port)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    return True


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _bound_port(port_file: Path) -> int:
    """Return the port a server started without one wrote after binding, or 0 while it has not yet."""
    try:
        return int(port_file.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _lock_held(directory: Path) -> bool:
    import fcntl

    lock_path = directory / LOCK_FILENAME
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _log_tail(directory: Path, lines: int = 20) -> str:
    try:
        return "\n".join((directory / LOG_FILENAME).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# pymilvus pings idle channels every 10 s; gRPC servers by default answer that with GOAWAY
# "too_many_pings", which breaks long-lived clients (a triggerer, a test session).
_KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    ("grpc.http2.max_ping_strikes", 0),
]


def _serve(data_dir: str, host: str, port: int, port_file: str | None = None) -> int:
    """
    Run ``milvus-lite server`` in this process, accepting pymilvus's keepalive pings.

    With ``port_file``, ``port`` may be 0: the kernel picks a free port as the server binds it, and the
    port it got is written to ``port_file`` (atomically) for the process that started this one.
    """
    import grpc
    from milvus_lite.cmdline import main as milvus_lite_main

    build_server = grpc.server

    def server_accepting_keepalive(*args: Any, options: Any = (), **kwargs: Any) -> Any:
        server = build_server(*args, options=[*(options or ()), *_KEEPALIVE_OPTIONS], **kwargs)
        if port_file:
            add_port = server.add_insecure_port

            def add_port_and_report(address: str) -> int:
                bound = add_port(address)
                partial = Path(f"{port_file}.tmp")
                partial.write_text(str(bound))
                os.replace(partial, port_file)
                return bound

            server.add_insecure_port = add_port_and_report
        return server

    grpc.server = server_accepting_keepalive
    return milvus_lite_main(["server", "--data-dir", data_dir, "--host", host, "--port", str(port)]) or 0


def _stale_note(data_dir: str) -> str:
    """Return a note on a stale state file (a recorded server that is gone), else an empty string."""
    recorded = recorded_server(data_dir)
    if recorded is None or find_local_server(data_dir) is not None:
        return ""
    return f" (stale state file: the server recorded at {recorded.uri}, pid {recorded.pid}, is gone)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="airflow-milvus-lite", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "serve"])
    parser.add_argument("--data-dir", required=True, help="Milvus Lite data directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--port-file", help=argparse.SUPPRESS)  # serve: where a picked port is written
    args = parser.parse_args(argv)
    if args.command == "serve":  # the server process itself, started by "start"
        return _serve(args.data_dir, args.host, args.port or (0 if args.port_file else 19530), args.port_file)
    try:
        if args.command == "start":
            running = find_local_server(args.data_dir)
            if running is not None:
                print(f"already running: Milvus Lite serving {running.data_dir} at {running.uri} (pid {running.pid})")
                return 0
            started = start_local_server(args.data_dir, host=args.host, port=args.port)
            print(f"Milvus Lite serving {started.data_dir} at {started.uri} (pid {started.pid})")
        elif args.command == "stop":
            stale = _stale_note(args.data_dir)
            stopped = stop_local_server(args.data_dir)
            print("stopped" if stopped else f"no server was running{stale}")
        else:
            server = find_local_server(args.data_dir)
            if server is None:
                print(f"not running{_stale_note(args.data_dir)}; {start_command(args.data_dir)}")
                return 1
            print(f"running at {server.uri} (pid {server.pid})")
    except LocalServerError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
