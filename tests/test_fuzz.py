"""Differential fuzzing, bounded to about a minute: lstm_ext.LSTM against torch.nn.LSTM and
lstm_ext.forward against lstm_ext.reference, over random configurations, input forms, views and
requires_grad combinations. The examples are derandomized (the same on every run, in CI too) and
no database is read or written, so that a failure here reproduces anywhere."""

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from tolerances import TOLERANCES


def fuzz_settings(examples):
    """`examples` derandomized examples, no deadline, no database (see above); the counts below
    make about a minute in all on a 2-core machine."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


DTYPES = st.sampled_from([torch.float32, torch.float64])


def strided(tensor, non_contiguous):
    """`tensor`, or a non-contiguous view with its values (every other element of a wider one)."""
    if not non_contiguous:
        return tensor
    wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype)
    wide[..., ::2] = tensor
    return wide[..., ::2]


def weighted_loss(tensors, seed):
    """A sum of the tensors weighted by fixed random values, so that every element counts."""
    generator = torch.Generator().manual_seed(seed)
    return sum(
        (tensor * torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype)).sum()
        for tensor in tensors
    )


def gradients(results, wrt, seed):
    """The gradients of a weighted loss of the results that require grad with respect to `wrt`
    (zeros where none does)."""
    differentiable = [tensor for tensor in results if tensor.requires_grad]
    if not differentiable:
        return [torch.zeros_like(tensor) for tensor in wrt]
    return list(
        torch.autograd.grad(
            weighted_loss(differentiable, seed), wrt, allow_unused=True, materialize_grads=True
        )
    )


def assert_close(actual, expected, dtype, name):
    torch.testing.assert_close(actual, expected, **TOLERANCES[dtype], msg=name)


@st.composite
def module_cases(draw):
    hidden_size = draw(st.integers(1, 5))
    config = dict(
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        bias=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        proj_size=draw(st.integers(0, hidden_size - 1)),
    )
    form = draw(st.sampled_from(["padded", "unbatched", "packed", "packed-sorted"]))
    lengths = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    if form == "packed-sorted":
        lengths.sort(reverse=True)
    return dict(
        config=config,
        hidden_size=hidden_size,
        input_size=draw(st.integers(1, 4)),
        dtype=draw(DTYPES),
        form=form,
        lengths=lengths,
        with_hx=draw(st.booleans()),
        input_grad=draw(st.booleans()),
        hx_grad=draw(st.booleans()),
        frozen=draw(st.sets(st.sampled_from(["weight_ih", "weight_hh", "bias", "weight_hr"]))),
        non_contiguous=draw(st.booleans()),
        seed=draw(st.integers(0, 2**16)),
    )


def module_inputs(case, reference):
    """(input, hx) for both modules, from the case's seed: leaves where they require grad."""
    generator = torch.Generator().manual_seed(case["seed"])
    dtype, lengths = case["dtype"], case["lengths"]
    steps, batch = max(lengths), len(lengths)
    batch_first = case["config"]["batch_first"]
    data = torch.randn(steps, batch, case["input_size"], generator=generator, dtype=dtype)
    if case["form"] == "unbatched":
        data = data[:, 0]
    elif batch_first and case["form"] == "padded":
        data = data.transpose(0, 1).contiguous()
    data = strided(data, case["non_contiguous"])
    states = (reference.num_layers * (2 if reference.bidirectional else 1),)
    states += () if case["form"] == "unbatched" else (batch,)
    hx = None
    if case["with_hx"]:
        hx = tuple(
            torch.randn(*states, size, generator=generator, dtype=dtype)
            for size in (reference.proj_size or reference.hidden_size, reference.hidden_size)
        )
    return data, hx


