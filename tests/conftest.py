import platform
import sys
from pathlib import Path

import pytest
import torch

import lstm_ext

# The benchmark and example scripts are imported as packages of the source tree. The tree goes
# last on the path, so that an installed lstm_ext (with its compiled extension) comes first.
SOURCE_TREE = str(Path(__file__).resolve().parents[1])
if SOURCE_TREE not in sys.path:
    sys.path.append(SOURCE_TREE)

CUDA_DEVICE = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
)


@pytest.fixture(params=["cpu", CUDA_DEVICE])
def device(request):
    """Every device-parametrised test runs on the CPU, and on CUDA where a GPU is present."""
    return request.param


@pytest.fixture(autouse=True)
def full_precision_float32():
    """cuDNN and cuBLAS in true float32, like the CPU. cuDNN allows TF32 by default, which puts
    nn.LSTM's float32 results on a GPU ~1e-3 (relative) from the exact ones: the comparisons with
    it would then measure TF32's rounding, not lstm_ext's."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# Every ISA level of the CPU microkernels on this architecture, lowest first (lstm_ext/isa.py).
CPU_ISAS = (
    ("neon",) if platform.machine() in ("aarch64", "arm64") else ("default", "avx2", "avx512")
)


def _cpu_isa_param(name):
    lacks = name not in lstm_ext.supported_cpu_isas()
    return pytest.param(
        name,
        marks=pytest.mark.skipif(
            lacks, reason=f"the processor lacks {name.upper()} (run on one that has it)"
        ),
    )


@pytest.fixture(params=[_cpu_isa_param(name) for name in CPU_ISAS])
def cpu_isa(request):
    """Runs a test at each ISA level of the CPU microkernels that this processor supports."""
    previous = lstm_ext.cpu_isa()
    assert lstm_ext.select_cpu_isa(request.param) == request.param
    yield request.param
    lstm_ext.select_cpu_isa(previous)


@pytest.fixture
def benchmark_in_this_process(monkeypatch):
    """The benchmarks' default, --isa native, clears any ISA cap in the environment by running
    again in a fresh process. A suite run under caps (to test a capped level) wants the benchmark
    tests to run here, at the level this process already has: the caps leave the environment."""
    from benchmarks import isa_cap

    for name in isa_cap.CAP_VARIABLES:
        monkeypatch.delenv(name, raising=False)
