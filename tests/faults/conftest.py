"""Fault-suite fixtures: own Milvus Lite servers to kill, connections carrying sentinel secrets, checks.

Every connection made here carries a sentinel Milvus token (Milvus Lite ignores tokens, so it is
harmless) and the embedding server's API key; every error message a test checks goes through
``assert_clear_error``, which asserts the problem's key words and counts secrets found (must be 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_milvus.local_server import (
    LocalServer,
    start_local_server,
    stop_local_server,
)

from tests.conftest import EMBEDDING_API_KEY
from tests.faults.report import FIGURES, MISHANDLED, REJECTED, FaultFigures, write_docs

MILVUS_SENTINEL = "milvus-SENTINEL-token-5e1f0c"  # put on every Milvus connection; must never show up
EMBEDDING_SENTINEL = "sk-SENTINEL-wrong-key-93d2a7"  # a wrong embedding API key, for 401 tests
SECRETS = [MILVUS_SENTINEL, EMBEDDING_SENTINEL, EMBEDDING_API_KEY]
CONNECTION_TIMEOUT = 5.0

_FAULTS_DIR = Path(__file__).resolve().parent


# ---------------------------------------------------------------------------------------------------------
# collection, selection and the end-of-run figures


PUBLISHED_FIGURES_TEST = "test_published_figures.py"
# Tests whose figures are published: the fault suite, the integration tier's secret scan, and the
# multi-host tests (triggerer failover, object-storage staging, several writers).
SECRET_SCAN_TEST = _FAULTS_DIR.parent / "integration" / "test_secrets_never_leak.py"
MULTIHOST_TESTS = tuple(
    _FAULTS_DIR.parent / "integration" / name
    for name in ("test_triggerer_failover.py", "test_s3_staging.py", "test_several_writers.py")
)
OUTCOMES: dict[str, str] = {}  # nodeid -> passed / failed / skipped, for the figures check


def contributes_figures(item: pytest.Item) -> bool:
    """Its figures are in the CI suite's published block (slow tests have their own block)."""
    path = Path(str(item.fspath))
    if path.name == PUBLISHED_FIGURES_TEST or "slow" in item.keywords:
        return False
    return _FAULTS_DIR in path.parents or path == SECRET_SCAN_TEST or path in MULTIHOST_TESTS


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``pytest tests/faults`` skips the slow load tests; ``-m slow`` (any -m) selects them."""
    if config.getoption("markexpr", ""):
        return
    skip = pytest.mark.skip(reason="slow load test: run with `pytest tests/faults -m slow`")
    for item in items:
        if "slow" in item.keywords and _FAULTS_DIR in Path(str(item.fspath)).parents:
            item.add_marker(skip)


class _FiguresPlugin:
    """Registered as a plugin, not as conftest hooks: conftest ``pytest_runtest_*`` hooks only see the
    tests under their own directory, and the integration tier's secret scan lives elsewhere."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """The published-figures check runs after every other test (the integration tier included)."""
        last = [item for item in items if Path(str(item.fspath)).name == PUBLISHED_FIGURES_TEST]
        items[:] = [item for item in items if item not in last] + last

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            OUTCOMES[report.nodeid] = "failed"
        elif report.skipped and OUTCOMES.get(report.nodeid) != "failed":
            OUTCOMES[report.nodeid] = "skipped"
        elif report.when == "call" and report.passed:
            OUTCOMES.setdefault(report.nodeid, "passed")


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("fault-figures"):
        config.pluginmanager.register(_FiguresPlugin(), "fault-figures")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not FIGURES.ran:
        return  # no fault test ran
    outcome = {key: len(terminalreporter.stats.get(key, [])) for key in ("passed", "failed", "error", "skipped")}
    markexpr = config.getoption("markexpr", "")
    selection = f" -m '{markexpr}'" if markexpr else ""
    terminalreporter.section("fault suite figures")
    for line in FIGURES.lines(outcome, selection):
        terminalreporter.write_line(line)
    # The CI suite's figures are checked and written by test_published_figures.py; the slow run's here.
    if os.environ.get("FAULTS_UPDATE_DOCS") == "1" and markexpr == "slow":
        if exitstatus != 0 or outcome["failed"] or outcome["error"]:
            terminalreporter.write_line("slow-suite figures NOT written: the run did not pass")
        else:
            written = write_docs(FIGURES, outcome, selection, "slow")
            terminalreporter.write_line(f"slow-suite figures written to {', '.join(p.name for p in written)}")


