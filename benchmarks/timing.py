"""How the implementations are timed: alternated call by call (the default on a CPU), or each in
its own blocked runs of torch.utils.benchmark (the default on a GPU)."""

import dataclasses
import statistics
import time
from typing import Callable

from torch.utils import benchmark

MIN_ROUNDS = 5
WARMUP_ROUNDS = 1  # after each implementation's first call, which compiles and allocates


@dataclasses.dataclass(frozen=True)
class Timing:
    """The median and interquartile range of `runs` runs of `calls_per_run` calls each, per call."""

    median_s: float
    iqr_s: float
    runs: int
    calls_per_run: int


def _timing(times: list[float]) -> Timing:
    quartiles = statistics.quantiles(times, n=4, method="inclusive")
    return Timing(statistics.median(times), quartiles[2] - quartiles[0], len(times), 1)


def alternate(
    fns: dict[str, Callable],
    min_run_time: float,
    synchronize: Callable[[], None] = lambda: None,
    min_rounds: int = MIN_ROUNDS,
    warmup_rounds: int = WARMUP_ROUNDS,
) -> dict[str, Timing]:
    """Rounds of one call of each function, timed call by call, until the functions have had
    min_run_time seconds each on average (and at least min_rounds rounds): every function gets
    the same rounds, so a slow stretch of a shared machine slows them all alike.

    synchronize waits for the device before and after each call (CUDA work is asynchronous)."""
    names = list(fns)
    for _ in range(warmup_rounds):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    budget = min_run_time * len(names)
    rounds, started = 0, time.perf_counter()
    while rounds < min_rounds or time.perf_counter() - started < budget:
        # Each round starts one further along, so that no function always follows the same one.
        for name in names[rounds % len(names) :] + names[: rounds % len(names)]:
            synchronize()
            start = time.perf_counter()
            fns[name]()
            synchronize()
            times[name].append(time.perf_counter() - start)
        rounds += 1
    return {name: _timing(times[name]) for name in names}


def blocked(fn: Callable, min_run_time: float, threads: int) -> Timing:
    """The median of blocked runs; torch.utils.benchmark synchronises CUDA around each block."""
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(
        measurement.median, measurement.iqr, len(measurement.times), measurement.number_per_run
    )


def blocked_each(fns: dict[str, Callable], min_run_time: float, threads: int) -> dict[str, Timing]:
    """Each function in its own blocked runs, one after the other."""
    return {name: blocked(fn, min_run_time, threads) for name, fn in fns.items()}
