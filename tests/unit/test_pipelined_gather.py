"""``pipelined_gather``: two stages per item, each bounded on its own, overlapping across items."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from airflow_provider_milvus.core.gather import pipelined_gather


@pytest.mark.asyncio
async def test_each_stage_is_bounded_and_the_stages_overlap():
    in_flight: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    overlapped = False

    async def enter(stage: str, seconds: float) -> None:
        nonlocal overlapped
        in_flight[stage] += 1
        peak[stage] = max(peak[stage], in_flight[stage])
        overlapped = overlapped or (in_flight["first"] > 0 and in_flight["second"] > 0)
        await asyncio.sleep(seconds)
        in_flight[stage] -= 1

    async def first(item: int) -> int:
        await enter("first", 0.01)
        return item * 10

    async def second(item: int, middle: int) -> tuple[int, int]:
        await enter("second", 0.03)
        return item, middle

    results = await pipelined_gather(list(range(12)), first, second, max_concurrency=3)
    assert results == [(i, i * 10) for i in range(12)]
    assert peak == {"first": 3, "second": 3}
    assert overlapped


@pytest.mark.asyncio
async def test_a_failure_in_the_second_stage_is_raised_as_itself():
    async def first(item: int) -> int:
        return item

    async def second(item: int, middle: int) -> int:
        if item == 3:
            raise ValueError("boom")
        await asyncio.sleep(0.5)
        return middle

    with pytest.raises(ValueError, match="boom"):
        await pipelined_gather(list(range(20)), first, second, max_concurrency=2)
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