def run_module(module, case, data, hx):
    leaf = data.detach().clone().requires_grad_(case["input_grad"])
    input = leaf
    if case["form"].startswith("packed"):
        input = pack_padded_sequence(
            leaf, torch.tensor(case["lengths"]), enforce_sorted=case["form"] == "packed-sorted"
        )
    hx_leaves = None
    if hx is not None:
        hx_leaves = tuple(state.detach().clone().requires_grad_(case["hx_grad"]) for state in hx)
    output, (h_n, c_n) = module(input, hx_leaves)
    if isinstance(output, PackedSequence):
        output = output.data
    results = [output, h_n, c_n]
    flags = [tensor.requires_grad for tensor in results]
    wrt = [leaf] * case["input_grad"] + list(hx_leaves or ()) * case["hx_grad"]
    wrt += [p for p in module.parameters() if p.requires_grad]
    return results + gradients(results, wrt, case["seed"]), flags


@fuzz_settings(8000)
@given(case=module_cases())
def test_module_matches_nn_lstm(case):
    torch.manual_seed(case["seed"])
    reference = torch.nn.LSTM(
        case["input_size"], case["hidden_size"], dtype=case["dtype"], **case["config"]
    )
    candidate = lstm_ext.LSTM.from_torch(reference)
    for module in (reference, candidate):
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(not any(name.startswith(f) for f in case["frozen"]))
    data, hx = module_inputs(case, reference)
    expected, expected_flags = run_module(reference, case, data, hx)
    actual, actual_flags = run_module(candidate, case, data, hx)
    assert actual_flags == expected_flags
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert_close(got, want, case["dtype"], f"result {index}")


@st.composite
def functional_cases(draw):
    hidden_size = draw(st.integers(1, 5))
    return dict(
        batch=draw(st.integers(0, 3)),
        steps=draw(st.integers(0, 4)),
        input_size=draw(st.integers(1, 4)),
        hidden_size=hidden_size,
        proj_size=draw(st.integers(0, hidden_size - 1)),
        bias=draw(st.booleans()),
        with_states=draw(st.booleans()),
        dtype=draw(DTYPES),
        requires_grad=draw(st.lists(st.booleans(), min_size=8, max_size=8)),
        non_contiguous=draw(st.lists(st.booleans(), min_size=8, max_size=8)),
        seed=draw(st.integers(0, 2**16)),
    )


def functional_arguments(case):
    """lstm_ext.forward's tensors (input, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr), None where
    absent, some of them non-contiguous views."""
    generator = torch.Generator().manual_seed(case["seed"])
    batch, hidden, proj = case["batch"], case["hidden_size"], case["proj_size"]
    recurrent = proj or hidden
    shapes = [
        (batch, case["steps"], case["input_size"]),
        (batch, recurrent),
        (batch, hidden),
        (4 * hidden, case["input_size"]),
        (4 * hidden, recurrent),
        (4 * hidden,),
        (4 * hidden,),
        (proj, hidden),
    ]
    present = [
        True,
        case["with_states"],
        case["with_states"],
        True,
        True,
        case["bias"],
        case["bias"],
        proj > 0,
    ]
    return [
        strided(torch.randn(shape, generator=generator, dtype=case["dtype"]) * 0.5, view)
        if exists
        else None
        for shape, exists, view in zip(shapes, present, case["non_contiguous"])
    ]


def run_functional(function, case, arguments):
    leaves = [
        None if t is None else t.detach().clone().requires_grad_(grad)
        for t, grad in zip(arguments, case["requires_grad"])
    ]
    input, h0, c0, *weights = leaves
    output, (h_n, c_n) = function(input, (h0, c0) if h0 is not None else None, *weights)
    results = [output, h_n, c_n]
    flags = [tensor.requires_grad for tensor in results]
    results += gradients(
        results, [t for t in leaves if t is not None and t.requires_grad], case["seed"]
    )
    return results, flags


@fuzz_settings(4000)
@given(case=functional_cases())
def test_functional_matches_the_reference(case):
    arguments = functional_arguments(case)
    expected, expected_flags = run_functional(lstm_ext.reference.lstm_forward, case, arguments)
    actual, actual_flags = run_functional(lstm_ext.forward, case, arguments)
    assert actual_flags == expected_flags
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert_close(got, want, case["dtype"], f"result {index}")
