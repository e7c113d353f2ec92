import sys
from pathlib import Path

import pytest
import torch

# The benchmark and example scripts are imported as packages of the source tree. The tree goes
# last on the path, so that an installed lstm_ext (with its compiled extension) comes first.
SOURCE_TREE = str(Path(__file__).resolve().parents[1])
if SOURCE_TREE not in sys.path:
    sys.path.append(SOURCE_TREE)

CUDA_DEVICE = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"))


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
