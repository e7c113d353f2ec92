"""How close lstm_ext must come to nn.LSTM and to the reference in the comparisons that run on
every device (tests/test_forward.py, tests/test_cuda.py)."""

import torch

# float32: a few units in the fifth digit. nn.LSTM sums in another order than lstm_ext (oneDNN's or
# ATen's GEMMs on a CPU, cuDNN's on a GPU, where lstm_ext's gradients came up to 5e-5 from cuDNN's
# on an H200); float64 leaves room for rounding only.
TOLERANCES = {torch.float64: dict(rtol=1e-10, atol=1e-10),
              torch.float32: dict(rtol=5e-5, atol=5e-5)}


def assert_close_scaled(actual, expected, dtype, msg):
    """assert_close with the absolute tolerance scaled by the largest expected magnitude: the
    rounding errors of sums over hundreds of terms grow with the values summed."""
    tolerance = TOLERANCES[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(actual, expected.to(actual.dtype), rtol=tolerance["rtol"],
                               atol=tolerance["atol"] * scale, msg=msg)
