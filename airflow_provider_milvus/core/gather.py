"""Bounded gather: run one coroutine per item with at most ``max_concurrency`` in flight (per stage)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

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
    """The most a group of results for the second stage holds: ``rows`` results, ``weight`` units (bytes)."""

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

    ``max_concurrency`` produce calls (embedding requests) stay in flight while items are left and the
    window has room. Their results queue up in the order of ``items``; each of ``consume_concurrency``
    consumers (writers) takes, whenever it is free, everything queued up to ``flush`` - one result or
    thousands, across item boundaries, never more than ``flush`` - so a group's size does not depend on the
    produce batch: writes follow each batch while the second stage keeps up, and grow towards ``flush``
    when it is the slower one. Neither stage waits for the other. Memory is bounded by ``window``: an item
    holds a slot from the start of its ``produce`` until its last result has been consumed, so at most
    ``window`` items' results exist at once, whatever the number of items. The first failure cancels
    every other call and is raised as itself.
    """
    if max_concurrency < 1 or consume_concurrency < 1:
        raise ValueError("max_concurrency must be at least 1")
    if window < max_concurrency:
        raise ValueError("window must hold at least max_concurrency items")
    if flush.rows < 1:
        raise ValueError("a group needs at least one row")
    if not items:
        return
    loop = asyncio.get_running_loop()
    slots = asyncio.Semaphore(window)  # items producing or produced, not yet wholly consumed
    producing = asyncio.Semaphore(max_concurrency)
    produced: list[asyncio.Future[Sequence[M]] | None] = [loop.create_future() for _ in items]
    # (result, the item it ends, or None): queued in item order for the consumers
    ready: deque[tuple[M, tuple[T] | None]] = deque()
    changed = asyncio.Condition()
    finished = False

    async def produce_all(group: asyncio.TaskGroup) -> None:
        for item, future in zip(items, produced, strict=True):
            await slots.acquire()
            await producing.acquire()
            group.create_task(produce_one(item, cast("asyncio.Future[Sequence[M]]", future)))

    async def produce_one(item: T, future: asyncio.Future[Sequence[M]]) -> None:
        try:
            future.set_result(await produce(item))
        finally:
            producing.release()

    async def queue_in_order() -> None:
        nonlocal finished
        for index, item in enumerate(items):
            results = await cast("asyncio.Future[Sequence[M]]", produced[index])
            produced[index] = None  # the results now live in ``ready`` only
            if not results:
                release(item)
                continue
            async with changed:
                ready.extend((result, None) for result in results[:-1])
                ready.append((results[-1], (item,)))
                changed.notify()
        async with changed:
            finished = True
            changed.notify_all()

    def release(item: T) -> None:
        slots.release()
        if progress is not None:
            progress.advance(size(item))

    async def consume_all() -> None:
        while True:
            async with changed:
                await changed.wait_for(lambda: bool(ready) or finished)
                if not ready:
                    return
                group: list[M] = []
                ended: list[T] = []
                load = 0
                while ready and len(group) < flush.rows and (flush.weight is None or load < flush.weight):
                    result, ends = ready.popleft()
                    group.append(result)
                    load += weight(result)
                    if ends is not None:
                        ended.append(ends[0])
                if ready:
                    changed.notify()  # more for another free consumer
            await consume(group)
            for item in ended:
                release(item)

    try:
        async with asyncio.TaskGroup() as task_group:
            task_group.create_task(produce_all(task_group))
            task_group.create_task(queue_in_order())
            for _ in range(consume_concurrency):
                task_group.create_task(consume_all())
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
