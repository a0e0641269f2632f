"""Integration-tier fixtures shared across modules (one instance per session, not one per importing module)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.multihost import (
    FIGURES,
    multihost,  # noqa: F401 - the multi-host deployment (two triggerers, S3 staging)
    stop_multihost,
)


@pytest.fixture(scope="module")
def reader(milvus_lite: Any) -> Iterator[Any]:
    """A pymilvus client on the Milvus Lite server the deployments write to, to read collections back."""
    from pymilvus import MilvusClient

    client = MilvusClient(uri=milvus_lite.uri)
    yield client
    client.close()


def pytest_runtest_teardown(item: Any, nextitem: Any) -> None:
    """Stop the multi-host deployment after the last of its (adjacent) tests, not at the end of the session."""
    if "multihost" in item.fixturenames and (nextitem is None or "multihost" not in nextitem.fixturenames):
        stop_multihost()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    if not FIGURES.ran:
        return
    terminalreporter.section("multi-host figures (triggerer failover, S3 staging, several writers)")
    for line in FIGURES.lines():
        terminalreporter.write_line(line)
