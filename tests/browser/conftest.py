"""A real Airflow 3 API server in a throwaway AIRFLOW_HOME, and headless Chromium driven by Playwright.

Chromium comes from Debian (``scripts/install_browser.sh``), never from ``playwright install``: Playwright is
pointed at the system binary with ``executable_path``. Tests here are marked ``browser``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testing.airflow_cli import AIRFLOW, AirflowCLI
from testing.ports import PortTaken, port_taken, start_on_free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_READY_TIMEOUT = 90.0


def find_chromium() -> str | None:
    """``$CHROMIUM_PATH``, else Debian's ``/usr/bin/chromium``, else the first Chromium/Chrome on PATH."""
    explicit = os.environ.get("CHROMIUM_PATH")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    for candidate in CHROMIUM_CANDIDATES:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = find_chromium()
    if path is None:
        message = (
            "No Chromium found (looked at $CHROMIUM_PATH, /usr/bin/chromium and chromium/chrome on PATH). "
            "Install it with scripts/install_browser.sh."
        )
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it: a missing browser must not pass silently
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass(frozen=True)
class ApiServer:
    base_url: str
    home: Path
    log_path: Path

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _wait_until_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_READY_TIMEOUT
    while True:
        if process.poll() is not None:
            if port_taken(log_path.read_text(errors="replace")):
                raise PortTaken(f"airflow api-server: {url} taken by another process")
            raise AssertionError(
                f"airflow api-server exited with code {process.returncode}:\n{log_path.read_text()[-6000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and process.poll() is None:  # ours answered
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(
                f"airflow api-server not healthy at {url} after {SERVER_READY_TIMEOUT}s:\n"
                f"{log_path.read_text()[-6000:]}"
            )
        time.sleep(0.25)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the api-server we started: its own process group (uvicorn workers included), by id."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def airflow_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port, sqlite metadata DB migrated, login disabled.

    Airflow 3's default SimpleAuthManager asks for a user/password (generated into
    ``simple_auth_manager_passwords.json.generated``); ``simple_auth_manager_all_admins`` turns that off and a
    middleware makes every request an admin, so the browser lands straight in the UI.
    """
    home = tmp_path_factory.mktemp("airflow-ui-home")
    dags = home / "dags"
    dags.mkdir()
    cli = AirflowCLI(
        home=home,
        dags_folder=dags,
        env_overrides={
            "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": "browser-test-jwt-secret-not-for-production",
        },
    )
    cli.migrate()
    log_path = home / "api-server.log"

    def start(port: int) -> tuple[subprocess.Popen[bytes], ApiServer]:
        with open(log_path, "wb") as log:  # one log per attempt: a taken port is read from this one
            process = subprocess.Popen(
                [AIRFLOW, "api-server", "--host", "127.0.0.1", "--port", str(port)],
                env=cli.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        server = ApiServer(base_url=f"http://127.0.0.1:{port}", home=home, log_path=log_path)
        try:
            _wait_until_healthy(process, f"{server.base_url}/api/v2/monitor/health", log_path)
        except BaseException:
            _stop(process)
            raise
        return process, server

    # The port is picked free and bound by the api-server seconds later: a port taken meanwhile gets another.
    process, server = start_on_free_port(start)
    try:
        yield server
    finally:
        _stop(process)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / "api-server.log")


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:  # a test dependency, not an optional one: fail loudly rather than skip in CI
        pytest.fail("playwright is not installed: pip install -e '.[test]' (the browser is Debian's chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any, artifacts_dir: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
    context.set_default_timeout(15_000)
    page = context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            page.screenshot(path=str(artifacts_dir / f"FAILED-{request.node.name}.png"), full_page=True)
        context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