@pytest.fixture
def figures() -> FaultFigures:
    return FIGURES


def assert_clear_error(error: BaseException | str, *keywords: str, where: str = "") -> str:
    """The message names the problem (every keyword, case-insensitive) and holds no secret."""
    text = error if isinstance(error, str) else str(error)
    FIGURES.message(text, SECRETS, where or text[:60])
    for secret in SECRETS:
        assert secret not in text, f"secret leaked in error message: {text}"
    lowered = text.lower()
    missing = [k for k in keywords if k.lower() not in lowered]
    assert not missing, f"error message lacks {missing}: {text}"
    return text


def reject(
    figures: FaultFigures, name: str, run: Callable[[], Any], *keywords: str, untouched: Callable[[], bool]
) -> str:
    """Run a bad input, record how it really ended, then assert it was rejected cleanly; returns the message.

    Recorded as rejected only when all three were seen: a ``MilvusProviderError``, a message naming the
    problem (every keyword, no secret) and ``untouched()`` (the data as before: nothing created, written or
    deleted); otherwise as mishandled. The outcome is recorded before anything is asserted, so the
    published count is of outcomes checked, not of calls made.
    """
    from airflow_provider_milvus.exceptions import MilvusProviderError

    error: MilvusProviderError | None = None
    try:
        run()
    except MilvusProviderError as raised:
        error = raised
    message = str(error) if error is not None else ""
    named = error is not None and all(k.lower() in message.lower() for k in keywords)
    clean = not any(secret and secret in message for secret in SECRETS)
    unchanged = untouched()
    figures.bad_input(name, REJECTED if error is not None and named and clean and unchanged else MISHANDLED)
    assert error is not None, f"{name}: accepted, not rejected"
    assert unchanged, f"{name}: rejected, but the data changed (something was created, written or deleted)"
    return assert_clear_error(error, *keywords, where=name)


# ---------------------------------------------------------------------------------------------------------
# connections


@pytest.fixture
def make_milvus_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``make_milvus_conn(host, conn_id="faults_milvus", timeout=5, **extra)`` -> conn id (env var)."""

    def make(host: str, conn_id: str = "faults_milvus", *, timeout: float = CONNECTION_TIMEOUT, **extra: Any) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps(
                {
                    "conn_type": "milvus",
                    "host": host,
                    "password": MILVUS_SENTINEL,
                    "extra": {"timeout": timeout, **extra},
                }
            ),
        )
        return conn_id

    return make


@pytest.fixture
def make_embedding_conn(embeddings: Any, monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """``make_embedding_conn(api_key=..., max_retries=2, base_url=...)`` -> conn id of an openai connection."""

    def make(
        conn_id: str = "faults_embeddings",
        *,
        api_key: str = EMBEDDING_API_KEY,
        max_retries: int = 2,
        base_url: str | None = None,
        **extra: Any,
    ) -> str:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps(
                {
                    "conn_type": "openai",
                    "host": base_url or embeddings.base_url,
                    "password": api_key,
                    "extra": {"model": "test-embedding", "max_retries": max_retries, **extra},
                }
            ),
        )
        return conn_id

    return make


@pytest.fixture
def shared_conn(milvus_lite: LocalServer, make_milvus_conn: Callable[..., str]) -> str:
    """The session's Milvus Lite server (by URI), with the sentinel token."""
    return make_milvus_conn(milvus_lite.uri)


@pytest.fixture
def embedding_conn(make_embedding_conn: Callable[..., str]) -> str:
    return make_embedding_conn()


# ---------------------------------------------------------------------------------------------------------
# a Milvus Lite server of the test's own, to kill -9 and restart


