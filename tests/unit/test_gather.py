from __future__ import annotations

import asyncio

import pytest

from airflow_provider_milvus.core.gather import batched, bounded_gather


@pytest.mark.asyncio
async def test_never_more_than_max_concurrency_in_flight():
    in_flight = peak = 0

    async def work(item: int) -> int:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return item * 2

    results = await bounded_gather(list(range(50)), work, max_concurrency=4)
    assert results == [i * 2 for i in range(50)]
    assert peak == 4


@pytest.mark.asyncio
async def test_first_failure_cancels_the_rest_and_is_raised_as_itself():
    started = []

    async def work(item: int) -> None:
        started.append(item)
        if item == 2:
            raise ValueError("boom")
        await asyncio.sleep(1)

    with pytest.raises(ValueError, match="boom"):
        await bounded_gather(list(range(100)), work, max_concurrency=3)
    assert len(started) < 10
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


def test_batched_keeps_order_and_sizes():
    assert batched([1, 2, 3, 4, 5], 2) == [[1, 2], [3, 4], [5]]
