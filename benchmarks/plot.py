"""The PNG of lstm_ext's speed-ups: a heatmap against torch.nn.LSTM for a grid of sizes, grouped
bars against every other implementation for a few sizes. Sized to be read at 1600 px wide."""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the file-only backend)
from matplotlib import ticker  # noqa: E402

from benchmarks.implementations import TORCH_LSTM  # noqa: E402

WIDTH_IN, DPI = 16, 100  # 1600 px
SPEEDUP_TICKS = (0.1, 0.25, 0.5, 0.67, 1, 1.5, 2, 4, 10, 25, 100, 250, 1000)


def _speedup_label(value: float) -> str:
    return f"{value:.2f}x"


def _timed(results: list[dict]) -> list[dict]:
    return [r for r in results if r["status"] == "ok" and r["lstm_ext_speedup"] is not None]


def _row_key(result: dict) -> tuple:
    return result["hidden_size"], result["proj_size"], result["input_size"], result["packed"]


def _row_label(key: tuple) -> str:
    hidden, proj, inputs, packed = key
    text = f"I=H={hidden}" if inputs == hidden else f"I={inputs} H={hidden}"
    return text + (f" P={proj}" if proj else "") + (" packed" if packed else "")


def _column_key(result: dict) -> tuple:
    return result["steps"], result["batch"]


def is_grid(results: list[dict]) -> bool:
    """Whether the sizes span at least two shapes (I, H, P) and two (B, T): a heatmap's case."""
    return min(len({_row_key(r) for r in results}), len({_column_key(r) for r in results})) >= 2


def _heatmap_panel(axis, timed: list[dict], rows: list, columns: list, limit: float):
    cell = {(_row_key(r), _column_key(r)): r["lstm_ext_speedup"] for r in timed}
    log_speedups = [
        [
            math.log2(cell[(row, column)]) if (row, column) in cell else math.nan
            for column in columns
        ]
        for row in rows
    ]
    image = axis.imshow(log_speedups, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    for i, row in enumerate(rows):
        for j, column in enumerate(columns):
            value = cell.get((row, column))
            strong = value is not None and abs(math.log2(value)) > 0.6 * limit
            axis.text(
                j,
                i,
                "-" if value is None else _speedup_label(value),
                ha="center",
                va="center",
                fontsize=10,
                color="white" if strong else "black",
            )
    axis.set_xticks(range(len(columns)), [f"B={b} T={t}" for t, b in columns], fontsize=9)
    axis.set_yticks(range(len(rows)), [_row_label(row) for row in rows], fontsize=9)
    return image


def _plot_heatmaps(results: list[dict], title: str):
    """lstm_ext's speed-up over each nn.LSTM variant, one panel per mode and variant; blue where
    lstm_ext is faster, red where it is slower, white at parity."""
    timed = [r for r in _timed(results) if r["implementation"].startswith(TORCH_LSTM)]
    panels = list(dict.fromkeys((r["mode"], r["implementation"]) for r in timed))
    rows = sorted({_row_key(r) for r in results})
    columns = sorted({_column_key(r) for r in results})
    limit = max([1.0] + [abs(math.log2(r["lstm_ext_speedup"])) for r in timed])
    panel_columns = min(2, len(panels))
    panel_rows = math.ceil(len(panels) / panel_columns)
    figure, axes = plt.subplots(
        panel_rows,
        panel_columns,
        squeeze=False,
        layout="constrained",
        figsize=(WIDTH_IN, panel_rows * (0.45 * len(rows) + 1.6) + 0.8),
    )
    for axis, (mode, against) in zip(axes.flat, panels):
        image = _heatmap_panel(
            axis,
            [r for r in timed if (r["mode"], r["implementation"]) == (mode, against)],
            rows,
            columns,
            limit,
        )
        axis.set_title(f"{mode}: lstm_ext's speed-up over {against}", fontsize=11)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    ticks = [t for t in SPEEDUP_TICKS if abs(math.log2(t)) <= limit + 1e-9]
    colorbar = figure.colorbar(
        image,
        ax=axes.ravel().tolist(),
        fraction=0.03,
        pad=0.02,
        ticks=[math.log2(t) for t in ticks],
    )
    colorbar.ax.set_yticklabels([f"{t:g}x" for t in ticks])
    colorbar.set_label("speed-up (> 1x: lstm_ext faster)")
    figure.suptitle(title, fontsize=12)
    return figure


def _bar_panel(axis, timed: list[dict], sizes: list[str], others: list[str]) -> None:
    width = 0.8 / len(others)
    for k, name in enumerate(others):
        bars = [
            (sizes.index(r["size"]) + (k - (len(others) - 1) / 2) * width, r["lstm_ext_speedup"])
            for r in timed
            if r["implementation"] == name
        ]
        if bars:
            positions, speedups = zip(*bars)
            drawn = axis.bar(
                positions,
                [s - 1 for s in speedups],
                width,
                bottom=1,
                color=f"C{k}",
                label=f"vs {name}",
            )
            axis.bar_label(drawn, labels=[_speedup_label(s) for s in speedups], fontsize=8)
    axis.axhline(1.0, color="gray", linewidth=0.8)
    axis.set_xticks(range(len(sizes)), sizes, fontsize=9, rotation=15, ha="right")
    axis.grid(True, axis="y", alpha=0.3)


def _plot_bars(results: list[dict], title: str):
    """Per mode, bars from parity (1x) to lstm_ext's speed-up over each other implementation, a
    group per size (ordered by FLOPs), on a log scale."""
    timed = _timed(results)
    sizes = [label for _, label in sorted({(r["forward_gflop"], r["size"]) for r in results})]
    others = list(dict.fromkeys(r["implementation"] for r in timed))
    figure, axes = plt.subplots(
        1,
        2,
        sharey=True,
        squeeze=False,
        layout="constrained",
        figsize=(min(WIDTH_IN, 8 + 2.5 * len(sizes)), 5.5),
    )
    for axis, mode in zip(axes[0], ("forward", "forward+backward")):
        _bar_panel(axis, [r for r in timed if r["mode"] == mode], sizes, others)
        axis.set_title(mode, fontsize=11)
    speedups = [r["lstm_ext_speedup"] for r in timed] or [1.0]
    axis = axes[0][0]
    # Room above and below the bars for their labels; the scale always shows parity.
    axis.set_yscale("log")
    axis.set_ylim(min(speedups + [1.0]) / 1.3, max(speedups + [1.0]) * 1.3)
    axis.yaxis.set_major_locator(ticker.FixedLocator(SPEEDUP_TICKS))
    axis.yaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}x"))
    axis.yaxis.set_minor_formatter(ticker.NullFormatter())
    axis.set_ylabel("speed-up of lstm_ext (> 1x: lstm_ext faster)")
    handles = {}  # label -> handle, over both panels (one may lack an implementation)
    for panel in axes[0]:
        for handle, label in zip(*panel.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    figure.legend(
        handles.values(),
        handles.keys(),
        loc="outside lower center",
        ncols=max(1, len(handles)),
        fontsize=9,
    )
    figure.suptitle(title, fontsize=12)
    return figure


def plot(path: Path, results: list[dict], title: str) -> None:
    figure = (_plot_heatmaps if is_grid(results) else _plot_bars)(results, title)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
