"""Timing, peak-RSS sampling and the result row."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import psutil

MB = 1024 * 1024


class RssSampler:
    """Samples this process's RSS every ``interval`` seconds in a daemon thread; ``peak`` in bytes."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.peak = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.peak = self._process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)


@dataclass
class Timer:
    seconds: float = 0.0


@contextlib.contextmanager
def timed() -> Iterator[Timer]:
    timer = Timer()
    started = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = time.perf_counter() - started


@dataclass
class Row:
    """One measured (or extrapolated) cell: a method on a workload of ``n`` items."""

    workload: str
    n: int
    method: str
    seconds: float
    reps: int = 1
    all_seconds: list[float] = field(default_factory=list)
    extrapolated_from: int | None = None
    peak_rss_mb: float | None = None
    peak_in_flight: int | None = None
    notes: str = ""

    @property
    def items_per_s(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("inf")
