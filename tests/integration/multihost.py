"""A real Airflow deployment laid out as if on several hosts, shared by the multi-host tests.

- two ``airflow triggerer`` processes (Airflow's triggerer HA), heartbeat every 2 s and a short
  ``[triggerer] triggerer_health_check_threshold``, so a killed triggerer's triggers are taken over in seconds;
- the worker (LocalExecutor, forked by the scheduler) and each triggerer get their own TMPDIR, so nothing
  can pass between them through a local temp directory;
- ``[milvus] staging_url`` is ``s3://staging_s3@<bucket>/<prefix>`` on a real S3 HTTP endpoint on loopback
  (moto's server), reached through an Airflow ``aws`` connection;
- one OpenAI-compatible embeddings server whose latency tests change at run time, also set on
  ``milvus_default`` itself (its ``embedding_conn_id``), as a deployment configures the example DAGs;
- only triggered runs (``[scheduler] use_job_schedule = False``): the example DAG it runs is ``@daily``.

Import the fixtures into a test module: ``from tests.integration.multihost import multihost  # noqa: F401``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from testing.servers.embeddings_server import EmbeddingServer
from tests.integration.airflow_stack import DAGS_FOLDER, AirflowStack, airflow_stack, connection_env

EMBEDDING_KEY = "sk-multihost-embedding-key"
MILVUS_TOKEN = "multihost-milvus-token"
BUCKET = "milvus-staging"
PREFIX = "airflow/staging"
STAGING_CONN = "staging_s3"
HEALTH_CHECK_THRESHOLD = 10  # seconds without a heartbeat before a triggerer's triggers are reassigned
TRIGGERERS = ("triggerer", "triggerer-2")
# Every component poses as its own host (``[core] hostname_callable``), like a deployment across machines.
HOSTNAMES = {"scheduler": "worker-host", "triggerer": "triggerer-host-1", "triggerer-2": "triggerer-host-2"}
HOSTS = {host: name for name, host in HOSTNAMES.items()}
DAG_IDS = [
    "milvus_it_failover_add",
    "milvus_it_failover_delete",
    "milvus_it_failover_search",
    "milvus_it_writers_inline",
    "milvus_it_writers_deferred",
    "milvus_it_writers_forced",
    "milvus_sharded_ingest",  # the example DAG (tests/integration/dags/milvus_it_sharded.py)
]


@dataclass
class MultiHost:
    stack: AirflowStack
    s3: Any
    embeddings: EmbeddingServer
    tmpdirs: dict[str, Path]
    slow_milvus: SlowProxy  # connection id "milvus_slow"
    standalone_uri: str | None = None  # connection id "milvus_standalone": a real Milvus 2.3.5, when installed
    killed: list[dict[str, Any]] = field(default_factory=list)
    killed_at: float = 0.0  # time.monotonic() when the last kill_triggerer sent SIGKILL

    @property
    def staging_url(self) -> str:
        return f"s3://{STAGING_CONN}@{BUCKET}/{PREFIX}"

    def staged_keys(self) -> list[str]:
        return self.s3.keys(BUCKET, PREFIX)

    def local_staged_files(self) -> list[Path]:
        """Anything that looks like staged data in the components' temp dirs or the stack's local staging dir."""
        roots = [*self.tmpdirs.values(), self.stack.staging_folder]
        return [
            p
            for root in roots
            if root.exists()
            for p in root.rglob("*")
            if p.is_file() and ("documents" in p.name or "queries" in p.name or "result" in p.name)
        ]

    # ----- triggerers ----------------------------------------------------------------------------
    def trigger_of(self, dag_id: str, run_id: str, task_id: str) -> tuple[int | None, int | None]:
        """(trigger id, triggerer job id) of a deferred task instance, or Nones."""
        rows = self.stack.query(
            "SELECT t.id, t.triggerer_id FROM task_instance ti JOIN trigger t ON t.id = ti.trigger_id "
            "WHERE ti.dag_id = ? AND ti.run_id = ? AND ti.task_id = ?",
            (dag_id, run_id, task_id),
        )
        return (rows[0][0], rows[0][1]) if rows else (None, None)

    def triggerer_name(self, job_id: int) -> str | None:
        """The component running triggerer job ``job_id`` (each poses as its own host: job.hostname)."""
        rows = self.stack.query("SELECT hostname FROM job WHERE id = ?", (job_id,))
        return HOSTS.get(rows[0][0]) if rows else None

    def alive_triggerer_jobs(self) -> list[int]:
        rows = self.stack.query(
            "SELECT id FROM job WHERE job_type = 'TriggererJob' AND end_date IS NULL "
            "AND latest_heartbeat > datetime('now', ?)",
            (f"-{HEALTH_CHECK_THRESHOLD} seconds",),
        )
        return [r[0] for r in rows]

    def wait_for_assignment(
        self, dag_id: str, run_id: str, task_id: str, *, not_job: int | None = None, timeout: float = 120
    ) -> tuple[int, int, str]:
        """Wait until the task's trigger is assigned (to another triggerer than ``not_job``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            trigger_id, job_id = self.trigger_of(dag_id, run_id, task_id)
            if trigger_id is not None and job_id is not None and job_id != not_job:
                name = self.triggerer_name(job_id)
                if name is not None:
                    return trigger_id, job_id, name
            state = self.stack.task_states(dag_id, run_id).get(task_id)
            if state in ("success", "failed", "up_for_retry"):
                raise AssertionError(f"{dag_id}/{task_id} ended {state} before its trigger was (re)assigned")
            time.sleep(0.2)
        raise AssertionError(
            f"trigger of {dag_id}/{run_id}/{task_id} not assigned within {timeout}s "
            f"(not_job={not_job})\n{self.stack.diagnostics()}"
        )

    def kill_triggerer(self, name: str) -> list[int]:
        """SIGKILL a triggerer and every process under it (its trigger runner has its own process group)."""
        process = self.stack.processes.pop(name)
        pids = [process.pid, *_descendants(process.pid)]
        self.killed_at = time.monotonic()  # the moment SIGKILL is sent (tests compare the slow proxy's times)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=30)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = [pid for pid in pids[1:] if _alive(pid)]
        assert not survivors, f"processes of {name} survived SIGKILL: {survivors}"
        return pids

    def wait_for_triggerers(self, count: int, timeout: float = 120) -> None:
        """Wait until ``count`` triggerer processes run and as many triggerer jobs heartbeat."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [n for n in TRIGGERERS if n in self.stack.processes and self.stack.processes[n].poll() is None]
            if len(running) >= count and len(self.alive_triggerer_jobs()) >= count:
                return
            time.sleep(0.5)
        raise AssertionError(f"not {count} live triggerers within {timeout}s\n{self.stack.diagnostics()}")


@dataclass
class HeldChunk:
    """One client->server chunk the slow proxy held: when it arrived, when it went on, and its bytes."""

    received_at: float  # time.monotonic() of this (the test's) process
    forwarded_at: float | None
    data: bytes


class SlowProxy:
    """A TCP proxy in front of Milvus that holds every client->server chunk for ``delay`` seconds.

    ``hold(markers, seconds)`` holds the chunks that contain every one of ``markers`` (the bytes of one
    request) that long instead: a delete is one Milvus request, and the test kills the triggerer while
    the proxy holds it. Every held chunk is kept in ``held`` with when it arrived and when it went on,
    so the test shows the delete was in flight at the kill instead of assuming it.
    """

    def __init__(self, upstream: str, delay: float = 0.0) -> None:
        host, port = upstream.rsplit("//", 1)[-1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.delay = delay
        self.held: list[HeldChunk] = []
        self._hold: tuple[list[bytes], float] | None = None
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, False), daemon=True).start()

    def hold(self, markers: list[bytes], seconds: float) -> None:
        """Hold the client->server chunks containing all ``markers`` for ``seconds`` (the others: ``delay``)."""
        self._hold = (markers, seconds)

    def holding(self, markers: list[bytes]) -> HeldChunk | None:
        """A chunk with all ``markers`` that the proxy holds right now (received, not yet forwarded)."""
        return next(
            (c for c in self.held if c.forwarded_at is None and all(m in c.data for m in markers)),
            None,
        )

    def reset(self) -> None:
        self.delay, self._hold = 0.0, None
        self.held.clear()

    def _delay_for(self, data: bytes) -> float:
        if self._hold is not None and all(m in data for m in self._hold[0]):
            return self._hold[1]
        return self.delay

    def _pipe(self, source: socket.socket, target: socket.socket, delayed: bool) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                delay = self._delay_for(data) if delayed else 0.0
                if delay:
                    chunk = HeldChunk(received_at=time.monotonic(), forwarded_at=None, data=data)
                    self.held.append(chunk)
                    time.sleep(delay)
                    target.sendall(data)
                    chunk.forwarded_at = time.monotonic()
                else:
                    target.sendall(data)
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closed = True
        self._listener.close()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# The deployment is stopped as soon as no further test needs it (tests/integration/conftest.py), not at
# the end of the session: an idle Airflow deployment would otherwise keep using CPU through the rest of the suite.
_RUNNING: dict[str, Any] = {}


@pytest.fixture(scope="session")
def multihost(
    milvus_lite: Any, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[MultiHost]:
    pytest.importorskip("moto", reason="the multi-host tests need the test extra (moto[server], s3fs, amazon provider)")
    pytest.importorskip("s3fs")
    pytest.importorskip("airflow.providers.amazon")
    if _RUNNING.get("stopped"):
        pytest.fail("the multi-host deployment was stopped after its last adjacent test: keep its tests together")
    from testing.servers.milvus_standalone import find_milvus_server_executable

    # The real server too, where one is installed (CI installs it): inserts there keep duplicate keys.
    standalone = request.getfixturevalue("milvus_standalone") if find_milvus_server_executable() else None
    with contextlib.ExitStack() as resources:
        _RUNNING["resources"] = resources
        yield _start(resources, milvus_lite, tmp_path_factory, standalone)
        _RUNNING.pop("resources", None)


def stop_multihost() -> None:
    """Stop the deployment now (idempotent); later requests for the fixture fail."""
    resources = _RUNNING.pop("resources", None)
    if resources is not None:
        _RUNNING["stopped"] = True
        resources.close()


def _start(
    resources: contextlib.ExitStack, milvus_lite: Any, tmp_path_factory: pytest.TempPathFactory, standalone: Any
) -> MultiHost:
    from testing.servers.s3_server import S3Server

    root = tmp_path_factory.mktemp("multihost")
    tmpdirs = {name: root / f"tmp-{name}" for name in ("worker", *TRIGGERERS)}
    for path in tmpdirs.values():
        path.mkdir()
    embeddings = resources.enter_context(EmbeddingServer(dimensions=32, api_key=EMBEDDING_KEY))
    s3 = resources.enter_context(S3Server(log_path=root / "s3.log"))
    s3.create_bucket(BUCKET)
    slow = SlowProxy(milvus_lite.uri)
    resources.callback(slow.close)
    env = connection_env(
        milvus_uri=milvus_lite.uri,
        milvus_token=MILVUS_TOKEN,
        embedding_base_url=embeddings.base_url,
        embedding_api_key=EMBEDDING_KEY,
        milvus_embedding_conn_id="embeddings",
    ) | {
        f"AIRFLOW_CONN_{STAGING_CONN.upper()}": s3.connection_json(),
        "AIRFLOW_CONN_MILVUS_SLOW": json.dumps(
            {"conn_type": "milvus", "host": slow.uri, "password": MILVUS_TOKEN, "extra": {"timeout": 60}}
        ),
        **(
            {
                "AIRFLOW_CONN_MILVUS_STANDALONE": json.dumps(
                    {"conn_type": "milvus", "host": standalone.uri, "password": MILVUS_TOKEN, "extra": {"timeout": 30}}
                )
            }
            if standalone is not None
            else {}
        ),
        "AIRFLOW__MILVUS__STAGING_URL": f"s3://{STAGING_CONN}@{BUCKET}/{PREFIX}",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": str(HEALTH_CHECK_THRESHOLD),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.integration.hostname.hostname",
        # Tests trigger every run: a scheduled DAG (the sharded example, @daily) must not start one on its own.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        # Tasks pull multi-MB XComs (20k-50k documents) from the one api-server worker on a busy 2-core box.
        "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    }
    component_env = {  # LocalExecutor workers are the scheduler's children: they inherit its TMPDIR and host
        name: {"TMPDIR": str(tmpdirs["worker" if name == "scheduler" else name]), "IT_HOSTNAME": host}
        for name, host in HOSTNAMES.items()
    }
    stack = resources.enter_context(
        airflow_stack(root / "airflow", DAGS_FOLDER, env=env, component_env=component_env, triggerers=len(TRIGGERERS))
    )
    stack.wait_for_dags(DAG_IDS)
    return MultiHost(
        stack=stack,
        s3=s3,
        embeddings=embeddings,
        tmpdirs=tmpdirs,
        slow_milvus=slow,
        standalone_uri=standalone.uri if standalone is not None else None,
    )


class _Figures:
    """The multi-host tests' figures, kept apart from the fault suite's published ones.

    tests/faults/test_published_figures.py compares the published figures with those computed by
    tests/faults and the secret scan only; these are printed at the end of a run
    (tests/integration/conftest.py) in the same terms, ready to join that table once they are published.
    """

    def __init__(self) -> None:
        self.faults: dict[str, int] = {}
        self.entities_expected = 0
        self.entities_found = 0
        self.read_backs = 0
        self.bad_inputs: list[str] = []
        self.measurements: dict[str, str] = {}

    @property
    def ran(self) -> bool:
        return bool(self.faults or self.read_backs or self.bad_inputs or self.measurements)

    def lines(self) -> list[str]:
        faults = ", ".join(f"{kind} {n}" for kind, n in sorted(self.faults.items())) or "none"
        return [
            f"faults injected: {sum(self.faults.values())} ({faults})",
            f"entities expected vs found: {self.entities_expected} vs {self.entities_found} "
            f"({self.read_backs} read-backs with pymilvus, ids compared as sets and lists)",
            f"bad staging configurations rejected before deferring: {len(self.bad_inputs)} "
            f"({', '.join(self.bad_inputs) or 'none'})",
            *(f"{name}: {value}" for name, value in sorted(self.measurements.items())),
        ]


FIGURES = _Figures()


def record_figure(
    kind: str,
    *,
    faults: int = 0,
    expected: int | None = None,
    found: int | None = None,
    measure: tuple[str, str] | None = None,
    bad_input: str | None = None,
    bad_input_outcome: str = "rejected",
) -> None:
    """Record what a test saw, before it asserts (``bad_input_outcome`` as in tests/faults/report.py)."""
    if "(slow)" not in kind:  # the CI suite's published fault figures (tests/faults/report.py)
        _publish(
            kind,
            faults=faults,
            expected=expected,
            found=found,
            measure=measure,
            bad_input=bad_input,
            bad_input_outcome=bad_input_outcome,
        )
    if faults:
        FIGURES.faults[kind] = FIGURES.faults.get(kind, 0) + faults
    if expected is not None and found is not None:
        FIGURES.read_backs += 1
        FIGURES.entities_expected += expected
        FIGURES.entities_found += found
    if measure is not None:
        FIGURES.measurements[measure[0]] = measure[1]
    if bad_input is not None and bad_input_outcome == "rejected":
        FIGURES.bad_inputs.append(bad_input)


def _publish(
    kind: str,
    *,
    faults: int,
    expected: int | None,
    found: int | None,
    measure: tuple[str, str] | None,
    bad_input: str | None,
    bad_input_outcome: str,
) -> None:
    from tests.faults.report import FIGURES as PUBLISHED

    PUBLISHED.fault(kind, faults)
    if expected is not None and found is not None:
        PUBLISHED.entities(expected, found)
    if measure is not None:
        PUBLISHED.measure(measure[0], measure[1])
    if bad_input is not None:
        PUBLISHED.bad_input(f"staging: {bad_input}", bad_input_outcome)
