"""The compiled operators torch.ops.lstm_ext.* (their fake implementations in _fakes, batching
rules in _vmap, autograd in _autograd) and `lstm_layer`, the differentiable layer on the packed
time-major layout that the public API is built on.

Layout (see csrc/lstm_layer.h): the rows of step t are the first batch_sizes[t] sequences, stored
one step after another; N = sum(batch_sizes) rows, B = batch_sizes[0].
"""

import torch

from lstm_ext._torchscript import scripting_refused

try:
    from lstm_ext import _C  # noqa: F401  (loading it registers torch.ops.lstm_ext)
except ImportError as error:
    raise ImportError(
        f"lstm_ext's compiled extension lstm_ext._C could not be loaded ({error}). Build it "
        "against the installed torch from the source tree: `pip install --no-build-isolation "
        "-e .` (or `python setup.py build_ext --inplace`); see the README."
    ) from error

from lstm_ext import _fakes, _vmap  # noqa: E402,F401  (register fake and batching rules)
from lstm_ext._autograd import layer_function  # noqa: E402  (registers the autograd, too)


def cuda_available() -> bool:
    """Whether the CUDA kernels were built into this installation (a GPU may still be absent)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::lstm_layer_forward", "CUDA")


def lstm_layer(
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, reverse=False
):
    """One LSTM layer in one direction over packed time-major rows; differentiable.

    input (N, I); batch_sizes (T,) int64 on the CPU, non-increasing, batch_sizes[0] = B;
    h0 (B, R); c0 (B, H); w_ih (4H, I); w_hh (4H, R); b_ih, b_hh (4H) or None; w_hr (P, H) or
    None (then R = H). reverse walks the steps from the last to the first (the backward
    direction of a bidirectional layer). Returns (output (N, R), h_n (B, R), c_n (B, H)).
    Activations are kept for backward only when a gradient can flow.
    """
    tracing = torch.jit.is_tracing()
    # A TorchScript trace runs in either grad mode whatever mode it was traced in: it saves them.
    save_for_backward = (torch.is_grad_enabled() or tracing) and any(
        t is not None and t.requires_grad for t in (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    )
    args = (input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_for_backward)
    if tracing or torch.compiler.is_compiling():
        # The graph records the operator, whose registration differentiates it.
        output, h_n, c_n, *_ = torch.ops.lstm_ext.lstm_layer_forward(*args)
    elif save_for_backward:
        output, h_n, c_n, *_ = layer_function().apply(*args)
    else:
        # Nothing to differentiate: below the autograd key directly, past the registration's
        # Python autograd kernel, which would only redispatch.
        with torch._C._AutoDispatchBelowAutograd():
            output, h_n, c_n, *_ = torch.ops.lstm_ext.lstm_layer_forward(*args)
    return output, h_n, c_n


lstm_layer.__prepare_scriptable__ = scripting_refused("lstm_ext.lstm_layer")
