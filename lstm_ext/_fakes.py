"""The fake (meta) implementations of the layer operators: their output shapes for
torch.compile, FakeTensorMode and meta tensors.

The dispatcher runs them whenever one argument is on the meta device, real tensors on another
device among the rest included: so they check the devices first, as the compiled operators do
(csrc/core/lstm_checks.cpp), instead of returning uninitialised tensors.
"""

import torch


def _check_devices(op, input, batch_sizes, named_tensors):
    for name, tensor in named_tensors:
        if tensor is not None and tensor.device != input.device:
            raise RuntimeError(
                f"{op}: {name} is on {tensor.device}, expected {input.device} like input"
            )
    # On the CPU, where its values are read; only shape inference takes it on meta.
    if batch_sizes.device.type != "cpu" and batch_sizes.device != input.device:
        raise RuntimeError(
            f"{op}: batch_sizes must be a 1-D int64 tensor on the CPU, got one "
            f"on {batch_sizes.device}"
        )


@torch.library.register_fake("lstm_ext::lstm_layer_forward")
def _lstm_layer_forward_fake(
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse, save_for_backward
):
    _check_devices(
        "lstm_ext.lstm_layer_forward",
        input,
        batch_sizes,
        (
            ("h0", h0),
            ("c0", c0),
            ("w_ih", w_ih),
            ("w_hh", w_hh),
            ("b_ih", b_ih),
            ("b_hh", b_hh),
            ("w_hr", w_hr),
        ),
    )
    rows = input.shape[0]
    hidden_size = w_ih.shape[0] // 4
    recurrent_size = w_hr.shape[0] if w_hr is not None else hidden_size
    output = input.new_empty((rows, recurrent_size))
    h_n = input.new_empty(h0.shape)
    c_n = input.new_empty(c0.shape)
    if not save_for_backward:
        return output, h_n, c_n, *(input.new_empty((0,)) for _ in range(3))
    gates = input.new_empty((rows, 4 * hidden_size))
    cells = input.new_empty((rows, hidden_size))
    hidden = input.new_empty((rows, hidden_size) if w_hr is not None else (0,))
    return output, h_n, c_n, gates, cells, hidden


@torch.library.register_fake("lstm_ext::lstm_layer_backward")
def _lstm_layer_backward_fake(
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
    reverse,
    grad_input_mask,
    grad_weights_mask,
):
    _check_devices(
        "lstm_ext.lstm_layer_backward",
        input,
        batch_sizes,
        (
            ("grad_output", grad_output),
            ("grad_h_n", grad_h_n),
            ("grad_c_n", grad_c_n),
            ("h0", h0),
            ("c0", c0),
            ("w_ih", w_ih),
            ("w_hh", w_hh),
            ("w_hr", w_hr),
            ("output", output),
            ("gates", gates),
            ("cells", cells),
            ("hidden", hidden),
        ),
    )
    grad_input = torch.empty_like(input) if grad_input_mask else input.new_empty((0,))
    if not grad_weights_mask:
        return (
            grad_input,
            torch.empty_like(h0),
            torch.empty_like(c0),
            *(input.new_empty((0,)) for _ in range(4)),
        )
    grad_w_hr = torch.empty_like(w_hr) if w_hr is not None else input.new_empty((0,))
    return (
        grad_input,
        torch.empty_like(h0),
        torch.empty_like(c0),
        torch.empty_like(w_ih),
        torch.empty_like(w_hh),
        w_ih.new_empty((w_ih.shape[0],)),
        grad_w_hr,
    )
