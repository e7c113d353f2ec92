"""lstm_ext.forward against torch.nn.LSTM and the pure-PyTorch reference: outputs, final states
and the gradients of every argument."""

import dataclasses

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lstm_ext
from layer_cases import LayerCase, sample_inputs
from tolerances import assert_close_scaled, assert_close_to_scale, tolerance


def run_ext(case, grad_outputs):
    output, (h_n, c_n) = lstm_ext.forward(*case.forward_args())
    grads = torch.autograd.grad((output, h_n, c_n), case.leaves(), grad_outputs)
    return (output, h_n, c_n), grads


def run_torch(case, grad_outputs):
    module, hx = case.torch_lstm()
    output, (h_n, c_n) = module(case.input, hx)
    # nn.LSTM owns copies of the weights: differentiate with respect to those, in case order.
    weights = [module.weight_ih_l0, module.weight_hh_l0]
    if case.b_ih is not None:
        weights += [module.bias_ih_l0, module.bias_hh_l0]
    if case.w_hr is not None:
        weights.append(module.weight_hr_l0)
    grads = torch.autograd.grad(
        (output, h_n[0], c_n[0]), [case.input, case.h0, case.c0] + weights, grad_outputs
    )
    return (output, h_n[0], c_n[0]), grads


def run_reference(case, grad_outputs):
    output, (h_n, c_n) = lstm_ext.reference.lstm_forward(*case.forward_args())
    grads = torch.autograd.grad((output, h_n, c_n), case.leaves(), grad_outputs)
    return (output, h_n, c_n), grads


def random_grad_outputs(case, seed=1):
    generator = torch.Generator().manual_seed(seed)
    batch, steps, _ = case.input.shape
    recurrent_size, hidden_size = case.h0.shape[1], case.c0.shape[1]
    shapes = [(batch, steps, recurrent_size), (batch, recurrent_size), (batch, hidden_size)]
    return [torch.randn(s, generator=generator, dtype=torch.float64).to(case.input) for s in shapes]


