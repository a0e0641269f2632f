"""Reading a collection back with pymilvus, as the multi-host tests check it: every row, every stored copy."""

from __future__ import annotations

import time
from typing import Any


def all_rows(reader: Any, collection: str, fields: list[str], *, filter: str = 'pk != ""') -> list[dict[str, Any]]:
    """Every row's ``fields``, duplicates included (a list), read page by page at Strong consistency."""
    rows: list[dict[str, Any]] = []
    iterator = reader.query_iterator(
        collection, batch_size=5000, filter=filter, output_fields=fields, consistency_level="Strong"
    )
    try:
        while batch := iterator.next():
            rows.extend({field: row[field] for field in fields} for row in batch)
    finally:
        iterator.close()
    return rows


def all_pks(reader: Any, collection: str) -> list[str]:
    """Every primary key, duplicates included (a list, not a set), read page by page."""
    return [row["pk"] for row in all_rows(reader, collection, ["pk"])]


def stored_count(reader: Any, collection: str, *, filter: str = "") -> int:
    """
    Every stored row, a primary key stored twice counted twice.

    Unlike a query's rows: on standalone 2.3.5 a query returns one row per primary key even when it is
    stored twice, while ``count(*)`` counts every stored row (tests/integration/test_several_writers.py).
    """
    rows = reader.query(collection, filter=filter, output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll ``predicate`` until true; return the seconds it took, or fail naming ``what``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(interval)
    raise AssertionError(f"not within {timeout}s: {what}")
