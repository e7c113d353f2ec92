"""The layer's backward where its gradients must be differentiable (a backward with
create_graph=True, torch.func): the fused backward operator has no derivative of its own, so the
gradients are recomputed as the vector-Jacobian product of lstm_ext.reference's step loop on the
same packed rows, which autograd and torch.func differentiate to any order."""

import torch

from lstm_ext import reference

# The positions of the differentiable tensors among lstm_layer_forward's arguments.
DIFFERENTIABLE_ARGUMENTS = (0, 2, 3, 4, 5, 6, 7, 8)


def _current_values(saved):
    """Views of the saved arguments. Under torch.func a saved tensor can be the wrapper of a
    transform level that has finished (a vjp's pullback); a view of it is its value at the levels
    still running, and requires grad exactly where a gradient can still be asked for."""
    with torch.enable_grad():
        return [
            value.view_as(value)
            if index in DIFFERENTIABLE_ARGUMENTS and value is not None
            else value
            for index, value in enumerate(saved)
        ]


def recomputed_backward(ctx, grads):
    """The 11 gradients of lstm_layer_forward's arguments as differentiable functions of the
    arguments and `grads`, or None where none of these requires grad (then nothing can
    differentiate the gradients, and the fused backward gives the same values faster)."""
    arguments = _current_values(ctx.saved_tensors[:9])
    if not any(value is not None and value.requires_grad for value in (*arguments, *grads)):
        return None
    wanted = [i for i in DIFFERENTIABLE_ARGUMENTS if ctx.needs_input_grad[i]]

    def layer(*wanted_values):
        values = list(arguments)
        for index, value in zip(wanted, wanted_values):
            values[index] = value
        return reference.lstm_layer(*values, reverse=ctx.reverse)

    outputs, pullback = torch.func.vjp(layer, *(arguments[i] for i in wanted))
    computed = pullback(
        tuple(
            torch.zeros_like(output) if grad is None else grad
            for output, grad in zip(outputs, grads)
        )
    )
    result = [None] * 11
    for index, grad in zip(wanted, computed):
        result[index] = grad
    return tuple(result)
