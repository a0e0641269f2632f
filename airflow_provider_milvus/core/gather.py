"""Bounded gather: run one coroutine per item with at most ``max_concurrency`` in flight (per stage)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
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


def _first_cause(group_error: BaseExceptionGroup) -> BaseException:
    error: BaseException = group_error
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def batched(items: Sequence[T], size: int) -> list[Sequence[T]]:
    if size < 1:
        raise ValueError("batch_size must be at least 1")
    return [items[i : i + size] for i in range(0, len(items), size)]
