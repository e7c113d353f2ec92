"""lstm_ext.forward: one batch-first LSTM layer, the public functional API."""

import torch

from lstm_ext._reuse import padded_batch_sizes, reused
from lstm_ext._torchscript import scripting_refused
from lstm_ext._validation import check_forward_args
from lstm_ext.ops import lstm_layer

# The constant tensors that calls reuse from the call before (see _reuse).
_reused_tensors = {}


def forward(input, initial_states, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None):
    """One LSTM layer, one direction, batch-first; the semantics of torch.nn.LSTM.

    input (B, T, I); initial_states (h0 (B, R), c0 (B, H)) or None for zeros; w_ih (4H, I);
    w_hh (4H, R); b_ih, b_hh (4H) or None; w_hr (P, H) or None, the output projection
    h_t = W_hr (o_t * tanh(c_t)), with R = P when given, else H.
    Returns (output (B, T, R), (h_n (B, R), c_n (B, H))). Differentiable in every tensor.
    """
    hidden_size, recurrent_size = check_forward_args(
        input, initial_states, w_ih, w_hh, b_ih, b_hh, w_hr
    )
    batch, steps, input_size = input.shape
    if initial_states is None:
        h0, c0 = reused(
            _reused_tensors,
            "zero_states",
            (batch, recurrent_size, hidden_size, input.dtype, input.device),
            lambda: (
                input.new_zeros((batch, recurrent_size)),
                input.new_zeros((batch, hidden_size)),
            ),
        )
    else:
        h0, c0 = initial_states
    # The operators take time-major rows: step t's rows are contiguous. A single sequence lies
    # in that order already (no transpose, nor its autograd node); a TorchScript trace must
    # serve every batch size.
    single = not torch.jit.is_tracing() and batch == 1
    time_major = input if single else input.transpose(0, 1)
    rows = time_major.reshape(steps * batch, input_size)
    batch_sizes = padded_batch_sizes(_reused_tensors, steps, batch)
    output, h_n, c_n = lstm_layer(rows, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr)
    if single:
        return output.view(batch, steps, recurrent_size), (h_n, c_n)
    return output.view(steps, batch, recurrent_size).transpose(0, 1), (h_n, c_n)


forward.__prepare_scriptable__ = scripting_refused("lstm_ext.forward")
