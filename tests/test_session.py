"""A session's reads on both servers: every matching row, in as few requests as the server allows."""

from __future__ import annotations

import asyncio
from typing import Any

from airflow_provider_milvus.core.jobs import StoreConfig
from airflow_provider_milvus.core.limits import MAX_QUERY_ROWS
from airflow_provider_milvus.core.session import connect

ROWS = MAX_QUERY_ROWS + 1_000  # more than one query returns


def make_collection(tier: Any, name: str) -> None:
    """A collection another application made: INT64 keys, ``ROWS`` rows."""
    from pymilvus import DataType, MilvusClient

    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("pk", DataType.INT64, is_primary=True)
    schema.add_field("text", DataType.VARCHAR, max_length=64)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = MilvusClient.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    tier.client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    for start in range(0, ROWS, 5_000):
        rows = [{"pk": i, "text": f"row {i}", "vector": [0.1, 0.2]} for i in range(start, min(start + 5_000, ROWS))]
        tier.client.insert(name, rows)


def read_all(tier: Any, name: str, expr: str) -> tuple[list[dict[str, Any]], int]:
    """``Session.read_all`` of small rows, as a whole-ledger read: the rows, and the query requests it took."""

    async def read() -> tuple[list[dict[str, Any]], int]:
        store = StoreConfig(milvus_conn_id=tier.conn_id, collection_name=name)
        async with connect(store, embed=False) as connection:
            session = await connection.open(write=False, metrics=False, server_version=True)
            try:
                rows = await session.read_all(expr, ["pk"], phase="ledger", small_rows=True)
            finally:
                await session.close()
            return rows, session.round_trips["ledger"]

    return asyncio.run(read())


def test_read_all_of_small_rows_returns_every_row_in_one_request_on_milvus_lite_and_pages_on_a_real_server(tier, name):
    make_collection(tier, name)
    rows, requests = read_all(tier, name, "pk >= 0")
    assert sorted(row["pk"] for row in rows) == list(range(ROWS))
    # Milvus Lite passes over the whole collection per request; a real server caps a query at MAX_QUERY_ROWS:
    # one capped query, then the iterator's two pages.
    assert requests == (3 if tier.real_server else 1)
