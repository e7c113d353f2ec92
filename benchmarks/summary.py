"""The run's target metrics: per mode, at how many sizes lstm_ext is at least as fast as
torch.nn.LSTM, the geometric mean of its speed-ups over nn.LSTM, and the lowest one."""

import math

from benchmarks.implementations import TORCH_LSTM


def geometric_mean(values: list[float]) -> float:
    return math.exp(sum(map(math.log, values)) / len(values))


def summarize(results: list[dict]) -> list[dict]:
    """One entry per mode and nn.LSTM variant (`torch.nn.LSTM`, or its packed and padded runs),
    over the sizes at which both it and lstm_ext were timed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for result in results:
        if (
            result["implementation"].startswith(TORCH_LSTM)
            and result["status"] == "ok"
            and result["lstm_ext_speedup"] is not None
        ):
            groups.setdefault((result["mode"], result["implementation"]), []).append(result)
    summary = []
    for (mode, against), timed in groups.items():
        speedups = [result["lstm_ext_speedup"] for result in timed]
        lowest = min(timed, key=lambda result: result["lstm_ext_speedup"])
        summary.append(
            {
                "mode": mode,
                "against": against,
                "sizes": len(timed),
                "at_least_as_fast": sum(speedup >= 1 for speedup in speedups),
                "geomean_speedup": geometric_mean(speedups),
                "lowest_speedup": lowest["lstm_ext_speedup"],
                "lowest_size": lowest["size"],
            }
        )
    return summary


def summary_table(summary: list[dict]) -> str:
    if not summary:
        return "summary: torch.nn.LSTM and lstm_ext ran together at no size"
    header = ("mode", "against", "lstm_ext at least as fast", "geomean speed-up", "lowest speed-up")
    rows = [
        (
            entry["mode"],
            entry["against"],
            f"{entry['at_least_as_fast']} of {entry['sizes']}",
            f"{entry['geomean_speedup']:.2f}x",
            f"{entry['lowest_speedup']:.2f}x ({entry['lowest_size']})",
        )
        for entry in summary
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(
        ["summary, lstm_ext against torch.nn.LSTM:", lines[0], "-" * len(lines[0]), *lines[1:]]
    )
