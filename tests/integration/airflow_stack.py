"""A real Airflow 3.3 deployment for integration tests: api-server, scheduler, dag-processor, triggerer.

Each component is its own ``airflow`` process (LocalExecutor, sqlite metadata DB) in a throwaway
AIRFLOW_HOME, exactly as ``airflow standalone`` runs them but with one stdout log per component so
tests can read the triggerer's own log. Workers reach the api-server's Execution API on loopback.

    with airflow_stack(home, dags_folder, env={"AIRFLOW_CONN_MILVUS_DEFAULT": ...}) as stack:
        stack.wait_for_dags(["my_dag"])
        run_id = stack.trigger("my_dag", conf={"collection": "c1"})
        assert stack.wait_for_run("my_dag", run_id) == "success"
        stack.task_log("my_dag", run_id, "my_task")

Requires only the Python packages of the test venv (``apache-airflow``): no system packages.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testing.ports import ATTEMPTS, free_port, port_taken

AIRFLOW = str(Path(sys.executable).with_name("airflow"))
REPO_ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
FINAL_RUN_STATES = ("success", "failed")
# apache/airflow #72716: a stale executor event fails a deferred task whose trigger fired quickly.
DEFERRAL_RACE_MESSAGE = "but the task instance's state attribute is queued"


class AirflowStackError(RuntimeError):
    """The stack did not start, or a run did not reach a final state in time."""


class ApiError(AirflowStackError):
    """The REST API answered an error status (its body in the message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class TriggerRow:
    id: int
    classpath: str
    kwargs: str
    task: tuple[str, str, str] | None  # (dag_id, run_id, task_id) of the deferred task, when seen


class TriggerRecorder(threading.Thread):
    """Polls the ``trigger`` table: trigger rows are deleted once their task resumes, so record them while alive."""

    def __init__(self, db_path: Path, interval: float = 0.25) -> None:
        super().__init__(name="trigger-recorder", daemon=True)
        self.db_path = db_path
        self.interval = interval
        self.rows: dict[int, TriggerRow] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(sqlite3.Error):
                self.poll()

    def poll(self) -> None:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=1)) as db:
            rows = db.execute(
                "SELECT t.id, t.classpath, t.kwargs, ti.dag_id, ti.run_id, ti.task_id "
                "FROM trigger t LEFT JOIN task_instance ti ON ti.trigger_id = t.id"
            ).fetchall()
        with self._lock:
            for trigger_id, classpath, kwargs, dag_id, run_id, task_id in rows:
                known = self.rows.get(trigger_id)
                task = (dag_id, run_id, task_id) if dag_id else (known.task if known else None)
                self.rows[trigger_id] = TriggerRow(trigger_id, classpath, kwargs, task)

    def for_task(self, dag_id: str, run_id: str, task_id: str) -> list[TriggerRow]:
        with self._lock:
            return [row for row in self.rows.values() if row.task == (dag_id, run_id, task_id)]

    def all(self) -> list[TriggerRow]:
        with self._lock:
            return list(self.rows.values())

    def stop(self) -> None:
        self._stop.set()


