"""Bounded gather: run one coroutine per item with at most ``max_concurrency`` in flight (per stage)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
M = TypeVar("M")
R = TypeVar("R")

log = logging.getLogger(__name__)


class Progress:
    """Logs ``done / total`` and the rate, at most every ``interval`` seconds and at the end."""

    def __init__(self, label: str, total: int, *, interval: float = 5.0, logger: logging.Logger = log) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.items = 0
        self.interval = interval
        self.logger = logger
        self.started = time.monotonic()
        self._last_log = self.started

    def advance(self, items: int) -> None:
        self.done += 1
        self.items += items
        now = time.monotonic()
        if self.done == self.total or now - self._last_log >= self.interval:
            self._last_log = now
            elapsed = max(now - self.started, 1e-9)
            self.logger.info(
                "%s: %d/%d batches, %d items, %.1f items/s",
                self.label,
                self.done,
                self.total,
                self.items,
                self.items / elapsed,
            )


async def bounded_gather(
    items: Sequence[T],
    work: Callable[[T], Awaitable[R]],
    *,
    max_concurrency: int,
    progress: Progress | None = None,
    size: Callable[[T], int] = lambda _: 1,
) -> list[R]:
    """
    ``asyncio.gather`` of ``work(item)`` for every item, never more than ``max_concurrency`` at once.

    A fixed pool of workers pulls items in order (memory stays flat at any item count). The first
    failure cancels the rest and is raised as itself; results keep the order of ``items``.
    """
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    results: list[R | None] = [None] * len(items)
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < len(items):
            index = next_index
            next_index += 1
            results[index] = await work(items[index])
            if progress is not None:
                progress.advance(size(items[index]))

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(max_concurrency, len(items))):
                group.create_task(worker())
    except BaseExceptionGroup as group_error:
        raise _first_cause(group_error) from None
    return results  # type: ignore[return-value]


async def pipelined_gather(
    items: Sequence[T],
    first: Callable[[T], Awaitable[M]],
    second: Callable[[T, M], Awaitable[R]],
    *,
    max_concurrency: int,
    progress: Progress | None = None,
    size: Callable[[T], int] = lambda _: 1,
) -> list[R]:
    """
    ``second(item, await first(item))`` for every item, each stage never more than ``max_concurrency`` at once.

    The stages overlap: while one item's second stage runs (a search), later items' first stages (their
    embeddings) are already in flight, so neither service waits for the other between batches. At most
    ``2 * max_concurrency`` items are in flight; failures and order are as in ``bounded_gather``.
    """
    if max_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    first_slots = asyncio.Semaphore(max_concurrency)
    second_slots = asyncio.Semaphore(max_concurrency)

    async def both(item: T) -> R:
        async with first_slots:
            middle = await first(item)
        async with second_slots:
            return await second(item, middle)

    return await bounded_gather(items, both, max_concurrency=2 * max_concurrency, progress=progress, size=size)


@dataclass(frozen=True)
class Flush:
    """When a group of produced results goes to the second stage: at ``rows`` results or ``weight`` units (bytes)."""

    rows: int
    weight: int | None = None


async def staged_gather(
    items: Sequence[T],
    produce: Callable[[T], Awaitable[Sequence[M]]],
    consume: Callable[[list[M]], Awaitable[None]],
    *,
    max_concurrency: int,
    flush: Flush,
    window: int,
    consume_concurrency: int = 1,
    weight: Callable[[M], int] = lambda _: 0,
    progress: Progress | None = None,
    size: Callable[[T], int] = lambda _: 1,
) -> None:
    """
    Two stages with their own batching: ``produce(item)`` per item, ``consume(group)`` per group of results.

    ``max_concurrency`` produce calls (embedding requests) are in flight whenever items are left and the
    window has room; their results are regrouped, in the order of ``items``, into groups of ``flush.rows``
    results (or ``flush.weight`` units of ``weight``), each handed to ``consume`` (a write) while later
    items are still being produced - so neither service waits for the other, and a write's size does not
    depend on the produce batch. Memory is bounded by ``window``: an item holds a slot from the start of
    its ``produce`` until the group holding its results has been consumed, so at most ``window`` items'
    results exist at once, whatever the number of items. A group is also flushed when it alone fills the
    window. The first failure cancels every other call and is raised as itself.
    """
    if max_concurrency < 1 or consume_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if window < max_concurrency:
        raise ValueError("window must hold at least max_concurrency items")
    if flush.rows < 1:
        raise ValueError("a group needs at least one row")
    slots = asyncio.Semaphore(window)  # items produced or producing, not yet consumed
    producing = asyncio.Semaphore(max_concurrency)
    loop = asyncio.get_running_loop()
    produced: list[asyncio.Future[Sequence[M]] | None] = [loop.create_future() for _ in items]
    queue: asyncio.Queue[tuple[list[M], list[T]] | None] = asyncio.Queue(maxsize=consume_concurrency)

    async def produce_all(group: asyncio.TaskGroup) -> None:
        for item, future in zip(items, produced, strict=True):
            await slots.acquire()
            await producing.acquire()
            assert future is not None
            group.create_task(produce_one(item, future))

    async def produce_one(item: T, future: asyncio.Future[Sequence[M]]) -> None:
        try:
            future.set_result(await produce(item))
        finally:
            producing.release()

    async def regroup() -> None:
        results: list[M] = []
        members: list[T] = []
        load = 0
        for index, item in enumerate(items):
            future = produced[index]
            assert future is not None
            for result in await future:
                results.append(result)
                load += weight(result)
            members.append(item)
            produced[index] = None  # the results now live in the group only
            full = len(results) >= flush.rows or (flush.weight is not None and load >= flush.weight)
            if full or len(members) == window or index == len(items) - 1:
                await queue.put((results, members))
                results, members, load = [], [], 0
        for _ in range(consume_concurrency):
            await queue.put(None)

    async def consume_all() -> None:
        while (entry := await queue.get()) is not None:
            results, members = entry
            await consume(results)
            for member in members:
                slots.release()
                if progress is not None:
                    progress.advance(size(member))

    if not items:
        return
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(produce_all(group))
            group.create_task(regroup())
            for _ in range(consume_concurrency):
                group.create_task(consume_all())
    except BaseExceptionGroup as group_error:
        raise _first_cause(group_error) from None


def _first_cause(group_error: BaseExceptionGroup) -> BaseException:
    error: BaseException = group_error
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def batched(items: Sequence[T], size: int) -> list[Sequence[T]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    return [items[i : i + size] for i in range(0, len(items), size)]
