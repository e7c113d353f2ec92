"""Timing by alternation over a stream of inputs (benchmarks/timing.py's alternate, with every
implementation fed the same input in a round): medians of the single calls."""

import itertools

from benchmarks.timing import alternate


def time_alternating(runs, inputs, calls, warmup_calls=5):
    """{name: median seconds of one call} of each of `runs` ({name: callable of one input}),
    called in alternation for `calls` timed rounds after `warmup_calls`, round r on input
    inputs[r % len(inputs)]."""
    fns = {}
    for name, run in runs.items():
        stream = itertools.cycle(inputs)
        fns[name] = lambda run=run, stream=stream: run(next(stream))
    timings = alternate(fns, min_run_time=0.0, min_rounds=calls, warmup_rounds=warmup_calls)
    return {name: timing.median_s for name, timing in timings.items()}