@dataclass
class AirflowStack:
    home: Path
    dags_folder: Path
    port: int
    env_overrides: dict[str, str]
    component_env: dict[str, dict[str, str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    triggerers: int = 1  # more than one: "triggerer", "triggerer-2", ... (Airflow's triggerer HA)
    recorder: TriggerRecorder | None = None

    # ----- environment and processes -------------------------------------------------------------
    @property
    def db_path(self) -> Path:
        return self.home / "airflow.db"

    @property
    def logs_folder(self) -> Path:
        return self.home / "logs"

    @property
    def process_logs_folder(self) -> Path:
        return self.home / "process-logs"

    @property
    def staging_folder(self) -> Path:
        return self.home / "staging"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db_path}",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs_folder),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__EXPOSE_CONFIG": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                # The task supervisor notices its task process exiting only at its next heartbeat (default 5 s):
                # 1 s makes every task ~4 s faster and narrows apache/airflow #72716 (see DEFAULT_ARGS in the DAGs).
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__MILVUS__STAGING_URL": str(self.staging_folder),
                "PYTHONPATH": os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
            }
        )
        env.update(self.env_overrides)
        return env

    def cli(self, *args: str, timeout: float = 180, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [AIRFLOW, *args],
            check=False,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
        )
        if check and result.returncode != 0:
            raise AirflowStackError(
                f"airflow {' '.join(args)} exited {result.returncode}\n--- stdout ---\n{result.stdout[-4000:]}"
                f"\n--- stderr ---\n{result.stderr[-4000:]}"
            )
        return result

    def start(self, *, ready_timeout: float = 180) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.process_logs_folder.mkdir(exist_ok=True)
        self.staging_folder.mkdir(exist_ok=True)
        self.cli("db", "migrate", timeout=300)
        self._start_api_server(ready_timeout)
        for name in self.component_names:
            if name != "api-server":  # the others get its port, final now, in their environment
                self.start_component(name)
        self.recorder = TriggerRecorder(self.db_path)
        self.recorder.start()
        self._wait_healthy(ready_timeout)

    @property
    def component_names(self) -> list[str]:
        return [*COMPONENTS, *(f"triggerer-{n}" for n in range(2, self.triggerers + 1))]

    def start_component(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or restart) one component; ``triggerer-N`` is another ``airflow triggerer``."""
        command = "triggerer" if name.startswith("triggerer") else name
        log_file = open(self.process_logs_folder / f"{name}.log", "ab")  # handed to the child
        self.processes[name] = subprocess.Popen(
            [AIRFLOW, command],
            env=self.env() | self.component_env.get(name, {}),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.home,
            start_new_session=True,
        )
        log_file.close()
        return self.processes[name]

    def _start_api_server(self, timeout: float) -> None:
        """
        Start the api-server first and wait until it serves; if its port was taken meanwhile, use another.

        The port is picked free, then bound by the api-server seconds later: another process can take it
        in between. Every other component is told the port, so they start only once the api-server holds it.
        """
        log_path = self.process_logs_folder / "api-server.log"
        for attempt in range(1, ATTEMPTS + 1):
            start = log_path.stat().st_size if log_path.exists() else 0
            process = self.start_component("api-server")
            deadline = time.monotonic() + timeout
            while process.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError, ValueError, ApiError):
                    self.api("GET", "/api/v2/monitor/health", attempts=1)
                    if process.poll() is None:  # still ours: a server holding the port first makes it exit
                        return
                time.sleep(0.5)
            output = log_path.read_bytes()[start:].decode(errors="replace")
            if process.poll() is None or attempt == ATTEMPTS or not port_taken(output):
                raise AirflowStackError(f"airflow api-server not serving on {self.base_url}\n{self.diagnostics()}")
            self.port = free_port()

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        health: Any = None
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError, ValueError, ApiError):
                health = self.api("GET", "/api/v2/monitor/health", attempts=1)
                components = ("metadatabase", "scheduler", "triggerer", "dag_processor")
                if all(health.get(c, {}).get("status") == "healthy" for c in components):
                    return
            time.sleep(1)
        raise AirflowStackError(f"Airflow not healthy after {timeout}s: {health}\n{self.diagnostics()}")

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AirflowStackError(f"airflow {name} exited with {process.returncode}\n{self.diagnostics()}")

    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.stop()
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def diagnostics(self, lines: int = 30) -> str:
        parts = []
        for name in self.component_names:
            tail = "\n".join(self.process_log(name).splitlines()[-lines:])
            parts.append(f"--- {name} (last {lines} lines) ---\n{tail}")
        return "\n".join(parts)

    # ----- REST API ------------------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, *, timeout: float = 30, attempts: int = 4) -> Any:
        """
        Call the REST API; an answer of 500 is asked again (``attempts`` in all).

        The stack's metadata DB is sqlite: under load, the API server's write can meet the scheduler's lock
        and answer 500. A repeated POST that the first attempt carried out answers 409 (``trigger`` accepts it).
        """
        data = json.dumps(body).encode() if body is not None else None
        attempt = 1
        while True:
            request = urllib.request.Request(
                f"{self.base_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout) as response:
                    return json.loads(response.read() or b"null")
            except urllib.error.HTTPError as error:
                if error.code != 500 or attempt == attempts:
                    detail = error.read().decode(errors="replace")[:2000]
                    message = f"{method} {path}: HTTP {error.code}: {detail}\n{self.diagnostics()}"
                    raise ApiError(error.code, message) from None
            time.sleep(attempt)
            attempt += 1

    # ----- DAGs and runs ------------------------------------------------------------------------
    def wait_for_dags(self, dag_ids: list[str], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        missing = set(dag_ids)
        while time.monotonic() < deadline:
            rows = self.query("SELECT dag_id FROM dag WHERE is_paused = 0 AND is_stale = 0")
            missing = set(dag_ids) - {r[0] for r in rows}
            if not missing:
                return
            self._check_alive()
            time.sleep(1)
        errors = self.query("SELECT filename, stacktrace FROM import_error")
        raise AirflowStackError(f"DAGs not parsed after {timeout}s: {sorted(missing)}; import errors: {errors}")

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_id: str | None = None) -> str:
        run_id = run_id or f"it__{uuid.uuid4().hex[:10]}"
        try:
            self.api(
                "POST",
                f"/api/v2/dags/{dag_id}/dagRuns",
                {"dag_run_id": run_id, "logical_date": None, "conf": dict(conf or {})},
            )
        except ApiError as error:
            if error.status != 409 or self.run_state(dag_id, run_id) is None:  # 409: an earlier attempt made it
                raise
        return run_id

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return rows[0][0] if rows else None

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.run_state(dag_id, run_id)
            if state in FINAL_RUN_STATES:
                return state
            self._check_alive()
            time.sleep(0.5)
        raise AirflowStackError(
            f"{dag_id}/{run_id} still {state} after {timeout}s; tasks: {self.task_states(dag_id, run_id)}\n"
            f"{self.diagnostics()}"
        )

    def run_dag(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, timeout: float = 180) -> tuple[str, str]:
        run_id = self.trigger(dag_id, conf)
        return run_id, self.wait_for_run(dag_id, run_id, timeout=timeout)

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        rows = self.query("SELECT task_id, state FROM task_instance WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        return dict(rows)

    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int:
        rows = self.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        return int(rows[0][0]) if rows else 0

    def mapped_states(self, dag_id: str, run_id: str, task_id: str) -> dict[int, str | None]:
        """The state of each mapped task instance of ``task_id``, by map index."""
        rows = self.query(
            "SELECT map_index, state FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
            (dag_id, run_id, task_id),
        )
        return dict(rows)

    def task_process(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> int | None:
        """
        The pid of the process running the task instance's current try, or None.

        Airflow's task runner (the process the worker's supervisor forks, which runs ``execute``) names
        itself ``airflow worker -- <task instance id>``; the id is the try's, from the metadata DB.
        """
        rows = self.query(
            "SELECT id FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        if not rows:
            return None
        stored = rows[0][0]  # the UUID as the DB column keeps it (text, with or without dashes, or 16 bytes)
        ti_id = uuid.UUID(bytes=stored) if isinstance(stored, bytes) and len(stored) == 16 else uuid.UUID(str(stored))
        title = f"airflow worker -- {ti_id}".encode()
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if (entry / "cmdline").read_bytes().rstrip(b"\0 ") == title:
                        return int(entry.name)
        return None

    def clear_and_rerun(self, dag_id: str, run_id: str, *, timeout: float = 180) -> str:
        """Clear a finished run (all its tasks run again, as the UI's Clear does) and wait for it to finish."""
        self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/clear", {"dry_run": False})
        deadline = time.monotonic() + 30
        while self.run_state(dag_id, run_id) in FINAL_RUN_STATES and time.monotonic() < deadline:
            time.sleep(0.3)
        return self.wait_for_run(dag_id, run_id, timeout=timeout)

    # ----- XCom and metadata DB -----------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        for attempt in range(20):
            try:
                with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5)) as db:
                    return db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == 19:
                    raise
                time.sleep(0.2)
        return []

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        rows = self.query(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = ? AND map_index = ?",
            (dag_id, run_id, task_id, key, map_index),
        )
        if not rows:
            raise KeyError(f"no XCom {key} for {dag_id}/{run_id}/{task_id}")
        value = rows[0][0]
        decoded = json.loads(value) if isinstance(value, (str, bytes)) else value
        # The JSON column may hold a JSON-encoded string of the serialized value.
        return json.loads(decoded) if isinstance(decoded, str) and decoded[:1] in "[{" else decoded

    def table_names(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM sqlite_master WHERE type = 'table'")]

    def table_text(self, table: str) -> str:
        """Every row of ``table`` as text, to search for strings that must not be stored."""
        rows = self.query(f'SELECT * FROM "{table}"')
        return "\n".join(
            " | ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in row) for row in rows
        )

    # ----- logs ---------------------------------------------------------------------------------
    def process_log(self, name: str) -> str:
        path = self.process_logs_folder / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def deferral_race_failures(self) -> list[str]:
        """Scheduler log lines of apache/airflow #72716 (retried by the test DAGs' ``retries``)."""
        return [line for line in self.process_log("scheduler").splitlines() if DEFERRAL_RACE_MESSAGE in line]

    def task_log_files(
        self, dag_id: str | None = None, run_id: str | None = None, task_id: str | None = None
    ) -> list[Path]:
        """Task log files (``attempt=N.log``) and the triggerer's per-trigger files beside them."""
        folder = self.logs_folder
        if dag_id:
            folder = folder / f"dag_id={dag_id}"
            if run_id:
                folder = folder / f"run_id={run_id}"
                if task_id:
                    folder = folder / f"task_id={task_id}"
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_log_files(dag_id, run_id, task_id))

    def all_log_files(self) -> list[Path]:
        return sorted(p for p in self.logs_folder.rglob("*") if p.is_file()) if self.logs_folder.exists() else []


