"""Timing of repeated calls, host-side and (where CuPy sees a GPU) with CUDA events.

Both warm up first (JIT compilation, caches, CUDA context), then time each call on its
own and keep every sample, so a report can state the median and the repetition count
(docs/design.md, "Timing and throughput conventions"). Timings here feed reproduction records; regression tracking
over commits is asv's job (``benchmarks/``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Timing:
    """Per-call times in seconds, in call order."""

    seconds: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def repeats(self) -> int:
        return len(self.seconds)


def time_host(fn: Callable[[], object], *, warmup: int = 1, min_repeats: int = 5, max_repeats: int = 200,
              min_time: float = 0.2) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: at least ``min_repeats`` calls and ``min_time`` s.

    Stops after ``max_repeats`` calls. ``fn`` must finish its work before returning
    (synchronise inside it for asynchronous devices).
    """
    for _ in range(warmup):
        fn()
    samples: list[float] = []
    spent = 0.0
    while len(samples) < max_repeats and (len(samples) < min_repeats or spent < min_time):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
        spent += samples[-1]
    return Timing(tuple(samples))


def time_host_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 1, min_repeats: int = 5,
                          max_repeats: int = 200, min_time: float = 0.2) -> dict[str, Timing]:
    """:func:`time_host` of several functions side by side: round after round, each called once per round.

    Drift in the machine's state (frequency, other processes, memory) then hits every function
    alike, so the ratios of their medians are fair. Rounds continue until every function has
    ``min_repeats`` calls and the slowest has spent ``min_time`` s (at most ``max_repeats`` rounds).
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    spent = dict.fromkeys(fns, 0.0)
    rounds = 0
    while rounds < max_repeats and (rounds < min_repeats or max(spent.values(), default=min_time) < min_time):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
            spent[name] += samples[name][-1]
        rounds += 1
    return {name: Timing(tuple(times)) for name, times in samples.items()}


def time_cuda(fn: Callable[[], object], *, warmup: int = 1, repeats: int = 10) -> Timing:
    """Device time of each of ``repeats`` calls of ``fn()`` by CUDA events on the current stream."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    samples = []
    for _ in range(repeats):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        samples.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return Timing(tuple(samples))
