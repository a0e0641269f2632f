"""Run a real Milvus standalone server for integration tests (no Docker).

The PyPI package ``milvus`` (2.3.5) bundles a Milvus standalone binary with an
embedded etcd and local storage. ``scripts/install_milvus_standalone.sh``
installs it into its own virtualenv (``<repo>/.venv-milvus-standalone``).

Usage::

    with MilvusStandaloneServer(data_dir=tmp_path / "milvus") as server:
        client = MilvusClient(server.uri)
        ...
        server.kill()  # SIGKILL, for fault tests
        server.start()  # same data dir and ports, so the same uri

Why this does not just run ``milvus-server --data DIR --proxy-port P``:
the ``milvus`` package's launcher (a) silently moves to the next free port when
a requested port cannot be bound, which happens on restart while old
connections sit in TIME_WAIT; (b) always binds the embedded etcd to
2379/2380 and the health port from 9091 upwards, so two servers collide;
(c) hangs forever if the milvus binary dies; (d) leaves the binary running
when it gets SIGTERM. So we run the launcher's own classes from a tiny
bootstrap (``_BOOTSTRAP``) in the launcher's interpreter: every port is
explicit and strict, the embedded etcd gets its own config, the launcher exits
with the binary, forwards SIGTERM/SIGINT, and stops the binary if our process
dies.

Everything lives in ``data_dir``: ``milvus-standalone.log`` (all output,
appended across starts), ``configs/`` (milvus.yaml, embed-etcd.yaml,
bootstrap.py), ``logs/``, ``data/`` (etcd, rocksmq, segments: 150-200 MB once
started) and ``bin`` (a symlink to the binaries that the install script
unpacks once into the venv, else a 250 MB copy made on first start).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from testing.ports import ATTEMPTS, PortTaken, port_taken

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = REPO_ROOT / ".venv-milvus-standalone"
# Where scripts/install_milvus_standalone.sh unpacks the server binaries once.
BIN_CACHE_SUBDIR = "milvus-bin-cache"

LOG_NAME = "milvus-standalone.log"

# The built-in user of a server started with ``authorization=True`` (Milvus's default root password).
ROOT_TOKEN = "root:Milvus"

# Port settings of the `milvus` package's config template (all bound by the
# server), plus the two we handle ourselves.
_PORT_KEYS = (
    "proxy_port",
    "proxy_internal_port",
    "etcd_port",
    "root_coord_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)
_EXTRA_PORT_KEYS = ("etcd_peer_port", "metrics_port")

# milvus.yaml values we override (keys must already be in the package's template).
_SETTINGS = {
    # Components talk to each other on loopback, not the first non-loopback address.
    **{
        f"{role}.ip": "127.0.0.1"
        for role in ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")
    },
    # Default 1800 s: graceful shutdown of a standalone server with data hangs
    # (nodes retry the already stopped coordinators), so let it force-quit soon.
    "common.gracefulStopTimeout": 5,
    # Default 30 s: after a SIGKILL, collections stay "not loaded" until the dead
    # node's etcd session expires, so a short ttl makes recovery faster.
    "common.session.ttl": 10,
}

# Runs in the milvus venv's interpreter (written to data_dir/configs/bootstrap.py);
# argv[1] is a JSON dict of options.
_BOOTSTRAP = r"""
import json, os, signal, socket, sys, threading, time
import milvus

opts = json.loads(sys.argv[1])

def try_bind_port(self, port):
    # Like the original, but with SO_REUSEADDR so that TIME_WAIT connections
    # of a previous run do not count as "port in use".
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        return sock
    except OSError:
        sock.close()
        return None

milvus.MilvusServerConfig.try_bind_port = try_bind_port

# Ports passed as constructor kwargs are strict: bind failure raises.
config = milvus.MilvusServerConfig(data_dir=opts["data_dir"], **opts["ports"])
for key, value in opts["settings"].items():  # other milvus.yaml keys, dotted
    config.set(key, value)
server = milvus.MilvusServer(config, wait_for_started=False, debug=True)
server.webservice_port = opts["metrics_port"]

def forward(signum, frame):
    if server.server_proc is None:
        os._exit(128 + signum)  # still starting: nothing to stop yet
    server.server_proc.send_signal(signum)

signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, forward)

def watch_parent():
    # Stop milvus if the process that started us dies (even by SIGKILL).
    while os.getppid() == opts["parent_pid"]:
        time.sleep(1)
    if server.server_proc is None:
        os._exit(1)
    server.server_proc.terminate()
    try:  # wait for it to stop (not a fixed 10 s), then force it
        server.server_proc.wait(timeout=10)
    except Exception:
        server.server_proc.kill()

threading.Thread(target=watch_parent, daemon=True).start()

server.start()
if server.webservice_port != opts["metrics_port"]:
    server.stop()
    sys.exit(f"metrics port {opts['metrics_port']} is in use")
