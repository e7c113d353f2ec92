"""The instruction-set level of lstm_ext's CPU kernels.

Its microkernels are compiled for each level of the architecture (x86-64: "default", the SSE2
baseline, "avx2" and "avx512"; ARM64: "neon") and the best one the processor runs is used, capped
by the environment variable LSTM_EXT_CPU_ISA when it is set (read on first use, like ATen's
ATEN_CPU_CAPABILITY). Results are bitwise repeatable at a given level; between levels they differ
in rounding only (vector widths sum in other orders, and the baseline has no fused multiply-add).
"""

import torch

import lstm_ext.ops  # noqa: F401  (loads the operators)


def cpu_isa() -> str:
    """The level the CPU kernels run at now."""
    return torch.ops.lstm_ext.cpu_isa()


def supported_cpu_isas() -> list:
    """The levels this processor runs, lowest first."""
    return list(torch.ops.lstm_ext.supported_cpu_isas())


def select_cpu_isa(name: str) -> str:
    """Runs the CPU kernels at the level `name` from now on, or at the best supported level
    below it (as LSTM_EXT_CPU_ISA caps it); returns the level chosen. For tests and benchmarks
    that compare levels in one process; an unknown name raises a RuntimeError."""
    return torch.ops.lstm_ext.select_cpu_isa(name)
