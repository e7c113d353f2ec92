"""Autograd at the edges: every gradient a tensor of its own, and the eager autograd.Function
and the operator's registration (torch.compile's route) computing the same gradients."""

import itertools

import pytest
import torch

import lstm_ext
from test_operators import packed_args


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
    for layer in (lstm_ext.lstm_layer,
                  lambda *a: torch.ops.lstm_ext.lstm_layer_forward(*a, True)[:3]):
        output, h_n, c_n = layer(*args)
        assert output.grad_fn is not None
        loss = (output * output.detach().cos()).sum() + h_n.sum() + c_n.square().sum()
        results.append((output, h_n, c_n, *torch.autograd.grad(loss, leaves)))
    assert type(results[0][0].grad_fn) is not type(results[1][0].grad_fn)
    for eager, registered in zip(*results):
        assert torch.equal(eager, registered)
