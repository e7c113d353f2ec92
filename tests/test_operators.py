"""The operators as PyTorch sees them: fp64 gradcheck, opcheck, torch.compile, determinism."""

import pytest
import torch

import lstm_ext
from layer_cases import sample_inputs

PACKED_BATCH_SIZES = [4, 4, 3, 1, 1]  # sequences of lengths 5, 3, 2, 2


def packed_args(device, dtype=torch.float64, proj_size=2, reverse=False, bias=True):
    """Arguments of lstm_ext.lstm_layer for a packed batch with lengths 5, 3, 2, 2."""
    case = sample_inputs(
        device, dtype, batch=4, steps=1, input_size=3, hidden_size=4, proj_size=proj_size, bias=bias
    )
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(sum(PACKED_BATCH_SIZES), 3, generator=generator, dtype=torch.float64)
    rows = rows.to(device=device, dtype=dtype).requires_grad_()
    batch_sizes = torch.tensor(PACKED_BATCH_SIZES, dtype=torch.int64)
    return (
        rows,
        batch_sizes,
        case.h0,
        case.c0,
        case.w_ih,
        case.w_hh,
        case.b_ih,
        case.b_hh,
        case.w_hr,
        reverse,
    )


@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_forward(device, proj_size, bias):
    case = sample_inputs(
        device,
        torch.float64,
        batch=2,
        steps=3,
        input_size=4,
        hidden_size=5,
        proj_size=proj_size,
        bias=bias,
    )

    def layer(input, h0, c0, w_ih, w_hh, *optional):
        b_ih, b_hh = (optional[0], optional[1]) if bias else (None, None)
        w_hr = optional[-1] if proj_size else None
        output, (h_n, c_n) = lstm_ext.forward(input, (h0, c0), w_ih, w_hh, b_ih, b_hh, w_hr)
        return output, h_n, c_n

    assert torch.autograd.gradcheck(layer, tuple(case.leaves()))


def packed_layer(device, proj_size, reverse):
    """lstm_ext.lstm_layer on packed_args as a function of its differentiable tensors, and
    those tensors (float64), for gradcheck and gradgradcheck."""
    args = packed_args(device, proj_size=proj_size or None, reverse=reverse)
    rows, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse = args

    def layer(rows, h0, c0, w_ih, w_hh, b_ih, b_hh, *w_hr):
        return lstm_ext.lstm_layer(
            rows, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr[0] if w_hr else None, reverse
        )

    inputs = (rows, h0, c0, w_ih, w_hh, b_ih, b_hh) + ((w_hr,) if w_hr is not None else ())
    return layer, inputs


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_gradcheck_packed(device, reverse, proj_size):
    assert torch.autograd.gradcheck(*packed_layer(device, proj_size, reverse))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_opcheck_forward_and_backward(device, reverse, proj_size):
    args = packed_args(device, dtype=torch.float32, proj_size=proj_size or None, reverse=reverse)
    torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_forward.default, args + (True,))
    # Without saved activations the operator is for inference only: no input requires grad.
    detached_args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_forward.default, detached_args + (False,))

    rows, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse = args
    output, _, _, gates, cells, hidden = torch.ops.lstm_ext.lstm_layer_forward(*args, True)
    grads = (torch.randn_like(output), torch.randn_like(h0), torch.randn_like(c0))
    backward_args = grads + (
        rows,
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
    )
    detached = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in backward_args)
    for masks in ((True, True), (False, True), (True, False), (False, False)):
        torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_backward.default, detached + masks)


def test_compile_fullgraph_matches_eager(device):
    torch._dynamo.reset()
    case = sample_inputs(
        device, torch.float32, batch=3, steps=5, input_size=4, hidden_size=6, proj_size=3
    )

    def model(input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr):
        output, (h_n, c_n) = lstm_ext.forward(input, (h0, c0), w_ih, w_hh, b_ih, b_hh, w_hr)
        return torch.tanh(output).sum() + h_n.square().sum() + c_n.sum()

    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    leaves = case.leaves()
    eager_loss = model(*leaves)
    eager_grads = torch.autograd.grad(eager_loss, leaves)
    compiled_loss = compiled(*leaves)
    compiled_grads = torch.autograd.grad(compiled_loss, leaves)
    torch.testing.assert_close(compiled_loss, eager_loss)
    for compiled_grad, eager_grad in zip(compiled_grads, eager_grads):
        torch.testing.assert_close(compiled_grad, eager_grad)


def test_compile_inductor_inference(device):
    torch._dynamo.reset()
    case = sample_inputs(device, torch.float32, batch=2, steps=3, input_size=4, hidden_size=5)
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in case.forward_args()]
    args[1] = tuple(t.detach() for t in case.forward_args()[1])

    def model(*args):
        return lstm_ext.forward(*args)[0] * 2

    with torch.no_grad():
        expected = model(*args)
        actual = torch.compile(model, fullgraph=True)(*args)
    torch.testing.assert_close(actual, expected)


@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_backward_are_bitwise_repeatable(device, reverse):
    args = packed_args(device, dtype=torch.float32, proj_size=3, reverse=reverse)
    inputs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def run():
        output, h_n, c_n = lstm_ext.lstm_layer(*args)
        loss = (output * torch.arange(output.numel(), device=device).view_as(output).sin()).sum()
        return (output, h_n, c_n) + torch.autograd.grad(loss + h_n.sum() + c_n.sum(), inputs)

    first = run()
    for _ in range(3):
        for a, b in zip(first, run()):
            assert torch.equal(a, b)


def misaligned_copy(tensor, offset_bytes):
    """A copy of `tensor` whose data starts `offset_bytes` past a 64-byte boundary."""
    floats = offset_bytes // tensor.element_size()
    storage = torch.empty(tensor.numel() + 64, dtype=tensor.dtype)
    start = (-storage.data_ptr() // tensor.element_size()) % 16 + floats
    copy = storage[start : start + tensor.numel()].view_as(tensor)
    copy.copy_(tensor)
    assert copy.data_ptr() % 64 == offset_bytes
    return copy


@pytest.mark.parametrize("batch", [1, 3])
def test_misaligned_weights_give_the_aligned_results(batch):
    # AOTInductor hands a CPU model's weights over 16-byte aligned.
    torch.manual_seed(4)
    H, P, I, T = 40, 24, 8, 6
    weights = [
        torch.randn(4 * H, I),
        torch.randn(4 * H, P),
        torch.randn(4 * H),
        torch.randn(4 * H),
        torch.randn(P, H),
    ]
    input, batch_sizes = torch.randn(T * batch, I), torch.full((T,), batch)
    h0, c0 = torch.randn(batch, P), torch.randn(batch, H)
    with torch.no_grad():
        expected = lstm_ext.lstm_layer(input, batch_sizes, h0, c0, *weights)
        misaligned = [misaligned_copy(weight, 16) for weight in weights]
        actual = lstm_ext.lstm_layer(input, batch_sizes, h0, c0, *misaligned)
    for a, b in zip(actual, expected):
        assert torch.equal(a, b)
