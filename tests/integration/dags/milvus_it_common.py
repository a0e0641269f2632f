"""Shared helpers of the integration-test DAGs (not a DAG file: it defines no DAG)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

TOPICS = ("rivers", "mountains", "volcanoes", "glaciers", "deserts", "forests", "oceans", "islands")
GROUPS = ("g0", "g1", "g2")
COLLECTION = "{{ dag_run.conf['collection'] }}"

# Airflow 3.3 can fail a deferred task whose trigger fires within seconds of deferring: the scheduler
# applies the stale "success" executor event of the deferring run to the re-queued task instance
# (apache/airflow #72716, "finished with state success, but the task instance's state attribute is
# queued"). Retries are the documented mitigation; writes are idempotent upserts, so a retry is safe.
# Tests count how often it happened from the scheduler log.
DEFAULT_ARGS: dict[str, Any] = {"retries": 2, "retry_delay": timedelta(seconds=1), "owner": "integration-tests"}

# Every deferred operator in these DAGs: conn ids only (the secrets live in the connections).
DEFERRED: dict[str, Any] = {
    "collection_name": COLLECTION,
    "embedding_conn_id": "embeddings",
    "deferrable": True,
    "inline_max_items": 0,
    "timeout": timedelta(minutes=5),
}


def make_documents(conf: dict[str, Any]) -> list[dict[str, Any]]:
    """``conf``: ``n`` documents from ``start`` (default 0), ``prefix``, ``version``, ``words`` of padding."""
    start = int(conf.get("start", 0))
    n = int(conf["n"])
    prefix = conf.get("prefix", "doc")
    version = int(conf.get("version", 1))
    label = conf.get("label", "original")
    padding = " ".join(f"w{j}" for j in range(int(conf.get("words", 0))))
    return [
        {
            "page_content": f"{label} {prefix} document {i} about {TOPICS[i % len(TOPICS)]} {padding}".strip(),
            "metadata": {"doc_id": f"{prefix}-{i}", "group": GROUPS[i % len(GROUPS)], "version": version},
        }
        for i in range(start, start + n)
    ]
