"""Wrong arguments raise errors of the expected type that name the argument and the expected and
received shape, device or dtype; no argument reaches the kernels unchecked."""

import re
import subprocess
import sys

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from layer_cases import sample_inputs


def args_with(case, **changes):
    """lstm_ext.forward's arguments (detached) with some replaced."""
    values = dict(
        input=case.input,
        initial_states=(case.h0, case.c0),
        w_ih=case.w_ih,
        w_hh=case.w_hh,
        b_ih=case.b_ih,
        b_hh=case.b_hh,
        w_hr=case.w_hr,
    )
    values.update(changes)
    return values


@pytest.fixture
def case():
    # batch 2, T 3, input 4, hidden 5, proj 3
    return sample_inputs(
        "cpu", torch.float32, batch=2, steps=3, input_size=4, hidden_size=5, proj_size=3
    )


FORWARD_ERRORS = [
    (
        lambda c: dict(w_hh=torch.zeros(20, 5)),
        ValueError,
        "w_hh has shape (20, 5), expected (4*hidden_size, proj_size) = (20, 3)",
    ),
    (
        lambda c: dict(w_hh=torch.zeros(20, 3), w_hr=None),
        ValueError,
        "w_hh has shape (20, 3), expected (4*hidden_size, hidden_size) = (20, 5)",
    ),
    (
        lambda c: dict(w_ih=torch.zeros(20, 6)),
        ValueError,
        "w_ih has shape (20, 6), expected (4*hidden_size, input_size) = (20, 4)",
    ),
    (
        lambda c: dict(w_ih=torch.zeros(18, 4)),
        ValueError,
        "w_ih has shape (18, 4), expected (4*hidden_size, input_size)",
    ),
    (
        lambda c: dict(w_ih=torch.zeros(20)),
        ValueError,
        "w_ih has shape (20,), expected (4*hidden_size, input_size)",
    ),
    (
        lambda c: dict(b_ih=torch.zeros(21)),
        ValueError,
        "b_ih has shape (21,), expected (4*hidden_size,) = (20,)",
    ),
    (
        lambda c: dict(b_hh=torch.zeros(4, 5)),
        ValueError,
        "b_hh has shape (4, 5), expected (4*hidden_size,) = (20,)",
    ),
    (
        lambda c: dict(w_hr=torch.zeros(3, 4)),
        ValueError,
        "w_hr has shape (3, 4), expected (proj_size, hidden_size) = (3, 5)",
    ),
    (
        lambda c: dict(initial_states=(torch.zeros(2, 5), c.c0)),
        ValueError,
        "h0 has shape (2, 5), expected (batch, proj_size) = (2, 3)",
    ),
    (
        lambda c: dict(initial_states=(c.h0, torch.zeros(3, 5))),
        ValueError,
        "c0 has shape (3, 5), expected (batch, hidden_size) = (2, 5)",
    ),
    (
        lambda c: dict(initial_states=(c.h0, torch.zeros(1, 2, 5))),
        ValueError,
        "c0 has shape (1, 2, 5), expected (batch, hidden_size) = (2, 5)",
    ),
    (
        lambda c: dict(input=torch.zeros(3, 4)),
        ValueError,
        "input has shape (3, 4), expected 3 dimensions (batch, seq_len, input_size)",
    ),
    (
        lambda c: dict(input=torch.zeros(2, 3, 4, 1)),
        ValueError,
        "input has shape (2, 3, 4, 1), expected 3 dimensions",
    ),
    (
        lambda c: dict(input=torch.zeros(2, 3, 7)),
        ValueError,
        "w_ih has shape (20, 4), expected (4*hidden_size, input_size) = (20, 7)",
    ),
    (
        lambda c: dict(input=torch.zeros(2, 3, 4, dtype=torch.int64)),
        ValueError,
        "input has dtype torch.int64, expected one of float32, float64, float16, bfloat16",
    ),
    (
        lambda c: dict(w_hh=c.w_hh.double()),
        ValueError,
        "w_hh has dtype torch.float64, expected torch.float32 like input",
    ),
    (
        lambda c: dict(initial_states=(c.h0, c.c0.half())),
        ValueError,
        "c0 has dtype torch.float16, expected torch.float32 like input",
    ),
    (
        lambda c: dict(b_ih=c.b_ih.to("meta")),
        ValueError,
        "b_ih is on meta, expected cpu like input",
    ),
    (
        lambda c: dict(initial_states=(c.h0,)),
        ValueError,
        "initial_states must be a pair (h0, c0) or None",
    ),
    (lambda c: dict(w_hr=[[1.0]]), TypeError, "w_hr must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize(
    "change, error, message",
    FORWARD_ERRORS,
    ids=[m.split(" ")[0] + str(i) for i, (_, _, m) in enumerate(FORWARD_ERRORS)],
)
def test_forward_rejects_with_message(case, change, error, message):
    with pytest.raises(error, match=re.escape(message)):
        lstm_ext.forward(**args_with(case, **change(case)))


def layer_args(case, **changes):
    """Arguments of torch.ops.lstm_ext.lstm_layer_forward for the case's padded batch."""
    rows = case.input.detach().transpose(0, 1).reshape(6, 4)
    values = dict(
        input=rows,
        batch_sizes=torch.tensor([2, 2, 2]),
        h0=case.h0.detach(),
        c0=case.c0.detach(),
        w_ih=case.w_ih.detach(),
        w_hh=case.w_hh.detach(),
        b_ih=case.b_ih.detach(),
        b_hh=case.b_hh.detach(),
        w_hr=case.w_hr.detach(),
        reverse=False,
        save_for_backward=False,
    )
    values.update(changes)
    return list(values.values())


OPERATOR_ERRORS = [
    (
        dict(batch_sizes=torch.tensor([2, 3, 1])),
        "batch_sizes[1] = 3, expected a non-increasing sequence in [0, 2]",
    ),
    (dict(batch_sizes=torch.tensor([1, 1, 1])), "batch_sizes[0] = 1, expected the batch size"),
    (dict(batch_sizes=torch.tensor([2, 2, -1])), "batch_sizes[2] = -1"),
    (
        dict(batch_sizes=torch.tensor([2, 2, 1])),
        "input has shape (6, 4), expected (sum(batch_sizes), input_size) = (5, 4)",
    ),
    (
        dict(batch_sizes=torch.tensor([2.0, 2.0, 2.0])),
        "batch_sizes must be a 1-D int64 tensor on the CPU",
    ),
    (
        dict(batch_sizes=torch.tensor([[2, 2, 2]])),
        "batch_sizes must be a 1-D int64 tensor on the CPU",
    ),
    (dict(input=torch.zeros(6, 4, 1)), "input has shape (6, 4, 1), expected 2 dimensions"),
    (
        dict(w_hh=torch.zeros(20, 5)),
        "w_hh has shape (20, 5), expected (4*hidden_size, proj_size) = (20, 3)",
    ),
    (dict(h0=torch.zeros(2, 5)), "h0 has shape (2, 5), expected (batch, proj_size) = (2, 3)"),
    (dict(w_hr=torch.zeros(0, 5)), "w_hr has shape (0, 5), expected proj_size > 0"),
    (
        dict(w_ih=torch.zeros(0, 4)),
        "w_ih has shape (0, 4), expected (4*hidden_size, input_size) with hidden_size > 0",
    ),
    (
        dict(c0=torch.zeros(2, 5, dtype=torch.float64)),
        "c0 has dtype Double, expected Float like input",
    ),
    (dict(input=torch.zeros(6, 4, dtype=torch.int32)), "input has dtype Int, expected one of"),
    # A meta argument sends the call to the fake implementation, which must refuse it too.
    (dict(h0=torch.zeros(2, 3, device="meta")), "h0 is on meta, expected cpu like input"),
    (dict(w_hr=torch.zeros(3, 5, device="meta")), "w_hr is on meta, expected cpu like input"),
    (
        dict(batch_sizes=torch.tensor([2, 2, 2], device="meta")),
        "batch_sizes must be a 1-D int64 tensor on the CPU, got one on meta",
    ),
]


@pytest.mark.parametrize("changes, message", OPERATOR_ERRORS)
def test_operator_rejects_with_message(case, changes, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.lstm_ext.lstm_layer_forward(*layer_args(case, **changes))


def backward_args(case, **changes):
    """Arguments of torch.ops.lstm_ext.lstm_layer_backward after a training forward of the
    case's padded batch, with gradients of ones; `changes` replaces any by name."""
    forward_args = layer_args(case, save_for_backward=True)
    output, h_n, c_n, gates, cells, hidden = torch.ops.lstm_ext.lstm_layer_forward(*forward_args)
    input, batch_sizes, h0, c0, w_ih, w_hh, _, _, w_hr, reverse, _ = forward_args
    values = dict(
        grad_output=torch.ones_like(output),
        grad_h_n=torch.ones_like(h_n),
        grad_c_n=torch.ones_like(c_n),
        input=input,
        batch_sizes=batch_sizes,
        h0=h0,
        c0=c0,
        w_ih=w_ih,
        w_hh=w_hh,
        w_hr=w_hr,
        output=output,
        gates=gates,
        cells=cells,
        hidden=hidden,
        reverse=reverse,
        grad_input_mask=True,
        grad_weights_mask=True,
    )
    for name, change in changes.items():
        values[name] = change(values[name])
    return list(values.values())


@pytest.mark.parametrize(
    "name, change, message",
    [
        (
            "gates",
            lambda gates: gates[:5],
            "gates has shape (5, 20), expected (rows, 4*hidden_size) = (6, 20)",
        ),
        (
            "grad_c_n",
            lambda grad: grad[:, :4],
            "grad_c_n has shape (2, 4), expected (batch, hidden_size) = (2, 5)",
        ),
        (
            "grad_h_n",
            lambda grad: torch.ones_like(grad, device="meta"),
            "lstm_ext.lstm_layer_backward: grad_h_n is on meta, expected cpu like input",
        ),
    ],
)
def test_backward_operator_checks_its_arguments(case, name, change, message):
    with pytest.raises(RuntimeError, match=re.escape(message)):
        torch.ops.lstm_ext.lstm_layer_backward(*backward_args(case, **{name: change}))


def test_backward_of_inference_forward_is_refused(case):
    args = layer_args(case)
    args[0] = args[0].requires_grad_()
    output = torch.ops.lstm_ext.lstm_layer_forward(*args)[0]
    with pytest.raises(RuntimeError, match="save_for_backward=False"):
        output.sum().backward()


def test_missing_extension_says_how_to_build():
    # Hide the compiled module: the import error must say how to build it.
    code = (
        "import sys; sys.modules['lstm_ext._C'] = None\n"
        "try:\n    import lstm_ext\nexcept ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "pip install --no-build-isolation" in result.stdout
    assert "lstm_ext._C could not be loaded" in result.stdout


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
        rows,
        torch.tensor([3, 2, 2], device="meta"),
        h0,
        c0,
        module.weight_ih_l0,
        torch.zeros(24, 6, device="meta"),
    )
    assert (output.shape, h_n.shape, c_n.shape) == ((7, 6), (3, 6), (3, 6))


def module_call_arguments():
    """A 2-layer lstm_ext.LSTM(4, 5), a seq-first input (T=3, B=2, 4) and a zero hx."""
    torch.manual_seed(0)
    return (
        lstm_ext.LSTM(4, 5, num_layers=2),
        torch.randn(3, 2, 4),
        (torch.zeros(2, 2, 5), torch.zeros(2, 2, 5)),
    )


def packed(input, dtype=torch.float32):
    return pack_padded_sequence(input.to(dtype), torch.tensor([3, 2]))


def layer_with_batch_sizes(module, input, hx, batch_sizes, **changes):
    """lstm_ext.lstm_layer on the input's rows with the module's first layer."""
    arguments = dict(
        input=input.reshape(6, 4),
        h0=hx[0][0],
        c0=hx[1][0],
        w_ih=module.weight_ih_l0,
        w_hh=module.weight_hh_l0,
    )
    arguments.update(changes)
    return lstm_ext.lstm_layer(batch_sizes=batch_sizes, **arguments)


# Bad calls of lstm_ext.LSTM and lstm_ext.lstm_layer beyond those that tests/test_module.py holds
# to nn.LSTM's own errors: each with the type and message it must raise.
MODULE_ERRORS = {
    "hx one tensor": (
        lambda m, x, hx: m(x, torch.stack(hx)),
        TypeError,
        "LSTM: hx must be a tuple (h_0, c_0), got Tensor",
    ),
    "packed input, hx on meta": (
        lambda m, x, hx: m(packed(x), tuple(state.to("meta") for state in hx)),
        RuntimeError,
        "Input and hidden tensors are not at the same device, found input tensor at cpu and "
        "hidden tensor at meta",
    ),
    "module on meta": (
        lambda m, x, hx: m.to("meta")(x),
        RuntimeError,
        "Input and parameter tensors are not at the same device, found input tensor at cpu and "
        "parameter tensor at meta",
    ),
    "packed input of another dtype": (
        lambda m, x, hx: m(packed(x, torch.float64)),
        ValueError,
        "RNN input dtype (torch.float64) does not match weight dtype (torch.float32)",
    ),
    "packed input, hx of another batch": (
        lambda m, x, hx: m(packed(x), (torch.zeros(2, 3, 5), torch.zeros(2, 3, 5))),
        RuntimeError,
        "Expected hidden[0] size (2, 2, 5), got [2, 3, 5]",
    ),
    "torch.jit.script": (
        lambda m, x, hx: torch.jit.script(m),
        RuntimeError,
        "lstm_ext.LSTM cannot be compiled by torch.jit.script",
    ),
    "lstm_layer, batch_sizes[0] above h0's batch": (
        lambda m, x, hx: layer_with_batch_sizes(m, x, hx, torch.tensor([3, 3])),
        RuntimeError,
        "batch_sizes[0] = 3, expected a non-increasing sequence in [0, 2] (the batch size of h0)",
    ),
    "lstm_layer, float64 input and float32 weights": (
        lambda m, x, hx: layer_with_batch_sizes(
            m, x.double(), hx, torch.tensor([2, 2, 2]), h0=hx[0][0].double(), c0=hx[1][0].double()
        ),
        RuntimeError,
        "lstm_ext.lstm_layer_forward: w_ih has dtype Float, expected Double like input",
    ),
    "lstm_layer, vmap over batch_sizes": (
        lambda m, x, hx: torch.func.vmap(lambda sizes: layer_with_batch_sizes(m, x, hx, sizes)[0])(
            torch.tensor([[2, 2, 2], [2, 2, 2]])
        ),
        RuntimeError,
        "vmap over batch_sizes is not supported",
    ),
}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", list(MODULE_ERRORS))
def test_module_and_layer_reject_with_type_and_message(name):
    call, error, message = MODULE_ERRORS[name]
    with pytest.raises(error, match=re.escape(message)):
        call(*module_call_arguments())
