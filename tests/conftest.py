import pytest
import torch

CUDA_DEVICE = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"))


@pytest.fixture(params=["cpu", CUDA_DEVICE])
def device(request):
    """Every device-parametrised test runs on the CPU, and on CUDA where a GPU is present."""
    return request.param
