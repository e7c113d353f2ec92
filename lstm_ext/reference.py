"""The ground truth: lstm_ext.forward written with plain PyTorch ops, one step at a time."""

import torch


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
        gates = input[:, t] @ w_ih.t() + h @ w_hh.t()
        if b_ih is not None:
            gates = gates + b_ih
        if b_hh is not None:
            gates = gates + b_hh
        i, f, g, o = gates.chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        if w_hr is not None:
            h = h @ w_hr.t()
        outputs.append(h)
    if outputs:
        output = torch.stack(outputs, dim=1)
    else:
        output = input.new_empty((batch, 0, recurrent_size))
    return output, (h, c)