print(f"milvus pid {server.server_proc.pid}", flush=True)
sys.exit(server.server_proc.wait())
"""


def find_milvus_server_executable() -> str | None:
    """Path of ``milvus-server``: ``$MILVUS_STANDALONE_BIN``, else the venv the installer used.

    ``scripts/install_milvus_standalone.sh`` installs into ``$MILVUS_STANDALONE_VENV`` when it is set
    (else ``.venv-milvus-standalone``); the lookup follows the same rule, and does not fall back to the
    default venv when ``MILVUS_STANDALONE_VENV`` names another one (that would test a different server).
    """
    candidates = []
    if os.environ.get("MILVUS_STANDALONE_BIN"):
        candidates.append(Path(os.environ["MILVUS_STANDALONE_BIN"]).expanduser())
    venv = os.environ.get("MILVUS_STANDALONE_VENV")
    candidates.append((Path(venv).expanduser() if venv else DEFAULT_VENV) / "bin" / "milvus-server")
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _free_ports(count: int) -> list[int]:
    """Distinct ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _launcher_python(executable: str) -> str:
    """The interpreter of the ``milvus-server`` console script."""
    with open(executable, "rb") as script:
        first_line = script.readline().decode(errors="replace").strip()
    if first_line.startswith("#!") and " " not in first_line[2:].strip():
        return first_line[2:].strip()
    return str(Path(executable).parent / "python")


