"""Timing helpers every suite shares: a timed loop (fixed count or duration) and latency percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from benchmarks.record import Latency


@dataclass
class Timing:
    """Per-call wall times of a timed loop and how many items those calls processed."""

    latencies: list[float] = field(default_factory=list)
    items: int = 0
    seconds: float = 0.0

    @property
    def throughput(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def latency_ms(self) -> Latency:
        ms = np.asarray(self.latencies, dtype=np.float64) * 1000
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return Latency(p50=round(p50, 3), p90=round(p90, 3), p99=round(p99, 3), mean=round(float(ms.mean()), 3),
                       min=round(float(ms.min()), 3), max=round(float(ms.max()), 3))


def timed_calls(
    call: Callable[[int], int],
    *,
    count: int | None,
    duration_s: float,
    sync: Callable[[], None] = lambda: None,
    min_calls: int = 3,
) -> Timing:
    """Run `call(i)` (returns items processed) `count` times, or for `duration_s` seconds (>= min_calls).

    `sync` waits for queued device work (torch.cuda.synchronize on a GPU) before each clock read,
    so asynchronous launches are not mistaken for finished work.
    """
    timing = Timing()
    sync()
    start = time.perf_counter()
    deadline = start + duration_s
    i = 0
    while (i < count) if count else (i < min_calls or time.perf_counter() < deadline):
        t0 = time.perf_counter()
        timing.items += call(i)
        sync()
        timing.latencies.append(time.perf_counter() - t0)
        i += 1
    timing.seconds = time.perf_counter() - start
    return timing
