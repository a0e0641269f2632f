"""``staged_gather``: embedding-like and write-like stages with their own batching, a bounded window, order kept."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_milvus.core.gather import Flush, staged_gather


class Recorder:
    """A produce stage (sleeps, returns ``rows`` results per item) and a consume stage that records groups."""

    def __init__(self, *, rows: int = 3, produce_s: float = 0.01, consume_s: float = 0.0) -> None:
        self.rows = rows
        self.produce_s = produce_s
        self.consume_s = consume_s
        self.producing = 0
        self.peak_producing = 0
        self.alive = 0  # items whose results exist (producing or produced) and are not yet consumed
        self.peak_alive = 0
        self.groups: list[list[tuple[int, int]]] = []

    async def produce(self, item: int) -> list[tuple[int, int]]:
        self.producing += 1
        self.alive += 1
        self.peak_producing = max(self.peak_producing, self.producing)
        self.peak_alive = max(self.peak_alive, self.alive)
        try:
            # later items finish first now and then: order must come from the primitive, not the timing
            await asyncio.sleep(self.produce_s * (1 + (item * 7) % 3))
        finally:
            self.producing -= 1
        return [(item, r) for r in range(self.rows)]

    async def consume(self, group: list[tuple[int, int]]) -> None:
        await asyncio.sleep(self.consume_s)
        self.groups.append(group)
        self.alive -= len({item for item, row in group if row == self.rows - 1})  # items ended here


@pytest.mark.asyncio
async def test_results_reach_the_second_stage_in_item_order_in_groups_of_at_most_flush_rows():
    recorder = Recorder(rows=3, consume_s=0.005)
    await staged_gather(
        list(range(40)), recorder.produce, recorder.consume, max_concurrency=4, flush=Flush(rows=10), window=12
    )
    flat = [result for group in recorder.groups for result in group]
    assert flat == [(i, r) for i in range(40) for r in range(3)]
    assert max(len(g) for g in recorder.groups) <= 10


@pytest.mark.asyncio
async def test_a_slow_second_stage_gets_full_groups_across_item_boundaries():
    recorder = Recorder(rows=3, produce_s=0.001, consume_s=0.03)  # writes are the bottleneck
    await staged_gather(
        list(range(40)), recorder.produce, recorder.consume, max_concurrency=4, flush=Flush(rows=10), window=20
    )
    sizes = [len(g) for g in recorder.groups]
    assert sizes.count(10) >= len(sizes) - 2, sizes  # full groups (the first and the last may be short)
    assert sum(sizes) == 120


@pytest.mark.asyncio
async def test_an_item_larger_than_a_group_is_split_across_groups():
    recorder = Recorder(rows=25)
    await staged_gather(
        list(range(2)), recorder.produce, recorder.consume, max_concurrency=2, flush=Flush(rows=10), window=2
    )
    assert all(len(g) <= 10 for g in recorder.groups)
    assert [r for g in recorder.groups for r in g] == [(i, r) for i in range(2) for r in range(25)]


@pytest.mark.asyncio
async def test_a_group_also_closes_at_its_weight():
    recorder = Recorder(rows=6, consume_s=0.01)
    await staged_gather(
        [0],
        recorder.produce,
        recorder.consume,
        max_concurrency=1,
        flush=Flush(rows=100, weight=4),
        window=1,
        weight=lambda _: 2,
    )
    assert [len(g) for g in recorder.groups] == [2, 2, 2]


@pytest.mark.asyncio
async def test_exactly_max_concurrency_produce_calls_stay_in_flight_while_writes_run():
    recorder = Recorder(rows=1, produce_s=0.01, consume_s=0.02)
    samples: list[int] = []

    async def consume(group: list[tuple[int, int]]) -> None:
        await asyncio.sleep(0.005)
        samples.append(recorder.producing)  # what the first stage is doing while a write runs
        await recorder.consume(group)

    await staged_gather(list(range(60)), recorder.produce, consume, max_concurrency=3, flush=Flush(rows=4), window=12)
    assert recorder.peak_producing == 3
    assert max(samples) == 3, "writes must overlap with a full set of embedding requests"


@pytest.mark.asyncio
async def test_memory_is_bounded_by_the_window_whatever_the_item_count():
    recorder = Recorder(rows=2, produce_s=0.001, consume_s=0.01)  # a slow second stage: the first must wait
    await staged_gather(
        list(range(120)), recorder.produce, recorder.consume, max_concurrency=4, flush=Flush(rows=6), window=9
    )
    assert recorder.peak_alive == 9
    assert sum(len(g) for g in recorder.groups) == 240


@pytest.mark.asyncio
@pytest.mark.parametrize("stage", ["produce", "consume"])
async def test_the_first_failure_is_raised_as_itself_and_cancels_the_rest(stage):
    recorder = Recorder(rows=1, produce_s=0.05)
    cancelled = 0

    async def produce(item: int) -> list[tuple[int, int]]:
        nonlocal cancelled
        if stage == "produce" and item == 5:
            raise ValueError("boom")
        try:
            return await recorder.produce(item)
        except asyncio.CancelledError:
            cancelled += 1
            raise

    async def consume(group: list[tuple[int, int]]) -> None:
        if stage == "consume" and group[0][0] >= 2:
            raise ValueError("boom")
        await recorder.consume(group)

    with pytest.raises(ValueError, match="boom"):
        await staged_gather(list(range(100)), produce, consume, max_concurrency=4, flush=Flush(rows=2), window=8)
    assert cancelled > 0, "produce calls in flight must be cancelled"
    assert sum(len(g) for g in recorder.groups) < 100
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.mark.asyncio
async def test_cancelling_the_caller_cancels_every_stage():
    recorder = Recorder(rows=1, produce_s=0.2)
    task = asyncio.create_task(
        staged_gather(
            list(range(50)), recorder.produce, recorder.consume, max_concurrency=4, flush=Flush(rows=2), window=8
        )
    )
    while recorder.producing < 4:  # noqa: ASYNC110 - polls the recorder's counter, which signals nothing
        await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert recorder.producing == 0
    assert not [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]


@pytest.mark.asyncio
async def test_no_items_consume_nothing():
    recorder = Recorder()
    await staged_gather([], recorder.produce, recorder.consume, max_concurrency=2, flush=Flush(rows=1), window=2)
    assert recorder.groups == []
