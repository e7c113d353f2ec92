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
