"""How close lstm_ext must come to nn.LSTM and to the reference in the comparisons that run on
every device (tests/test_forward.py, tests/test_cuda.py)."""

import torch

# float32: a few units in the fifth digit, as nn.LSTM (oneDNN's or ATen's GEMMs) sums in another
# order than lstm_ext; float64 leaves room for rounding only.
TOLERANCES = {
    torch.float64: dict(rtol=1e-10, atol=1e-10),
    torch.float32: dict(rtol=2e-5, atol=2e-5),
}

# On a GPU, lstm_ext's float32 gradients came up to 5e-5 from cuDNN's (an H200).
CUDA_FLOAT32_TOLERANCE = dict(rtol=5e-5, atol=5e-5)


def tolerance(dtype, device):
    """rtol and atol for results of `dtype` computed on `device`."""
    if torch.device(device).type == "cuda" and dtype == torch.float32:
        return CUDA_FLOAT32_TOLERANCE
    return TOLERANCES[dtype]


def assert_close_to_scale(actual, expected, rtol, atol, msg):
    """assert_close with the absolute tolerance scaled by the largest expected magnitude (from 1
    up): the rounding errors of sums over hundreds of terms grow with the values summed."""
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual, expected.to(actual.dtype), rtol=rtol, atol=atol * scale, msg=msg
    )


def assert_close_scaled(actual, expected, dtype, computed_on, msg):
    """assert_close_to_scale with the tolerance of results computed on the device `computed_on`
    (they may have been moved since)."""
    allowed = tolerance(dtype, computed_on)
    assert_close_to_scale(actual, expected, allowed["rtol"], allowed["atol"], msg)
