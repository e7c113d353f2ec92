"""Wrong arguments raise errors that name the argument and the expected and received shape;
no argument reaches the kernels unchecked."""

import re
import subprocess
import sys

import pytest
import torch

import lstm_ext
from layer_cases import sample_inputs


def args_with(case, **changes):
    """lstm_ext.forward's arguments (detached) with some replaced."""
    values = dict(input=case.input, initial_states=(case.h0, case.c0), w_ih=case.w_ih,
                  w_hh=case.w_hh, b_ih=case.b_ih, b_hh=case.b_hh, w_hr=case.w_hr)
    values.update(changes)
    return values


@pytest.fixture
def case():
    # batch 2, T 3, input 4, hidden 5, proj 3
    return sample_inputs("cpu", torch.float32, batch=2, steps=3, input_size=4, hidden_size=5,
                         proj_size=3)


FORWARD_ERRORS = [
    (lambda c: dict(w_hh=torch.zeros(20, 5)),
     "w_hh has shape (20, 5), expected (4*hidden_size, proj_size) = (20, 3)"),
    (lambda c: dict(w_hh=torch.zeros(20, 3), w_hr=None),
     "w_hh has shape (20, 3), expected (4*hidden_size, hidden_size) = (20, 5)"),
    (lambda c: dict(w_ih=torch.zeros(20, 6)),
     "w_ih has shape (20, 6), expected (4*hidden_size, input_size) = (20, 4)"),
    (lambda c: dict(w_ih=torch.zeros(18, 4)),
     "w_ih has shape (18, 4), expected (4*hidden_size, input_size)"),
    (lambda c: dict(w_ih=torch.zeros(20)),
     "w_ih has shape (20,), expected (4*hidden_size, input_size)"),
    (lambda c: dict(b_ih=torch.zeros(21)),
     "b_ih has shape (21,), expected (4*hidden_size,) = (20,)"),
    (lambda c: dict(b_hh=torch.zeros(4, 5)),
     "b_hh has shape (4, 5), expected (4*hidden_size,) = (20,)"),
    (lambda c: dict(w_hr=torch.zeros(3, 4)),
     "w_hr has shape (3, 4), expected (proj_size, hidden_size) = (3, 5)"),
    (lambda c: dict(initial_states=(torch.zeros(2, 5), c.c0)),
     "h0 has shape (2, 5), expected (batch, proj_size) = (2, 3)"),
    (lambda c: dict(initial_states=(c.h0, torch.zeros(3, 5))),
     "c0 has shape (3, 5), expected (batch, hidden_size) = (2, 5)"),
    (lambda c: dict(initial_states=(c.h0, torch.zeros(1, 2, 5))),
     "c0 has shape (1, 2, 5), expected (batch, hidden_size) = (2, 5)"),
    (lambda c: dict(input=torch.zeros(3, 4)),
     "input has shape (3, 4), expected 3 dimensions (batch, seq_len, input_size)"),
    (lambda c: dict(input=torch.zeros(2, 3, 4, 1)),
     "input has shape (2, 3, 4, 1), expected 3 dimensions"),
    (lambda c: dict(input=torch.zeros(2, 3, 7)),
     "w_ih has shape (20, 4), expected (4*hidden_size, input_size) = (20, 7)"),
    (lambda c: dict(input=torch.zeros(2, 3, 4, dtype=torch.int64)),
     "input has dtype torch.int64, expected one of float32, float64, float16, bfloat16"),
    (lambda c: dict(w_hh=c.w_hh.double()),
     "w_hh has dtype torch.float64, expected torch.float32 like input"),
    (lambda c: dict(initial_states=(c.h0, c.c0.half())),
     "c0 has dtype torch.float16, expected torch.float32 like input"),
    (lambda c: dict(b_ih=c.b_ih.to("meta")),
     "b_ih is on meta, expected cpu like input"),
    (lambda c: dict(initial_states=(c.h0,)),
     "initial_states must be a pair (h0, c0) or None"),
    (lambda c: dict(w_hr=[[1.0]]),
     "w_hr must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize("change, message", FORWARD_ERRORS,
                         ids=[m.split(" ")[0] + str(i) for i, (_, m) in enumerate(FORWARD_ERRORS)])
def test_forward_rejects_with_message(case, change, message):
    with pytest.raises((ValueError, RuntimeError, TypeError), match=re.escape(message)):
        lstm_ext.forward(**args_with(case, **change(case)))


def layer_args(case, **changes):
    """Arguments of torch.ops.lstm_ext.lstm_layer_forward for the case's padded batch."""
    rows = case.input.detach().transpose(0, 1).reshape(6, 4)
    values = dict(input=rows, batch_sizes=torch.tensor([2, 2, 2]), h0=case.h0.detach(),
                  c0=case.c0.detach(), w_ih=case.w_ih.detach(), w_hh=case.w_hh.detach(),
                  b_ih=case.b_ih.detach(), b_hh=case.b_hh.detach(), w_hr=case.w_hr.detach(),
                  reverse=False, save_for_backward=False)
    values.update(changes)
    return list(values.values())


OPERATOR_ERRORS = [
    (dict(batch_sizes=torch.tensor([2, 3, 1])),
     "batch_sizes[1] = 3, expected a non-increasing sequence in [0, 2]"),
    (dict(batch_sizes=torch.tensor([1, 1, 1])), "batch_sizes[0] = 1, expected the batch size"),
    (dict(batch_sizes=torch.tensor([2, 2, -1])), "batch_sizes[2] = -1"),
    (dict(batch_sizes=torch.tensor([2, 2, 1])),
     "input has shape (6, 4), expected (sum(batch_sizes), input_size) = (5, 4)"),
    (dict(batch_sizes=torch.tensor([2.0, 2.0, 2.0])),
     "batch_sizes must be a 1-D int64 tensor on the CPU"),
    (dict(batch_sizes=torch.tensor([[2, 2, 2]])),
     "batch_sizes must be a 1-D int64 tensor on the CPU"),
    (dict(input=torch.zeros(6, 4, 1)), "input has shape (6, 4, 1), expected 2 dimensions"),
    (dict(w_hh=torch.zeros(20, 5)),
     "w_hh has shape (20, 5), expected (4*hidden_size, proj_size) = (20, 3)"),
    (dict(h0=torch.zeros(2, 5)), "h0 has shape (2, 5), expected (batch, proj_size) = (2, 3)"),
    (dict(w_hr=torch.zeros(0, 5)), "w_hr has shape (0, 5), expected proj_size > 0"),
    (dict(w_ih=torch.zeros(0, 4)),
     "w_ih has shape (0, 4), expected (4*hidden_size, input_size) with hidden_size > 0"),
    (dict(c0=torch.zeros(2, 5, dtype=torch.float64)),
     "c0 has dtype Double, expected Float like input"),
    (dict(input=torch.zeros(6, 4, dtype=torch.int32)), "input has dtype Int, expected one of"),
    # A meta argument sends the call to the fake implementation, which must refuse it too.
    (dict(h0=torch.zeros(2, 3, device="meta")), "h0 is on meta, expected cpu like input"),
    (dict(w_hr=torch.zeros(3, 5, device="meta")), "w_hr is on meta, expected cpu like input"),
    (dict(batch_sizes=torch.tensor([2, 2, 2], device="meta")),
     "batch_sizes must be a 1-D int64 tensor on the CPU, got one on meta"),
]


@pytest.mark.parametrize("changes, message", OPERATOR_ERRORS)
def test_operator_rejects_with_message(case, changes, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.lstm_ext.lstm_layer_forward(*layer_args(case, **changes))


def test_backward_operator_checks_saved_shapes(case):
    forward_args = layer_args(case, save_for_backward=True)
    output, h_n, c_n, gates, cells, hidden = torch.ops.lstm_ext.lstm_layer_forward(*forward_args)
    input, batch_sizes, h0, c0, w_ih, w_hh, _, _, w_hr, reverse, _ = forward_args
    grads = (torch.ones_like(output), torch.ones_like(h_n), torch.ones_like(c_n))
    with pytest.raises(RuntimeError, match=re.escape(
            "gates has shape (5, 20), expected (rows, 4*hidden_size) = (6, 20)")):
        torch.ops.lstm_ext.lstm_layer_backward(*grads, input, batch_sizes, h0, c0, w_ih, w_hh,
                                               w_hr, output, gates[:5], cells, hidden, reverse,
                                               True, True)
    with pytest.raises(RuntimeError, match=re.escape(
            "grad_c_n has shape (2, 4), expected (batch, hidden_size) = (2, 5)")):
        torch.ops.lstm_ext.lstm_layer_backward(grads[0], grads[1], grads[2][:, :4], input,
                                               batch_sizes, h0, c0, w_ih, w_hh, w_hr, output,
                                               gates, cells, hidden, reverse, True, True)


def test_backward_of_inference_forward_is_refused(case):
    args = layer_args(case)
    args[0] = args[0].requires_grad_()
    output = torch.ops.lstm_ext.lstm_layer_forward(*args)[0]
    with pytest.raises(RuntimeError, match="save_for_backward=False"):
        output.sum().backward()


def test_missing_extension_says_how_to_build():
    # Hide the compiled module: the import error must say how to build it.
    code = ("import sys; sys.modules['lstm_ext._C'] = None\n"
            "try:\n    import lstm_ext\nexcept ImportError as e:\n    print(e)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert "pip install --no-build-isolation" in result.stdout
    assert "lstm_ext._C could not be loaded" in result.stdout


def test_backward_operator_refuses_a_meta_gradient(case):
    forward_args = layer_args(case, save_for_backward=True)
    output, h_n, c_n, gates, cells, hidden = torch.ops.lstm_ext.lstm_layer_forward(*forward_args)
    input, batch_sizes, h0, c0, w_ih, w_hh, _, _, w_hr, reverse, _ = forward_args
    with pytest.raises(RuntimeError, match=re.escape(
            "lstm_ext.lstm_layer_backward: grad_h_n is on meta, expected cpu like input")):
        torch.ops.lstm_ext.lstm_layer_backward(
            torch.ones_like(output), torch.ones_like(h_n, device="meta"), torch.ones_like(c_n),
            input, batch_sizes, h0, c0, w_ih, w_hh, w_hr, output, gates, cells, hidden, reverse,
            True, True)


def test_calls_with_every_tensor_on_meta_infer_shapes():
    module = lstm_ext.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3, device="meta")
    input = torch.zeros(5, 2, 4, device="meta", requires_grad=True)
    output, (h_n, c_n) = module(input)
    assert (output.shape, h_n.shape, c_n.shape) == ((5, 2, 6), (4, 2, 3), (4, 2, 6))
    assert output.device.type == h_n.device.type == c_n.device.type == "meta"
    (output.sum() + h_n.sum() + c_n.sum()).backward()
    assert input.grad.shape == input.shape and input.grad.device.type == "meta"
    rows, h0, c0 = (torch.zeros(shape, device="meta") for shape in ((7, 4), (3, 6), (3, 6)))
    output, h_n, c_n = lstm_ext.lstm_layer(
        rows, torch.tensor([3, 2, 2], device="meta"), h0, c0, module.weight_ih_l0,
        torch.zeros(24, 6, device="meta"))
    assert (output.shape, h_n.shape, c_n.shape) == ((7, 6), (3, 6), (3, 6))
