"""The compiled operators torch.ops.lstm_ext.*: their autograd wiring (their fake implementations
are in _fakes) and `lstm_layer`, the differentiable layer on the packed time-major layout that
the public API is built on.

Layout (see csrc/lstm_layer.h): the rows of step t are the first batch_sizes[t] sequences, stored
one step after another; N = sum(batch_sizes) rows, B = batch_sizes[0].
"""

import torch

from lstm_ext._recomputed_backward import recomputed_backward
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


def cuda_available() -> bool:
    """Whether the CUDA kernels were built into this installation (a GPU may still be absent)."""
    return torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::lstm_layer_forward", "CUDA")


def _setup_context(ctx, inputs, output):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_for_backward = inputs
    layer_output, _, c_n, gates, cells, hidden = output
    ctx.save_for_backward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, layer_output,
                          gates, cells, hidden)
    ctx.reverse = reverse
    ctx.saved_activations = save_for_backward
    # The saved activations are not differentiable outputs; nor is c_n where of the arguments
    # that require grad it depends on none: w_hr reaches c only through the previous step's h,
    # so not in a single step (nn.LSTM's c_n then does not require grad either).
    single_step_cell = batch_sizes.shape[0] <= 1 and not any(
        t is not None and t.requires_grad for t in (input, h0, c0, w_ih, w_hh, b_ih, b_hh))
    ctx.mark_non_differentiable(gates, cells, hidden, *((c_n,) if single_step_cell else ()))


def _backward(ctx, grad_output, grad_h_n, grad_c_n, *_grads_of_saved_activations):
    if not ctx.saved_activations:
        raise RuntimeError(
            "lstm_ext.lstm_layer_forward was called with save_for_backward=False and cannot be "
            "differentiated; call it with save_for_backward=True (lstm_ext.ops.lstm_layer does)")
    grads = (grad_output, grad_h_n, grad_c_n)
    # Grad mode is on in a backward that builds a graph (create_graph=True, torch.func).
    if torch.is_grad_enabled():
        recomputed = recomputed_backward(ctx, grads)
        if recomputed is not None:
            return recomputed
    return _fused_backward(ctx, grads)


def _fused_backward(ctx, grads):
    """The gradients from the fused backward operator (not differentiable itself)."""
    (input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, output, gates, cells,
     hidden) = ctx.saved_tensors
    grad_output, grad_h_n, grad_c_n = grads
    grad_output = torch.zeros_like(output) if grad_output is None else grad_output
    grad_h_n = torch.zeros_like(h0) if grad_h_n is None else grad_h_n
    grad_c_n = torch.zeros_like(c0) if grad_c_n is None else grad_c_n
    # Skip the GEMMs of gradients nobody asked for: the input's (a first layer's data), the
    # weights' (a frozen layer).
    needs_input_grad = ctx.needs_input_grad
    grad_input_mask = needs_input_grad[0]
    grad_weights_mask = any(needs_input_grad[4:9])
    (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias,
     grad_w_hr) = torch.ops.lstm_ext.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, input, batch_sizes, h0, c0, w_ih, w_hh, w_hr, output,
        gates, cells, hidden, ctx.reverse, grad_input_mask, grad_weights_mask)
    if not grad_weights_mask:
        return (grad_input if grad_input_mask else None, None, grad_h0, grad_c0, *([None] * 7))
    # Both biases have the same gradient, but each parameter gets a tensor of its own: a caller
    # of torch.autograd.grad may edit one in place (a copy of 4H elements).
    grad_b_ih = grad_bias if b_ih is not None else None
    grad_b_hh = (grad_bias.clone() if b_ih is not None else grad_bias) if b_hh is not None else None
    return (grad_input if grad_input_mask else None, None, grad_h0, grad_c0, grad_w_ih,
            grad_w_hh, grad_b_ih, grad_b_hh, grad_w_hr if w_hr is not None else None, None, None)


torch.library.register_autograd("lstm_ext::lstm_layer_forward", _backward,
                                setup_context=_setup_context)


class _LayerFunction(torch.autograd.Function):
    """lstm_layer_forward's autograd in eager mode and under torch.func transforms: the same
    setup_context and backward as its registration above, without the generic wrapper's per-call
    schema handling (about 60 us a call, which a small layer notices), and with a setup_context
    of its own, which torch.func requires (the registration's wrapper has none). Under vmap,
    forward and backward run the operators' batching rules (lstm_ext/_vmap.py). Code that
    torch.compile traces uses the registration."""

    generate_vmap_rule = True

    @staticmethod
    def forward(*inputs):
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.lstm_ext.lstm_layer_forward(*inputs)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _setup_context(ctx, inputs, output)
        # The backward reads no gradient of the saved activations and makes the zeros of an
        # unused output itself: autograd would otherwise fill a zero tensor as large as each of
        # them, the gates (N, 4H) first, on every backward call (B=64 T=100 I=512 H=1024 P=256
        # training, alternated on a 2-core Xeon: 0.91x the time without).
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, *grads):
        return _backward(ctx, *grads)


def lstm_layer(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None,
               reverse=False):
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
        t is not None and t.requires_grad for t in (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr))
    args = (input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_for_backward)
    if tracing or torch.compiler.is_compiling():
        # The graph records the operator, whose registration differentiates it.
        output, h_n, c_n, *_ = torch.ops.lstm_ext.lstm_layer_forward(*args)
    elif save_for_backward:
        output, h_n, c_n, *_ = _LayerFunction.apply(*args)
    else:
        # Nothing to differentiate: below the autograd key directly, past the registration's
        # Python autograd kernel, which would only redispatch (about 10 us a call).
        with torch._C._AutoDispatchBelowAutograd():
            output, h_n, c_n, *_ = torch.ops.lstm_ext.lstm_layer_forward(*args)
    return output, h_n, c_n


lstm_layer.__prepare_scriptable__ = scripting_refused("lstm_ext.lstm_layer")
