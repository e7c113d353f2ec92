"""The benchmark's outputs: the environment it ran in, the terminal table and the JSON."""

import json
import os
import platform
from pathlib import Path

import torch

import lstm_ext
from benchmarks import isa_cap


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(
    device: torch.device, dtype: torch.dtype, threads: int, isa: str, load_average: float | None
) -> dict:
    """isa: the --isa the run asked for; load_average: the 1-minute load average before the run
    (None where the OS has none)."""
    env = {
        "torch": torch.__version__,
        "lstm_ext": lstm_ext.__version__,
        "lstm_ext_cuda_built": lstm_ext.cuda_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": threads,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        # The level each library ran at, and the caps in the environment (isa_cap.py).
        "isa": isa,
        "lstm_ext_cpu_isa": lstm_ext.cpu_isa(),
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {name: os.environ.get(name) for name in isa_cap.CAP_VARIABLES},
        "torchinductor_cache_dir": os.environ.get(isa_cap.INDUCTOR_CACHE_VARIABLE),
        # Timings on a CPU that other processes keep busy are noisy (see benchmarks/README.md).
        "load_average_1min_at_start": load_average,
    }
    if device.type == "cuda":
        env.update(
            gpu=torch.cuda.get_device_name(device),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32=torch.backends.cuda.matmul.allow_tf32,
        )
    return env


def format_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


COLUMNS = ("size", "mode", "implementation", "time", "lstm_ext speed-up", "GFLOP/s", "% of GEMM")


def table(results: list[dict], gemms: dict[str, dict]) -> str:
    """One row per (size, mode, implementation), under a line per size that gives the best rate
    of a GEMM with the forward pass's gate FLOPs (the "% of GEMM" denominator), its engine and
    the other engine's rate."""
    rows, previous = [], (None, None)
    for result in results:
        size, mode = result["size"], result["mode"]
        label = (mode if (size, mode) != previous else "", result["implementation"])
        previous = (size, mode)
        if result["status"] == "ok":
            speedup = result["lstm_ext_speedup"]
            rows.append(
                (
                    size,
                    *label,
                    format_time(result["median_s"]),
                    "-" if speedup is None else f"{speedup:.2f}x",
                    f"{result['gflops']:.1f}",
                    f"{100 * result['gemm_fraction']:.0f}%",
                )
            )
        else:
            rows.append((size, *label, f"{result['status']}: {result['note']}"))
    widths = [
        max([len(COLUMNS[i])] + [len(row[i]) for row in rows if i < 3 or len(row) == len(COLUMNS)])
        for i in range(1, len(COLUMNS))
    ]

    def line(cells):
        """mode and implementation left-aligned, figures right-aligned; a skipped or failed
        implementation has one note instead of figures, written out in full."""
        left = [cell.ljust(width) for cell, width in zip(cells[:2], widths)]
        if len(cells) == 3:
            return "  ".join(left + [cells[2]])
        return "  ".join(left + [cell.rjust(width) for cell, width in zip(cells[2:], widths[2:])])

    out = [line(COLUMNS[1:]), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    current_size = None
    for size, *cells in rows:
        if size != current_size:
            gemm = gemms[size]
            m, k, n = gemm["shape"]
            others = ", ".join(
                f"{name} {rate:.1f}"
                for name, rate in gemm["engine_gflops"].items()
                if name != gemm["engine"]
            )
            out += [
                "",
                f"{size}    [GEMM {m}x{k} @ {k}x{n}: {gemm['gflops']:.1f} GFLOP/s "
                f"({gemm['engine']}{'; ' + others if others else ''})]",
            ]
            current_size = size
        out.append(line(cells))
    return "\n".join(out)


def write_json(path: Path, payload: dict) -> None:
    path.write_text(json.dumps(payload, indent=2) + "\n")
