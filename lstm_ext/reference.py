"""The ground truth: lstm_ext.forward and lstm_ext.lstm_layer written with plain PyTorch ops, one
step at a time. Differentiable to any order, which the fused layers' backward is not: their
gradients of gradients are computed through lstm_layer here (lstm_ext/ops.py)."""

import torch


def _step(input_t, h, c, w_ih, w_hh, b_ih, b_hh, w_hr):
    """One LSTM step of the rows input_t (rows, I) from (h, c); returns the new (h, c)."""
    gates = input_t @ w_ih.t() + h @ w_hh.t()
    if b_ih is not None:
        gates = gates + b_ih
    if b_hh is not None:
        gates = gates + b_hh
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    if w_hr is not None:
        h = h @ w_hr.t()
    return h, c


def lstm_forward(input, initial_states, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """Same signature and results as lstm_ext.forward (batch-first; see its docstring)."""
    batch, steps, _ = input.shape
    hidden_size = w_ih.shape[0] // 4
    recurrent_size = w_hr.shape[0] if w_hr is not None else hidden_size
    if initial_states is None:
        h = input.new_zeros((batch, recurrent_size))
        c = input.new_zeros((batch, hidden_size))
    else:
        h, c = initial_states
    outputs = []
    for t in range(steps):
        h, c = _step(input[:, t], h, c, w_ih, w_hh, b_ih, b_hh, w_hr)
        outputs.append(h)
    if outputs:
        output = torch.stack(outputs, dim=1)
    else:
        output = input.new_empty((batch, 0, recurrent_size))
    return output, (h, c)


def lstm_layer(
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, reverse=False
):
    """Same signature and results as lstm_ext.lstm_layer (packed time-major rows).

    Step t runs the first batch_sizes[t] sequences. The states of the others stay as they are:
    the final ones of sequences that have ended, or, walking in reverse, the initial ones of
    sequences that have not begun.
    """
    sizes = batch_sizes.tolist()
    offsets = [0]
    for size in sizes:
        offsets.append(offsets[-1] + size)
    h, c = h0, c0
    outputs = [None] * len(sizes)
    for t in reversed(range(len(sizes))) if reverse else range(len(sizes)):
        rows = sizes[t]
        h_t, c_t = _step(
            input[offsets[t] : offsets[t + 1]], h[:rows], c[:rows], w_ih, w_hh, b_ih, b_hh, w_hr
        )
        outputs[t] = h_t
        h = torch.cat((h_t, h[rows:]))
        c = torch.cat((c_t, c[rows:]))
    output = torch.cat(outputs) if outputs else input.new_empty((0, h0.shape[1]))
    return output, h, c