@dataclass
class OwnMilvus:
    data_dir: Path
    server: LocalServer

    @property
    def uri(self) -> str:
        return self.server.uri

    def kill(self) -> None:
        os.kill(self.server.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if os.waitpid(self.server.pid, os.WNOHANG)[0] == self.server.pid:
                    return
            except ChildProcessError:
                return
            time.sleep(0.05)

    def restart(self) -> LocalServer:
        """Same data dir; the port may change (the connection's host is the dir, resolved per run)."""
        self.server = start_local_server(self.data_dir)
        return self.server


@pytest.fixture
def own_milvus(tmp_path: Path) -> Iterator[OwnMilvus]:
    data_dir = tmp_path / "milvus-data"
    own = OwnMilvus(data_dir, start_local_server(data_dir))
    yield own
    stop_local_server(data_dir)


# ---------------------------------------------------------------------------------------------------------
# a "Milvus" that accepts TCP connections and never answers


@dataclass
class BlackHole:
    port: int
    accepted: int = 0

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    hole = BlackHole(listener.getsockname()[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # keep it open, read nothing, answer nothing
            hole.accepted += 1

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield hole
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    listener.close()


# ---------------------------------------------------------------------------------------------------------
# reading back independently of the provider


def read_pks(uri: str, collection: str, expected: set[str] | None = None) -> list[str]:
    """Primary keys in ``collection`` as a list (duplicates would show), via pymilvus ``query``.

    Up to 16,384 entities: one query for everything. Beyond (Milvus caps offset + limit at 16,384):
    look up the ``expected`` ids in chunks; ``assert_exact_ids`` compares ``count(*)`` for extras.
    (``query_iterator`` is not used: with pymilvus 3.0.2 against Milvus 2.3.5 it missed the newest
    600 of 10,000 rows that a plain query and count(*) returned.)
    """
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        if not client.has_collection(collection):
            return []
        client.load_collection(collection)
        total = int(
            client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")[0]["count(*)"]
        )
        if total <= 16384 or expected is None:
            rows = client.query(
                collection, filter='pk != ""', output_fields=["pk"], limit=16384, consistency_level="Strong"
            )
            return [row["pk"] for row in rows]
        wanted, pks = sorted(expected), []
        for start in range(0, len(wanted), 2000):
            rows = client.query(
                collection,
                filter=f"pk in {json.dumps(wanted[start : start + 2000])}",
                output_fields=["pk"],
                consistency_level="Strong",
            )
            pks.extend(row["pk"] for row in rows)
        return pks
    finally:
        client.close()


def count_entities(uri: str, collection: str) -> int | None:
    """``count(*)`` with Strong consistency, or None when the collection does not exist."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri, timeout=30)
    try:
        if not client.has_collection(collection):
            return None
        client.load_collection(collection)
        rows = client.query(collection, filter="", output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])
    finally:
        client.close()


def assert_exact_ids(uri: str, collection: str, expected: set[str], figures: FaultFigures) -> None:
    """Read the ids back, record expected vs found (every entity: extras and duplicates count), then assert."""
    pks = read_pks(uri, collection, expected)
    found = count_entities(uri, collection) or 0
    figures.entities(len(expected), found)
    duplicates = len(pks) - len(set(pks))
    assert duplicates == 0, f"{duplicates} duplicate primary keys"
    missing, extra = expected - set(pks), set(pks) - expected
    assert not missing, f"{len(missing)} missing, {len(extra)} unexpected ids"
    assert not extra, f"{len(missing)} missing, {len(extra)} unexpected ids"
    assert found == len(expected), f"{found} entities, {len(expected)} expected"


def documents(n: int, prefix: str = "doc") -> list[dict[str, Any]]:
    """``n`` documents with explicit ids in metadata ``doc_id`` (use ``id_key="doc_id"``)."""
    return [
        {
            "page_content": f"{prefix} {i} about topic {i % 97} and word{i % 13}",
            "metadata": {"doc_id": f"{prefix}-{i:06d}", "source": f"{prefix}/{i % 50}.md", "n": i},
        }
        for i in range(n)
    ]


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets ``result`` or ``error`` and ``elapsed``."""
    box: dict[str, Any] = {}

    def target() -> None:
        started = time.monotonic()
        try:
            box["result"] = fn()
        except BaseException as error:
            box["error"] = error
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def run_trigger(trigger: Any) -> dict[str, Any]:
    """Run a trigger to its first event on a fresh loop, as a (re)started triggerer would; returns the payload.

    Afterwards the loop's pymilvus channels are closed, as they would be when that triggerer stops.
    """
    import asyncio

    async def main() -> dict[str, Any]:
        from pymilvus.client.connection_manager import AsyncConnectionManager

        try:
            return (await trigger.run().__anext__()).payload
        finally:
            await AsyncConnectionManager.get_instance().close_all()
            with AsyncConnectionManager._instances_lock:
                AsyncConnectionManager._instances.pop(id(asyncio.get_running_loop()), None)

    return asyncio.run(main())