def _group_alive(pgid: int) -> bool:
    """True while a non-zombie process is in process group ``pgid``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # Fields after the "(comm)" part: state ppid pgrp ...
        state, _ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
        if int(pgrp) == pgid and state not in ("Z", "X"):
            return True
    return False


_live_servers: set[MilvusStandaloneServer] = set()


@atexit.register
def _stop_live_servers() -> None:
    for server in list(_live_servers):
        server.stop(timeout=5)


class MilvusStandaloneServer:
    """A Milvus 2.3.5 standalone server in its own process group."""

    def __init__(
        self,
        *,
        data_dir: Path,
        port: int | None = None,
        executable: str | None = None,
        authorization: bool = False,
    ):
        """``authorization=True`` turns on Milvus's user authentication
        (``common.security.authorizationEnabled``): every call then needs a
        token; the built-in user is ``root`` with password ``Milvus``
        (``ROOT_TOKEN``, what ``token`` returns).
        """
        executable = executable or find_milvus_server_executable()
        if executable is None:
            raise RuntimeError(
                "milvus-server not found: run scripts/install_milvus_standalone.sh or set MILVUS_STANDALONE_BIN"
            )
        self.executable = executable
        self.data_dir = Path(data_dir).resolve()
        # Chosen once, so a restart keeps the uri and the etcd member's peer url; only a first start
        # that finds one of them taken picks new ones (start).
        self._given_port = port
        self.ports: dict[str, int] = self._pick_ports()
        self.authorization = authorization
        self._proc: subprocess.Popen | None = None
        self._started = False

    def _pick_ports(self) -> dict[str, int]:
        names = _PORT_KEYS + _EXTRA_PORT_KEYS
        ports = dict(zip(names, _free_ports(len(names))))
        if self._given_port is not None:
            ports["proxy_port"] = self._given_port
        return ports

    # -- info ---------------------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports["proxy_port"]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """Token of the built-in root user when authorization is on, else ""."""
        return ROOT_TOKEN if self.authorization else ""

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_NAME

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _this_start_log(self) -> str:
        """The log since the last ``=== start`` line (the log file keeps every start)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[text.rfind("\n=== start ") :]

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float = 180, *, wait_loaded: bool = True) -> None:
        """Launch the server and wait until a pymilvus call succeeds.

        With ``wait_loaded`` (the default) also wait until collections that were
        loaded before a restart are loaded again, so they can be queried.
        """
        if self.running:
            raise RuntimeError("server already running")
        # Ports are picked free, then bound by milvus seconds later: another process can take one in
        # between. A first start then tries new ones; a restart must keep them (the uri, etcd's peer url).
        attempts = 1 if self._started or self._given_port is not None else ATTEMPTS
        for attempt in range(1, attempts + 1):
            try:
                self._start_once(timeout, wait_loaded)
                break
            except PortTaken:
                if attempt == attempts:
                    raise
                self.ports = self._pick_ports()
        self._started = True

    def _start_once(self, timeout: float, wait_loaded: bool) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._link_bin_cache()
        etcd_config = self._write_etcd_config()
        opts = {
            "data_dir": str(self.data_dir),
            "ports": {key: self.ports[key] for key in _PORT_KEYS},
            "metrics_port": self.ports["metrics_port"],
            "settings": self._settings(),
            "parent_pid": os.getpid(),
        }
        env = dict(os.environ)
        env["ETCD_CONFIG_PATH"] = str(etcd_config)  # read by milvus for its embedded etcd
        env["PYTHONUNBUFFERED"] = "1"
        bootstrap = self.data_dir / "configs" / "bootstrap.py"
        bootstrap.write_text(_BOOTSTRAP)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%Y-%m-%d %H:%M:%S')} ports {self.ports}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                [_launcher_python(self.executable), str(bootstrap), json.dumps(opts)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=env,
                start_new_session=True,  # own process group: killpg reaches milvus too
            )
        _live_servers.add(self)
        try:
            self._wait_ready(timeout, wait_loaded)
        except BaseException:
            self.kill()
            raise

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then SIGKILL after ``timeout``.

        Takes ~0.1 s for an empty server and ~5 s once collections are loaded
        (milvus hangs in its graceful stop until common.gracefulStopTimeout).
        """
        if self._proc is None:
            return
        if self._proc.poll() is None:
            try:
                self._proc.send_signal(signal.SIGTERM)  # the launcher forwards it to milvus
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self._kill_group(self._proc.pid, timeout=10)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (a crash, for fault tests)."""
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._kill_group(self._proc.pid, timeout=10)

    def restart(self, timeout: float = 180, *, wait_loaded: bool = True) -> None:
        """Graceful stop, then start on the same data dir and ports."""
        self.stop()
        self.start(timeout, wait_loaded=wait_loaded)

    def __enter__(self) -> MilvusStandaloneServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    # -- helpers ------------------------------------------------------------

    def _settings(self) -> dict[str, object]:
        settings = dict(_SETTINGS)
        if self.authorization:
            settings["common.security.authorizationEnabled"] = "true"
        return settings

    def _client_kwargs(self) -> dict[str, object]:
        return {"token": self.token} if self.token else {}

    def _kill_group(self, pgid: int, timeout: float) -> None:
        """SIGKILL whatever is left in the group and wait until it is gone."""
        deadline = time.monotonic() + timeout
        while _group_alive(pgid):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"milvus process group {pgid} survived SIGKILL")
            time.sleep(0.1)
        if self._proc is not None:
            self._proc.wait(timeout=10)
        self._proc = None
        _live_servers.discard(self)

    def _wait_ready(self, timeout: float, wait_loaded: bool) -> None:
        from pymilvus import MilvusClient  # imported late: module import stays cheap

        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                if port_taken(self._this_start_log()):
                    raise PortTaken(f"milvus-server: one of the ports {self.ports} was taken; log {self.log_path}")
                raise RuntimeError(
                    f"milvus-server exited during startup (code {self._proc and self._proc.returncode});"
                    f" log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                client = MilvusClient(uri=self.uri, timeout=5, **self._client_kwargs())
                try:
                    client.list_collections(timeout=5)
                    loading = self._loading_collections(client) if wait_loaded else []
                    if not loading:
                        return
                    last_error = RuntimeError(f"collections still loading: {loading}")
                finally:
                    client.close()
            except Exception as error:  # not up yet: connection refused, timeout, not ready...
                last_error = error
            time.sleep(0.5)
        raise RuntimeError(
            f"milvus not ready at {self.uri} after {timeout}s (last error: {last_error!r});"
            f" log {self.log_path}:\n{self.log_tail()}"
        )

    def _loading_collections(self, client) -> list[str]:
        """Collections (``db.name``) whose load state is still "Loading".

        After a restart, collections that were loaded come back as Loading and
        queries fail with "collection not loaded" for 5-15 s more.
        """
        from pymilvus import MilvusClient

        loading = []
        for db_name in client.list_databases(timeout=5):
            # Not client.use_database(): it calls DescribeDatabase, which 2.3.5 lacks.
            db_client = MilvusClient(uri=self.uri, db_name=db_name, timeout=5, **self._client_kwargs())
            try:
                for name in db_client.list_collections(timeout=5):
                    state = db_client.get_load_state(name, timeout=5)["state"]
                    if "Loading" in str(state):
                        loading.append(f"{db_name}.{name}")
            finally:
                db_client.close()
        return loading

    def _write_etcd_config(self) -> Path:
        client = f"http://127.0.0.1:{self.ports['etcd_port']}"
        peer = f"http://127.0.0.1:{self.ports['etcd_peer_port']}"
        path = self.data_dir / "configs" / "embed-etcd.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"listen-client-urls: {client}\n"
            f"advertise-client-urls: {client}\n"
            f"listen-peer-urls: {peer}\n"
            f"initial-advertise-peer-urls: {peer}\n"
            f"initial-cluster: default={peer}\n"
        )
        return path

    def _link_bin_cache(self) -> None:
        """Point data_dir/bin at binaries unpacked once by the install script."""
        cache = Path(self.executable).resolve().parent.parent / BIN_CACHE_SUBDIR / "bin"
        link = self.data_dir / "bin"
        if (cache / "milvus").is_file() and not link.exists() and not link.is_symlink():
            link.symlink_to(cache, target_is_directory=True)


def _main() -> None:  # python -m testing.servers.milvus_standalone DATA_DIR: run one by hand
    data_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/milvus-standalone")
    with MilvusStandaloneServer(data_dir=data_dir) as server:
        print(f"ready at {server.uri}, log {server.log_path}; Ctrl+C to stop", flush=True)
        try:
            while server.running:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    _main()
