"""Argument checks of lstm_ext.forward, in the contract's terms (batch-first input (B, T, I)).

The compiled operators check their own arguments again (csrc/lstm_checks.cpp), so a direct call
of torch.ops.lstm_ext.* cannot read or write out of bounds either.
"""

import torch

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def shape_string(shape):
    shape = tuple(shape)
    return "(" + ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"


def _check_shape(name, tensor, expected, description):
    if tuple(tensor.shape) != tuple(expected):
        raise ValueError(
            f"lstm_ext.forward: {name} has shape {shape_string(tensor.shape)}, "
            f"expected {description} = {shape_string(expected)}"
        )


def _check_tensor(name, value):
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"lstm_ext.forward: {name} must be a torch.Tensor, got {type(value).__name__}"
        )


def check_forward_args(input, initial_states, w_ih, w_hh, b_ih, b_hh, w_hr):
    """Validates the arguments of lstm_ext.forward; returns (hidden_size, recurrent_size)."""
    named = [("input", input), ("w_ih", w_ih), ("w_hh", w_hh)]
    named += [
        (name, t) for name, t in (("b_ih", b_ih), ("b_hh", b_hh), ("w_hr", w_hr)) if t is not None
    ]
    if initial_states is not None:
        if not isinstance(initial_states, (tuple, list)) or len(initial_states) != 2:
            raise ValueError(
                "lstm_ext.forward: initial_states must be a pair (h0, c0) or None, "
                f"got {type(initial_states).__name__}"
            )
        named += [("h0", initial_states[0]), ("c0", initial_states[1])]
    for name, value in named:
        _check_tensor(name, value)

    if input.dtype not in SUPPORTED_DTYPES:
        raise ValueError(
            f"lstm_ext.forward: input has dtype {input.dtype}, expected one of "
            "float32, float64, float16, bfloat16"
        )
    if input.dim() != 3:
        raise ValueError(
            f"lstm_ext.forward: input has shape {shape_string(input.shape)}, "
            "expected 3 dimensions (batch, seq_len, input_size)"
        )
    for name, value in named[1:]:
        if value.device != input.device:
            raise ValueError(
                f"lstm_ext.forward: {name} is on {value.device}, expected {input.device} like input"
            )
        if value.dtype != input.dtype:
            raise ValueError(
                f"lstm_ext.forward: {name} has dtype {value.dtype}, expected "
                f"{input.dtype} like input"
            )

    batch, _, input_size = input.shape
    if w_ih.dim() != 2 or w_ih.shape[0] % 4 != 0 or w_ih.shape[0] == 0:
        raise ValueError(
            f"lstm_ext.forward: w_ih has shape {shape_string(w_ih.shape)}, "
            "expected (4*hidden_size, input_size) with hidden_size > 0"
        )
    hidden_size = w_ih.shape[0] // 4
    _check_shape("w_ih", w_ih, (4 * hidden_size, input_size), "(4*hidden_size, input_size)")
    if w_hr is not None:
        if w_hr.dim() != 2 or w_hr.shape[0] == 0:
            raise ValueError(
                f"lstm_ext.forward: w_hr has shape {shape_string(w_hr.shape)}, "
                "expected (proj_size, hidden_size) with proj_size > 0"
            )
        _check_shape("w_hr", w_hr, (w_hr.shape[0], hidden_size), "(proj_size, hidden_size)")
        recurrent_size, recurrent_name = w_hr.shape[0], "proj_size"
    else:
        recurrent_size, recurrent_name = hidden_size, "hidden_size"
    _check_shape(
        "w_hh", w_hh, (4 * hidden_size, recurrent_size), f"(4*hidden_size, {recurrent_name})"
    )
    for name, bias in (("b_ih", b_ih), ("b_hh", b_hh)):
        if bias is not None:
            _check_shape(name, bias, (4 * hidden_size,), "(4*hidden_size,)")
    if initial_states is not None:
        h0, c0 = initial_states
        _check_shape("h0", h0, (batch, recurrent_size), f"(batch, {recurrent_name})")
        _check_shape("c0", c0, (batch, hidden_size), "(batch, hidden_size)")
    return hidden_size, recurrent_size