def assert_same(actual, expected, dtype):
    (actual_values, actual_grads), (expected_values, expected_grads) = actual, expected
    for name, a, e in zip(("output", "h_n", "c_n"), actual_values, expected_values):
        assert_close_scaled(a, e, dtype, a.device, lambda m: f"{name}: {m}")
    assert len(actual_grads) == len(expected_grads)
    for index, (a, e) in enumerate(zip(actual_grads, expected_grads)):
        assert_close_scaled(a, e, dtype, a.device, lambda m: f"gradient of argument {index}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_notebook_scenario_matches_nn_lstm(device, dtype, proj_size, bias):
    """The notebook this project started from: batch 2, T 3, input 4, hidden 5, proj 3."""
    case = sample_inputs(
        device, dtype, batch=2, steps=3, input_size=4, hidden_size=5, proj_size=proj_size, bias=bias
    )
    grad_outputs = random_grad_outputs(case)
    assert_same(run_ext(case, grad_outputs), run_torch(case, grad_outputs), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [1, 7, 33, 130])
@pytest.mark.parametrize("proj", [False, True])
def test_odd_sizes_match_nn_lstm(device, dtype, size, proj):
    proj_size = max(1, size // 2) if proj else 0
    case = sample_inputs(
        device,
        dtype,
        batch=size if size < 130 else 5,
        steps=3,
        input_size=size,
        hidden_size=max(size, proj_size + 1),
        proj_size=proj_size,
    )
    grad_outputs = random_grad_outputs(case)
    assert_same(run_ext(case, grad_outputs), run_torch(case, grad_outputs), dtype)


@pytest.mark.parametrize("proj_size", [0, 2])
def test_single_step_matches_nn_lstm(device, proj_size):
    case = sample_inputs(device, torch.float64, steps=1, proj_size=proj_size)
    grad_outputs = random_grad_outputs(case)
    assert_same(run_ext(case, grad_outputs), run_torch(case, grad_outputs), torch.float64)


@given(
    batch=st.integers(1, 6),
    steps=st.integers(1, 6),
    input_size=st.integers(1, 9),
    hidden_size=st.integers(1, 9),
    proj_size=st.integers(0, 4),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
@settings(max_examples=25, deadline=None)
def test_random_shapes_match_reference(
    batch, steps, input_size, hidden_size, proj_size, bias, seed
):
    proj_size = min(proj_size, hidden_size - 1) if hidden_size > 1 else 0
    case = sample_inputs(
        "cpu",
        torch.float64,
        batch,
        steps,
        input_size,
        hidden_size,
        proj_size,
        bias,
        seed=seed,
        scale=1.0,
    )
    grad_outputs = random_grad_outputs(case, seed=seed + 1)
    assert_same(run_ext(case, grad_outputs), run_reference(case, grad_outputs), torch.float64)


def test_saturating_inputs_match_nn_lstm(device):
    """Large pre-activations drive every gate to 0 or 1, where exp over/underflows."""
    case = sample_inputs(device, torch.float32, hidden_size=6, scale=30.0)
    grad_outputs = random_grad_outputs(case)
    assert_same(run_ext(case, grad_outputs), run_torch(case, grad_outputs), torch.float32)


def test_non_contiguous_arguments(device):
    case = sample_inputs(device, torch.float64, batch=3, steps=5, proj_size=2)
    expected = lstm_ext.forward(*case.forward_args())
    # Same values in transposed storage, and a strided view of the input.
    wide = torch.zeros(
        case.input.shape[:2] + (2 * case.input.shape[2],), dtype=torch.float64, device=device
    )
    wide[..., ::2] = case.input.detach()
    args = (
        wide[..., ::2],
        (case.h0.detach().t().contiguous().t(), case.c0.detach()),
        case.w_ih.detach().t().contiguous().t(),
        case.w_hh.detach().t().contiguous().t(),
        case.b_ih.detach(),
        case.b_hh.detach(),
        case.w_hr.detach().t().contiguous().t(),
    )
    assert not args[0].is_contiguous() and not args[2].is_contiguous()
    output, (h_n, c_n) = lstm_ext.forward(*args)
    # GEMMs on transposed weights may sum in another order: equal up to rounding.
    torch.testing.assert_close(output, expected[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(h_n, expected[1][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(c_n, expected[1][1], rtol=1e-12, atol=1e-12)


def test_initial_states_none_means_zeros(device):
    case = sample_inputs(device, torch.float64, proj_size=3)
    zeros = (torch.zeros_like(case.h0), torch.zeros_like(case.c0))
    output, (h_n, c_n) = lstm_ext.forward(
        case.input, None, case.w_ih, case.w_hh, case.b_ih, case.b_hh, case.w_hr
    )
    expected, (h_e, c_e) = lstm_ext.forward(
        case.input, zeros, case.w_ih, case.w_hh, case.b_ih, case.b_hh, case.w_hr
    )
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close((h_n, c_n), (h_e, c_e))
    output.sum().backward()
    assert case.w_hr.grad is not None and case.w_ih.grad.abs().sum() > 0


def test_calls_in_turn_without_initial_states_match_the_reference(device):
    # Calls without initial states reuse the zero states and batch sizes of the call before when
    # they fit: a change of batch (1 takes another path), steps, sizes, dtype or inference mode
    # must give fresh ones (a tensor made under inference mode cannot be saved for a backward).
    calls = [
        (3, 5, 4, "train"),
        (3, 7, 4, "train"),
        (3, 5, 6, "train"),
        (1, 7, 4, "train"),
        (2, 5, 4, "inference"),
        (2, 5, 4, "train"),
        (2, 5, 4, "float32"),
        (2, 5, 4, "train"),
    ]
    for batch, steps, hidden_size, mode in calls:
        dtype = torch.float32 if mode == "float32" else torch.float64
        case = sample_inputs(
            device, dtype, batch=batch, steps=steps, hidden_size=hidden_size, proj_size=3
        )
        args = (case.input, None, case.w_ih, case.w_hh, case.b_ih, case.b_hh, case.w_hr)
        if mode == "inference":
            with torch.inference_mode():
                actual = lstm_ext.forward(*args)
            expected = lstm_ext.reference.lstm_forward(*args)
            torch.testing.assert_close(actual, expected, **tolerance(dtype, device))
            continue
        actual, expected = lstm_ext.forward(*args), lstm_ext.reference.lstm_forward(*args)
        torch.testing.assert_close(actual, expected, **tolerance(dtype, device))
        leaves = [case.input] + case.leaves()[3:]
        grads = [torch.autograd.grad(result[0].sum(), leaves) for result in (actual, expected)]
        torch.testing.assert_close(grads[0], grads[1], **tolerance(dtype, device))


def test_zero_steps_returns_initial_states(device):
    case = sample_inputs(device, torch.float64, steps=0, proj_size=2)
    output, (h_n, c_n) = lstm_ext.forward(*case.forward_args())
    assert output.shape == (3, 0, 2)
    torch.testing.assert_close(h_n, case.h0, rtol=0, atol=0)
    torch.testing.assert_close(c_n, case.c0, rtol=0, atol=0)
    grad_h0, grad_c0, grad_w_ih = torch.autograd.grad(
        (h_n.sum() * 2 + c_n.sum() * 3), [case.h0, case.c0, case.w_ih]
    )
    torch.testing.assert_close(grad_h0, torch.full_like(case.h0, 2.0))
    torch.testing.assert_close(grad_c0, torch.full_like(case.c0, 3.0))
    assert torch.count_nonzero(grad_w_ih) == 0


def test_zero_batch_returns_empty(device):
    case = sample_inputs(device, torch.float32, batch=0, steps=4, proj_size=3)
    output, (h_n, c_n) = lstm_ext.forward(*case.forward_args())
    assert output.shape == (0, 4, 3) and h_n.shape == (0, 3) and c_n.shape == (0, 7)
    output.sum().backward()
    assert case.w_ih.grad.shape == case.w_ih.shape and torch.count_nonzero(case.w_ih.grad) == 0


def test_no_grad_forward_matches_training_forward(device):
    case = sample_inputs(device, torch.float32, proj_size=3)
    with torch.no_grad():
        inference = lstm_ext.forward(*case.forward_args())
    training = lstm_ext.forward(*case.forward_args())
    assert training[0].requires_grad and not inference[0].requires_grad
    torch.testing.assert_close(inference[0], training[0], rtol=0, atol=0)


def test_forward_of_tensors_needing_no_gradient_matches_training_forward(device):
    # Grad mode on, but nothing requires grad (frozen weights, data input): the operator runs
    # below the autograd key and saves nothing.
    case = sample_inputs(device, torch.float32, proj_size=3)
    frozen = [
        a.detach()
        if isinstance(a, torch.Tensor)
        else tuple(x.detach() for x in a)
        if isinstance(a, tuple)
        else a
        for a in case.forward_args()
    ]
    output, (h_n, c_n) = lstm_ext.forward(*frozen)
    assert not (output.requires_grad or h_n.requires_grad or c_n.requires_grad)
    training = lstm_ext.forward(*case.forward_args())
    torch.testing.assert_close(output, training[0].detach(), rtol=0, atol=0)
    torch.testing.assert_close((h_n, c_n), tuple(t.detach() for t in training[1]), rtol=0, atol=0)


def widened_case(case, dtype):
    """The case's tensors converted to `dtype`, as new leaves that require grad."""
    return LayerCase(
        **{
            field.name: None
            if getattr(case, field.name) is None
            else getattr(case, field.name).detach().to(dtype).requires_grad_()
            for field in dataclasses.fields(case)
        }
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("proj_size", [0, 3])
@pytest.mark.parametrize("batch, hidden_size", [(6, 20), (2, 260)])
def test_half_types_on_the_cpu_round_the_float32_layer(
    cpu_isa, dtype, proj_size, batch, hidden_size
):
    """On the CPU a 16-bit layer runs the float32 layer on its tensors widened: its results are
    those of the float32 layer at the same ISA level, rounded, bit for bit (h and c stay float32
    between steps). At B=2 H=260 the kernel reads a bfloat16 W_hh as stored, without widening
    it, and its rows of 260 end in a partial vector at every level."""
    case = sample_inputs(
        "cpu",
        dtype,
        batch=batch,
        steps=9,
        input_size=10,
        hidden_size=hidden_size,
        proj_size=proj_size,
    )
    output, (h_n, c_n) = lstm_ext.forward(*case.forward_args())
    expected, (expected_h, expected_c) = lstm_ext.forward(
        *widened_case(case, torch.float32).forward_args()
    )
    for name, actual, wide in (
        ("output", output, expected),
        ("h_n", h_n, expected_h),
        ("c_n", c_n, expected_c),
    ):
        assert actual.dtype == dtype, name
        torch.testing.assert_close(
            actual, wide.to(dtype), rtol=0, atol=0, msg=lambda m: f"{name}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("proj_size", [0, 3])
def test_half_types_on_the_cpu_within_their_precision(dtype, proj_size):
    """Values and gradients of a 16-bit layer on the CPU against float64 on the same (rounded)
    numbers: values within one unit of the 16-bit type's precision (eps) of the largest value,
    gradients within four (they come from the 16-bit saved activations; measured: 0.25 eps and
    1.2 eps)."""
    case = sample_inputs(
        "cpu", dtype, batch=6, steps=9, input_size=10, hidden_size=20, proj_size=proj_size
    )
    exact = widened_case(case, torch.float64)
    grad_outputs = random_grad_outputs(exact)
    (values, grads) = run_ext(case, [g.to(dtype) for g in grad_outputs])
    (exact_values, exact_grads) = run_ext(exact, grad_outputs)
    eps = torch.finfo(dtype).eps
    named = [
        (name, a, e, eps) for name, a, e in zip(("output", "h_n", "c_n"), values, exact_values)
    ]
    named += [
        (f"gradient of argument {index}", a, e, 4 * eps)
        for index, (a, e) in enumerate(zip(grads, exact_grads))
    ]
    for name, actual, expected, allowed in named:
        assert actual.dtype == dtype, name
        assert_close_to_scale(actual.double(), expected, allowed, allowed, lambda m: f"{name}: {m}")


def test_bfloat16_close_to_float64(device):
    case = sample_inputs(
        device, torch.float64, batch=4, steps=6, input_size=16, hidden_size=32, proj_size=8
    )
    expected, _ = lstm_ext.forward(*case.forward_args())
    args = [
        a.to(torch.bfloat16)
        if isinstance(a, torch.Tensor)
        else tuple(x.to(torch.bfloat16) for x in a)
        for a in case.forward_args()
    ]
    output, _ = lstm_ext.forward(*args)
    assert output.dtype == torch.bfloat16
    torch.testing.assert_close(output.double(), expected.detach(), rtol=0, atol=5e-2)