@contextlib.contextmanager
def airflow_stack(
    home: Path,
    dags_folder: Path,
    *,
    env: Mapping[str, str] | None = None,
    component_env: Mapping[str, Mapping[str, str]] | None = None,
    ready_timeout: float = 180,
    triggerers: int = 1,
) -> Iterator[AirflowStack]:
    """
    Start api-server, scheduler, dag-processor and triggerer in ``home``; stop them all on exit.

    ``env`` goes to every process (and CLI call); ``component_env`` to one component, e.g.
    ``{"triggerer": {"PYTHONASYNCIODEBUG": "1"}}`` to have asyncio name slow trigger callbacks.
    """
    overrides = {
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        **(env or {}),
    }
    stack = AirflowStack(
        home=Path(home),
        dags_folder=Path(dags_folder),
        port=free_port(),
        env_overrides=overrides,
        component_env={name: dict(values) for name, values in (component_env or {}).items()},
        triggerers=triggerers,
    )
    try:
        stack.start(ready_timeout=ready_timeout)
        yield stack
    finally:
        stack.stop()


DAGS_FOLDER = Path(__file__).resolve().parent / "dags"
EMBEDDING_MODEL = "test-embedding"


def connection_env(
    *,
    milvus_uri: str,
    milvus_token: str,
    embedding_base_url: str,
    embedding_api_key: str,
    extra_embedding_connections: Mapping[str, tuple[str, str]] | None = None,
    milvus_embedding_conn_id: str | None = None,
) -> dict[str, str]:
    """
    ``AIRFLOW_CONN_*`` for every Airflow process: ``milvus_default`` and ``embeddings`` (+ extra openai conns).

    ``milvus_embedding_conn_id`` sets the embedding connection on ``milvus_default`` itself, as a deployment
    configures the example DAGs (which name no embedding connection) for dense vectors.
    """
    extra: dict[str, Any] = {"timeout": 10}
    if milvus_embedding_conn_id:
        extra["embedding_conn_id"] = milvus_embedding_conn_id
    env = {
        "AIRFLOW_CONN_MILVUS_DEFAULT": json.dumps(
            {"conn_type": "milvus", "host": milvus_uri, "password": milvus_token, "extra": extra}
        ),
    }
    embedding_conns = {"embeddings": (embedding_base_url, embedding_api_key), **(extra_embedding_connections or {})}
    for conn_id, (base_url, api_key) in embedding_conns.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
            {
                "conn_type": "openai",
                "host": base_url,
                "password": api_key,
                "extra": {"model": EMBEDDING_MODEL, "max_retries": 1, "timeout": 120},
            }
        )
    return env
