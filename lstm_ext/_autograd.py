"""The autograd of lstm_layer_forward: one setup_context and one backward, wired three ways.

- the operator's registration (torch.library.register_autograd), which code that torch.compile
  or torch.jit.trace records goes through;
- EagerLayerFunction, for eager calls: without the registration's per-call schema handling,
  which a small layer notices;
- FunctorchLayerFunction, under torch.func transforms, which require a setup_context of the
  autograd.Function itself (the registration's has none). Its apply binds the arguments to
  forward's signature with inspect on every call, a cost that eager calls do not pay.
tests/test_autograd.py checks that they give the same gradients.
"""

import torch

from lstm_ext._recomputed_backward import recomputed_backward
from lstm_ext._reuse import reused


def setup_layer_context(ctx, inputs, output):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_for_backward = inputs
    layer_output, _, _, gates, cells, hidden = output
    ctx.save_for_backward(
        input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, layer_output, gates, cells, hidden
    )
    ctx.reverse = reverse
    ctx.saved_activations = save_for_backward
    # The saved activations are not differentiable outputs, nor an output that depends on no
    # argument that requires grad (then it does not require grad, as nn.LSTM's would not).
    ctx.mark_non_differentiable(gates, cells, hidden, *_constant_outputs(inputs, output))
    # The backward makes the zeros of an unused output itself: autograd would otherwise fill a
    # zero tensor for each, as large as the gates, on every backward call.
    ctx.set_materialize_grads(False)


def _constant_outputs(inputs, output):
    """Those of output, h_n and c_n that depend on no argument that requires grad: without steps
    the output is empty and the final states are the initial ones; in one step c_n does not
    depend on w_hr, which reaches c only through the previous step's h."""
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr = inputs[:9]
    layer_output, h_n, c_n = output[:3]

    def any_requires_grad(*tensors):
        return any(t is not None and t.requires_grad for t in tensors)

    steps = batch_sizes.shape[0]
    if steps == 0:
        return [layer_output] + [
            state for state, initial in ((h_n, h0), (c_n, c0)) if not any_requires_grad(initial)
        ]
    if steps == 1 and not any_requires_grad(input, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return [c_n]
    return []


def layer_backward(ctx, grad_output, grad_h_n, grad_c_n, *_grads_of_saved_activations):
    if not ctx.saved_activations:
        raise RuntimeError(
            "lstm_ext.lstm_layer_forward was called with save_for_backward=False and cannot be "
            "differentiated; call it with save_for_backward=True (lstm_ext.ops.lstm_layer does)"
        )
    grads = (grad_output, grad_h_n, grad_c_n)
    # Grad mode is on in a backward that builds a graph (create_graph=True, torch.func).
    if torch.is_grad_enabled():
        recomputed = recomputed_backward(ctx, grads)
        if recomputed is not None:
            return recomputed
    return _fused_backward(ctx, grads)


# The zero gradients of unused final states that backward calls take over from the call before.
_reused_zero_gradients = {}


def _zero_state_gradient(name, state):
    """Zeros like `state` (B, .), for the gradient of a final state the loss does not use: the
    operator only reads it, so a backward reuses the last one of its shape (lstm_ext/_reuse.py:
    a tensor operation saved matters to a small layer)."""
    return reused(
        _reused_zero_gradients,
        name,
        (state.shape, state.dtype, state.device),
        lambda: torch.zeros_like(state),
    )


def _fused_backward(ctx, grads):
    """The gradients from the fused backward operator (not differentiable itself)."""
    input, batch_sizes, h0, c0, w_ih, w_hh, _, _, w_hr, output, gates, cells, hidden = (
        ctx.saved_tensors
    )
    grad_output, grad_h_n, grad_c_n = grads
    grad_output = torch.zeros_like(output) if grad_output is None else grad_output
    grad_h_n = _zero_state_gradient("h_n", h0) if grad_h_n is None else grad_h_n
    grad_c_n = _zero_state_gradient("c_n", c0) if grad_c_n is None else grad_c_n
    # Skip the GEMMs of gradients nobody asked for: the input's (a first layer's data), the
    # weights' (a frozen layer).
    needs_input_grad = ctx.needs_input_grad
    grad_input_mask = needs_input_grad[0]
    grad_weights_mask = any(needs_input_grad[4:9])
    (grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias, grad_w_hr) = (
        torch.ops.lstm_ext.lstm_layer_backward(
            grad_output,
            grad_h_n,
            grad_c_n,
            input,
            batch_sizes,
            h0,
            c0,
            w_ih,
            w_hh,
            w_hr,
            output,
            gates,
            cells,
            hidden,
            ctx.reverse,
            grad_input_mask,
            grad_weights_mask,
        )
    )
    if not grad_weights_mask:
        return (grad_input if grad_input_mask else None, None, grad_h0, grad_c0, *([None] * 7))
    # Both biases have the same gradient, but each parameter gets a tensor of its own: a caller
    # of torch.autograd.grad may edit one in place (a copy of 4H elements).
    grad_b_ih = grad_bias if needs_input_grad[6] else None
    grad_b_hh = None
    if needs_input_grad[7]:
        grad_b_hh = grad_bias.clone() if grad_b_ih is not None else grad_bias
    return (
        grad_input if grad_input_mask else None,
        None,
        grad_h0,
        grad_c0,
        grad_w_ih,
        grad_w_hh,
        grad_b_ih,
        grad_b_hh,
        grad_w_hr if w_hr is not None else None,
        None,
        None,
    )


torch.library.register_autograd(
    "lstm_ext::lstm_layer_forward", layer_backward, setup_context=setup_layer_context
)


def _forward_below_autograd(*inputs):
    with torch._C._AutoDispatchBelowAutograd():
        return torch.ops.lstm_ext.lstm_layer_forward(*inputs)


class EagerLayerFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        output = _forward_below_autograd(*inputs)
        setup_layer_context(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, *grads):
        return layer_backward(ctx, *grads)


class FunctorchLayerFunction(torch.autograd.Function):
    """Under vmap, forward and backward run the operators' batching rules (lstm_ext/_vmap.py)
    and the recomputed backward's plain PyTorch operations."""

    generate_vmap_rule = True
    forward = staticmethod(_forward_below_autograd)
    setup_context = staticmethod(setup_layer_context)
    backward = staticmethod(layer_backward)


def layer_function():
    """The autograd.Function for a differentiable eager call."""
    if torch._C._are_functorch_transforms_active():
        return FunctorchLayerFunction
    return EagerLayerFunction
