"""Timing by alternation: implementations called in turn, one call each, so that a slower or a
busier stretch of the machine falls on all of them alike; medians of the single calls."""

import statistics
import time


def time_alternating(runs, inputs, calls, warmup_calls=5):
    """{name: median seconds of one call} of each of `runs` ({name: callable of one input}),
    called in alternation over `inputs` (cycled) for `calls` timed rounds after `warmup_calls`.
    Which goes first alternates from round to round."""
    times = {name: [] for name in runs}
    order = list(runs.items())
    for call in range(warmup_calls + calls):
        input = inputs[call % len(inputs)]
        for name, run in order if call % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            run(input)
            elapsed = time.perf_counter() - start
            if call >= warmup_calls:
                times[name].append(elapsed)
    return {name: statistics.median(values) for name, values in times.items()}
