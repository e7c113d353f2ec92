"""Autograd at the edges: every gradient a tensor of its own, the eager autograd.Function and the
operator's registration (torch.compile's route) computing the same gradients, and gradients of
gradients (computed by recomputation through lstm_ext.reference) that are nn.LSTM's."""

import itertools

import pytest
import torch
from test_operators import packed_args, packed_layer
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from layer_cases import sample_inputs
from tolerances import assert_close_scaled


def test_gradients_of_all_parameters_share_no_memory():
    torch.manual_seed(0)
    module = lstm_ext.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2)
    output, (h_n, c_n) = module(torch.randn(5, 2, 3))
    loss = output.square().sum() + h_n.sum() + c_n.sum()
    grads = torch.autograd.grad(loss, list(module.parameters()))
    for first, second in itertools.combinations(grads, 2):
        assert first.untyped_storage().data_ptr() != second.untyped_storage().data_ptr()
    bias_hh = grads[3].clone()
    grads[2].zero_()  # bias_ih_l0: its edit must leave bias_hh_l0's gradient alone
    assert torch.equal(grads[3], bias_hh)
    assert bias_hh.abs().sum() > 0


@pytest.mark.parametrize("reverse", [False, True])
def test_eager_function_and_operator_registration_give_the_same_gradients(reverse):
    # lstm_layer runs the eager autograd.Function; calling the operator itself goes through its
    # register_autograd registration, which torch.compile traces. Both must agree bitwise.
    args = packed_args("cpu", dtype=torch.float32, proj_size=2, reverse=reverse)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    results = []
    for layer in (
        lstm_ext.lstm_layer,
        lambda *a: torch.ops.lstm_ext.lstm_layer_forward(*a, True)[:3],
    ):
        output, h_n, c_n = layer(*args)
        assert output.grad_fn is not None
        loss = (output * output.detach().cos()).sum() + h_n.sum() + c_n.square().sum()
        results.append((output, h_n, c_n, *torch.autograd.grad(loss, leaves)))
    assert type(results[0][0].grad_fn) is not type(results[1][0].grad_fn)
    for eager, registered in zip(*results):
        assert torch.equal(eager, registered)


def double_backward_grads(module, data, lengths):
    """The gradients of |d(|output|^2)/d(input)|^2 with respect to the parameters and the
    input, of `module` on the packed, unsorted sequences data (T, B, I) of `lengths`."""
    leaf = data.clone().requires_grad_()
    packed = pack_padded_sequence(leaf, lengths, enforce_sorted=False)
    output, (h_n, c_n) = module(packed)
    loss = output.data.square().sum() + h_n.sum() + c_n.square().sum()
    (grad_input,) = torch.autograd.grad(loss, leaf, create_graph=True)
    return torch.autograd.grad(grad_input.square().sum(), [*module.parameters(), leaf])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "config",
    [dict(), dict(num_layers=2, bidirectional=True, proj_size=2)],
    ids=["plain", "deep-bidirectional-projected"],
)
def test_double_backward_matches_nn_lstm(device, dtype, config):
    # cuDNN refuses double backward: the expected values are nn.LSTM's on the CPU.
    torch.manual_seed(0)
    reference = torch.nn.LSTM(3, 4, dtype=dtype, **config)
    candidate = lstm_ext.LSTM.from_torch(reference).to(device)
    data = torch.randn(5, 3, 3, dtype=dtype)
    lengths = torch.tensor([5, 2, 4])
    expected = double_backward_grads(reference, data, lengths)
    actual = double_backward_grads(candidate, data.to(device), lengths)
    for name, got, want in zip([*dict(reference.named_parameters()), "input"], actual, expected):
        assert want.abs().sum() > 0, name
        assert_close_scaled(got.cpu(), want, dtype, device, msg=name)


@pytest.mark.parametrize("reverse, proj_size", [(False, 0), (True, 2)])
def test_gradgradcheck_packed(device, reverse, proj_size):
    assert torch.autograd.gradgradcheck(*packed_layer(device, proj_size, reverse))


def test_gradgradcheck_forward_without_bias(device):
    case = sample_inputs(
        device, torch.float64, batch=2, steps=3, input_size=2, hidden_size=3, bias=False
    )

    def layer(input, h0, c0, w_ih, w_hh):
        output, (h_n, c_n) = lstm_ext.forward(input, (h0, c0), w_ih, w_hh)
        return output, h_n, c_n

    assert torch.autograd.gradgradcheck(layer, tuple(case.leaves()))


def test_reference_layer_matches_the_fused_layer_on_packed_rows():
    for reverse, proj_size in itertools.product((False, True), (None, 2)):
        args = packed_args("cpu", proj_size=proj_size, reverse=reverse)
        for fused, reference in zip(
            lstm_ext.lstm_layer(*args), lstm_ext.reference.lstm_layer(*args)
        ):
            torch.testing.assert_close(fused, reference)
