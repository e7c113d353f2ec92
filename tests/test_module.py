"""lstm_ext.LSTM against torch.nn.LSTM with the same weights: outputs, final states and the
gradients of every parameter, of the input and of the initial states, in every configuration and
input form; state dicts, initialisation, dropout and error messages."""

import copy
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext

INPUT_SIZE, HIDDEN_SIZE, PROJ_SIZE = 4, 5, 3
STEPS, BATCH = 5, 3
DTYPE = torch.float64


def make_pair(seed=0, **config):
    """An nn.LSTM (float64, seeded) and lstm_ext.LSTM.from_torch of it."""
    torch.manual_seed(seed)
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=DTYPE, **config)
    return reference, lstm_ext.LSTM.from_torch(reference)


def initial_state(module, batch, unbatched=False):
    """A random (h0, c0) of the right shape for `module`, requiring grad."""
    num_states = module.num_layers * (2 if module.bidirectional else 1)
    recurrent_size = module.proj_size or module.hidden_size
    batch_shape = () if unbatched else (batch,)
    h0 = torch.randn((num_states, *batch_shape, recurrent_size), dtype=DTYPE, requires_grad=True)
    c0 = torch.randn(
        (num_states, *batch_shape, module.hidden_size), dtype=DTYPE, requires_grad=True
    )
    return h0, c0


def compare_modules(reference, candidate, make_leaf, to_module_input, hx_template=None):
    """Runs both modules on the same input and initial state and checks the outputs, the final
    states and the gradients of the parameters, the input and hx."""
    results = []
    for module in (reference, candidate):
        leaf = make_leaf().requires_grad_()
        hx = None
        if hx_template is not None:
            hx = tuple(state.detach().clone().requires_grad_() for state in hx_template)
        output, (h_n, c_n) = module(to_module_input(leaf), hx)
        results.append((leaf, hx, output, h_n, c_n))
        torch.manual_seed(1234)  # the same output weighting for both
        output_data = output.data if isinstance(output, PackedSequence) else output
        loss = sum((tensor * torch.randn_like(tensor)).sum() for tensor in (output_data, h_n, c_n))
        loss.backward()

    (ref_leaf, ref_hx, ref_output, ref_h_n, ref_c_n) = results[0]
    (leaf, hx, output, h_n, c_n) = results[1]
    assert type(output) is type(ref_output)
    if isinstance(ref_output, PackedSequence):
        torch.testing.assert_close(output.batch_sizes, ref_output.batch_sizes)
        for name in ("sorted_indices", "unsorted_indices"):
            ref_indices, indices = getattr(ref_output, name), getattr(output, name)
            assert (indices is None) == (ref_indices is None)
            if ref_indices is not None:
                torch.testing.assert_close(indices, ref_indices)
        output, ref_output = output.data, ref_output.data
    torch.testing.assert_close(output, ref_output)
    torch.testing.assert_close(h_n, ref_h_n)
    torch.testing.assert_close(c_n, ref_c_n)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad)
    if hx is not None:
        torch.testing.assert_close(hx[0].grad, ref_hx[0].grad)
        torch.testing.assert_close(hx[1].grad, ref_hx[1].grad)
    reference_parameters = dict(reference.named_parameters())
    for name, parameter in candidate.named_parameters():
        torch.testing.assert_close(parameter.grad, reference_parameters[name].grad, msg=name)


def identity(tensor):
    return tensor


CONFIGS = [
    dict(num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size, bias=bias)
    for num_layers, bidirectional, proj_size, bias in itertools.product(
        (1, 2, 3), (False, True), (0, PROJ_SIZE), (True, False)
    )
]


def config_id(config):
    return "-".join(f"{key}={value}" for key, value in config.items())


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("batch_first", (False, True))
@pytest.mark.parametrize("with_hx", (False, True))
def test_padded_matches_nn_lstm(config, batch_first, with_hx):
    reference, candidate = make_pair(batch_first=batch_first, **config)
    shape = (BATCH, STEPS, INPUT_SIZE) if batch_first else (STEPS, BATCH, INPUT_SIZE)
    data = torch.randn(shape, dtype=DTYPE)
    hx = initial_state(reference, BATCH) if with_hx else None
    compare_modules(reference, candidate, data.clone, identity, hx)


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("with_hx", (False, True))
def test_unbatched_matches_nn_lstm(config, with_hx):
    reference, candidate = make_pair(**config)
    data = torch.randn((STEPS, INPUT_SIZE), dtype=DTYPE)
    hx = initial_state(reference, BATCH, unbatched=True) if with_hx else None
    compare_modules(reference, candidate, data.clone, identity, hx)


# Unsorted lengths with repeats and length-1 sequences; batch_first padded storage.
PACKED_LENGTHS = [3, 1, 6, 1, 6, 2]


@pytest.mark.parametrize("config", CONFIGS, ids=config_id)
@pytest.mark.parametrize("with_hx", (False, True))
@pytest.mark.parametrize("enforce_sorted", (False, True))
def test_packed_matches_nn_lstm(config, with_hx, enforce_sorted):
    reference, candidate = make_pair(**config)
    lengths = torch.tensor(
        sorted(PACKED_LENGTHS, reverse=True) if enforce_sorted else PACKED_LENGTHS
    )
    batch = len(lengths)
    data = torch.randn((int(lengths.max()), batch, INPUT_SIZE), dtype=DTYPE)
    hx = initial_state(reference, batch) if with_hx else None

    def pack(padded):
        return pack_padded_sequence(padded, lengths, enforce_sorted=enforce_sorted)

    compare_modules(reference, candidate, data.clone, pack, hx)


@settings(max_examples=25, deadline=None)
@given(
    num_layers=st.integers(1, 3),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    proj=st.booleans(),
    with_hx=st.booleans(),
    train=st.booleans(),
    lengths=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    hidden_size=st.integers(2, 6),
    input_size=st.integers(1, 5),
)
def test_random_packed_configurations_match_nn_lstm(
    num_layers, bidirectional, bias, proj, with_hx, train, lengths, hidden_size, input_size
):
    torch.manual_seed(len(lengths))
    reference = nn.LSTM(
        input_size,
        hidden_size,
        num_layers=num_layers,
        bias=bias,
        bidirectional=bidirectional,
        proj_size=hidden_size - 1 if proj else 0,
        dtype=DTYPE,
        batch_first=True,
    )
    reference.train(train)  # dropout=0: train and eval must agree
    candidate = lstm_ext.LSTM.from_torch(reference)
    lengths = torch.tensor(lengths)
    data = torch.randn((len(lengths), int(lengths.max()), input_size), dtype=DTYPE)
    hx = initial_state(reference, len(lengths)) if with_hx else None

    def pack(padded):
        return pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)

    compare_modules(reference, candidate, data.clone, pack, hx)


def test_calls_in_turn_with_other_sizes_dtypes_and_modes_match_nn_lstm():
    # Eager calls without hx reuse the zero states and batch sizes of the call before when they
    # fit: a change of batch, steps, dtype or inference mode must give fresh ones (a tensor made
    # under inference mode cannot be saved for a later backward).
    reference, candidate = make_pair(num_layers=2, proj_size=PROJ_SIZE)
    calls = [
        (BATCH, STEPS, "train"),
        (BATCH, STEPS + 3, "train"),
        (BATCH + 2, STEPS, "train"),
        (BATCH, STEPS, "inference"),
        (BATCH, STEPS, "train"),
        (BATCH, STEPS, "float32"),
        (BATCH, STEPS, "train"),
    ]
    for batch, steps, mode in calls:
        data = torch.randn((steps, batch, INPUT_SIZE), dtype=DTYPE)
        if mode == "inference":
            with torch.inference_mode():
                expected, (expected_h, expected_c) = reference(data)
                output, (h_n, c_n) = candidate(data)
        elif mode == "float32":
            for module in (reference, candidate):
                module.float()
            expected, (expected_h, expected_c) = reference(data.float())
            output, (h_n, c_n) = candidate(data.float())
            for module in (reference, candidate):
                module.double()
        else:
            compare_modules(reference, candidate, data.clone, identity)
            continue
        torch.testing.assert_close(output, expected)
        torch.testing.assert_close(h_n, expected_h)
        torch.testing.assert_close(c_n, expected_c)


@pytest.mark.parametrize("with_hx", (False, True))
def test_single_batch_first_sequence_matches_nn_lstm(with_hx):
    # One sequence, batched (1, T, I) or not (T, I), skips the batch-first transpose.
    reference, candidate = make_pair(num_layers=2, proj_size=PROJ_SIZE, batch_first=True)
    data = torch.randn((1, STEPS, INPUT_SIZE), dtype=DTYPE)
    hx = initial_state(reference, 1) if with_hx else None
    compare_modules(reference, candidate, data.clone, identity, hx)
    unbatched_hx = initial_state(reference, 1, unbatched=True) if with_hx else None
    compare_modules(reference, candidate, data[0].clone, identity, unbatched_hx)


def test_empty_batch_matches_nn_lstm():
    reference, candidate = make_pair(num_layers=2, bidirectional=True)
    data = torch.randn((STEPS, 0, INPUT_SIZE), dtype=DTYPE)
    expected, (expected_h, expected_c) = reference(data)
    output, (h_n, c_n) = candidate(data)
    assert output.shape == expected.shape
    assert h_n.shape == expected_h.shape and c_n.shape == expected_c.shape


def test_float32_matches_nn_lstm():
    torch.manual_seed(0)
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    candidate = lstm_ext.LSTM.from_torch(reference)
    data = torch.randn((STEPS, BATCH, INPUT_SIZE))
    expected, (expected_h, expected_c) = reference(data)
    output, (h_n, c_n) = candidate(data)
    assert output.dtype == torch.float32
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(h_n, expected_h)
    torch.testing.assert_close(c_n, expected_c)


@pytest.mark.parametrize(
    "config",
    [
        dict(),
        dict(
            num_layers=3,
            bidirectional=True,
            proj_size=2,
            bias=False,
            batch_first=True,
            dropout=0.25,
        ),
    ],
    ids=config_id,
)
def test_parameters_and_initialisation_are_those_of_nn_lstm(config):
    torch.manual_seed(7)
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, **config)
    torch.manual_seed(7)
    candidate = lstm_ext.LSTM(INPUT_SIZE, HIDDEN_SIZE, **config)
    assert not isinstance(candidate, nn.RNNBase)
    reference_parameters = dict(reference.named_parameters())
    candidate_parameters = dict(candidate.named_parameters())
    assert list(candidate_parameters) == list(reference_parameters)
    for name, parameter in candidate_parameters.items():
        # The same seed draws the same uniform(-1/sqrt(H), 1/sqrt(H)) values in the same order.
        torch.testing.assert_close(parameter, reference_parameters[name], rtol=0, atol=0)
        assert parameter.abs().max() <= HIDDEN_SIZE**-0.5
    assert repr(candidate) == repr(reference)
    assert [[p.shape for p in ps] for ps in candidate.all_weights] == [
        [p.shape for p in ps] for ps in reference.all_weights
    ]


def test_state_dict_round_trips_both_ways():
    config = dict(num_layers=2, bidirectional=True, proj_size=2)
    torch.manual_seed(0)
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=DTYPE, **config)
    candidate = lstm_ext.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=DTYPE, **config)
    candidate.load_state_dict(reference.state_dict())  # strict: same names and shapes
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    torch.testing.assert_close(candidate(data)[0], reference(data)[0])

    with torch.no_grad():
        for parameter in candidate.parameters():
            parameter.mul_(-0.5)
    back = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, dtype=DTYPE, **config)
    back.load_state_dict(candidate.state_dict())
    torch.testing.assert_close(back(data)[0], candidate(data)[0])
    assert not torch.allclose(back(data)[0], reference(data)[0])


def test_from_torch_copies_configuration_weights_and_mode():
    torch.manual_seed(0)
    reference = nn.LSTM(
        INPUT_SIZE,
        HIDDEN_SIZE,
        num_layers=2,
        bias=False,
        batch_first=True,
        dropout=0.5,
        bidirectional=True,
        proj_size=2,
        dtype=DTYPE,
    ).eval()
    candidate = lstm_ext.LSTM.from_torch(reference)
    for name in (
        "input_size",
        "hidden_size",
        "num_layers",
        "bias",
        "batch_first",
        "dropout",
        "bidirectional",
        "proj_size",
        "training",
    ):
        assert getattr(candidate, name) == getattr(reference, name), name
    for (name, parameter), reference_parameter in zip(
        candidate.named_parameters(), reference.parameters()
    ):
        assert parameter.dtype == DTYPE
        assert parameter is not reference_parameter
        torch.testing.assert_close(parameter, reference_parameter, rtol=0, atol=0, msg=name)


def dropout_pair():
    return make_pair(num_layers=3, bidirectional=True, proj_size=2, dropout=0.5)


def test_dropout_in_eval_mode_matches_nn_lstm():
    reference, candidate = dropout_pair()
    reference.eval()
    candidate.eval()
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    compare_modules(reference, candidate, data.clone, identity)


@pytest.mark.parametrize("packed", (False, True))
def test_dropout_in_training_mode_is_reproducible_and_differs_from_eval(packed):
    _, candidate = dropout_pair()
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    if packed:
        data = pack_padded_sequence(data, torch.tensor([2, 5, 1]), enforce_sorted=False)

    def output_with_seed(seed):
        torch.manual_seed(seed)
        output = candidate(data)[0]
        return output.data if packed else output

    first, again, other_seed = output_with_seed(3), output_with_seed(3), output_with_seed(4)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, other_seed)
    candidate.eval()
    assert not torch.allclose(first, output_with_seed(3))


@pytest.mark.parametrize("packed", (False, True))
def test_dropout_in_training_mode_matches_nn_lstm_on_cpu(packed):
    # On the CPU nn.LSTM draws its mask with the same torch dropout on the same layer outputs,
    # so the same seed gives the same mask (cuDNN draws differently; not compared there).
    reference, candidate = dropout_pair()
    lengths = torch.tensor([2, 5, 1])
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)

    def to_input(leaf):
        return pack_padded_sequence(leaf, lengths, enforce_sorted=False) if packed else leaf

    torch.manual_seed(5)
    expected = reference(to_input(data))[0]
    torch.manual_seed(5)
    output = candidate(to_input(data))[0]
    if packed:
        expected, output = expected.data, output.data
    torch.testing.assert_close(output, expected)


def test_flatten_parameters_is_accepted():
    _, candidate = make_pair()
    candidate.flatten_parameters()


# (input, hx) cases that nn.LSTM rejects; lstm_ext.LSTM must raise the same type and message.
def bad_calls():
    batched = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    unbatched = torch.randn((STEPS, INPUT_SIZE), dtype=DTYPE)

    def states(h_shape, c_shape, devices=("cpu", "cpu")):
        return tuple(
            torch.zeros(shape, dtype=DTYPE, device=device)
            for shape, device in zip((h_shape, c_shape), devices)
        )

    return {
        "wrong h size": (batched, states((2, BATCH, 4), (2, BATCH, HIDDEN_SIZE))),
        "wrong c size": (batched, states((2, BATCH, HIDDEN_SIZE), (2, BATCH, 4))),
        "wrong h batch": (batched, states((2, BATCH + 1, HIDDEN_SIZE), (2, BATCH, HIDDEN_SIZE))),
        "wrong state count": (batched, states((1, BATCH, HIDDEN_SIZE), (2, BATCH, HIDDEN_SIZE))),
        "2-D hx for batched input": (batched, states((2, HIDDEN_SIZE), (2, HIDDEN_SIZE))),
        "3-D hx for unbatched input": (unbatched, states((2, 1, HIDDEN_SIZE), (2, 1, HIDDEN_SIZE))),
        "wrong unbatched h size": (unbatched, states((2, 4), (2, HIDDEN_SIZE))),
        "hx a tensor": (batched, torch.zeros((2, BATCH, HIDDEN_SIZE), dtype=DTYPE)),
        "three states": (
            batched,
            states((2, BATCH, HIDDEN_SIZE), (2, BATCH, HIDDEN_SIZE)) + (torch.zeros(1),),
        ),
        "4-D input": (torch.randn((1, STEPS, BATCH, INPUT_SIZE), dtype=DTYPE), None),
        "1-D input": (torch.randn(INPUT_SIZE, dtype=DTYPE), None),
        "wrong input size": (torch.randn((STEPS, BATCH, INPUT_SIZE + 1), dtype=DTYPE), None),
        "wrong dtype": (torch.randn((STEPS, BATCH, INPUT_SIZE)), None),
        "no steps": (torch.randn((0, BATCH, INPUT_SIZE), dtype=DTYPE), None),
        "h on meta": (
            batched,
            states((2, BATCH, HIDDEN_SIZE), (2, BATCH, HIDDEN_SIZE), ("meta", "cpu")),
        ),
        "c on meta": (
            batched,
            states((2, BATCH, HIDDEN_SIZE), (2, BATCH, HIDDEN_SIZE), ("cpu", "meta")),
        ),
        "unbatched hx on meta": (
            unbatched,
            states((2, HIDDEN_SIZE), (2, HIDDEN_SIZE), ("meta", "meta")),
        ),
        "input on meta": (batched.to("meta"), None),
    }


@pytest.mark.parametrize("case", list(bad_calls()))
def test_errors_match_nn_lstm(case):
    reference, candidate = make_pair(num_layers=2)
    input, hx = bad_calls()[case]
    with pytest.raises(Exception) as expected:
        reference(input, hx)
    with pytest.raises(expected.type) as raised:
        candidate(input, hx)
    assert str(raised.value) == str(expected.value)


def test_wrong_hx_for_packed_input_names_the_expected_size():
    # nn.LSTM's packed path leaves this to ATen ("got an incorrect number of RNN parameters");
    # lstm_ext.LSTM applies the padded path's check to packed input too.
    _, candidate = make_pair(num_layers=2)
    packed = pack_padded_sequence(
        torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE),
        torch.tensor([2, 5, 1]),
        enforce_sorted=False,
    )
    h0 = torch.zeros((2, BATCH, 4), dtype=DTYPE)
    c0 = torch.zeros((2, BATCH, HIDDEN_SIZE), dtype=DTYPE)
    with pytest.raises(
        RuntimeError, match=r"Expected hidden\[0\] size \(2, 3, 5\), got \[2, 3, 4\]"
    ):
        candidate(packed, (h0, c0))
    with pytest.raises(
        RuntimeError, match=r"Expected hidden\[1\] size \(2, 3, 5\), got \[2, 3, 4\]"
    ):
        candidate(packed, (c0, h0))


@pytest.mark.parametrize(
    "arguments",
    [
        dict(dropout=1.5),
        dict(dropout=True),
        dict(bias=1),
        dict(batch_first=None),
        dict(hidden_size=0),
        dict(num_layers=0),
        dict(proj_size=-1),
        dict(proj_size=HIDDEN_SIZE),
        dict(input_size=2.0),
    ],
    ids=config_id,
)
def test_constructor_errors_match_nn_lstm(arguments):
    arguments = {"input_size": INPUT_SIZE, "hidden_size": HIDDEN_SIZE, **arguments}
    with pytest.raises(Exception) as expected:
        nn.LSTM(**arguments)
    with pytest.raises(expected.type) as raised:
        lstm_ext.LSTM(**arguments)
    assert str(raised.value) == str(expected.value)


def test_autocast_runs_in_the_autocast_dtype_like_nn_lstm():
    """Under CPU autocast nn.LSTM runs in bfloat16 (autocast's lower-precision ops include lstm),
    and so does lstm_ext. The values are held to nn.LSTM in float32 on the bfloat16-rounded input
    and weights, not to nn.LSTM under autocast: its oneDNN bfloat16 kernel needs AVX-512 and
    raises on processors without it."""
    torch.manual_seed(0)
    reference = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, bidirectional=True)
    candidate = lstm_ext.LSTM.from_torch(reference)
    data = torch.randn((STEPS, BATCH, INPUT_SIZE))
    rounded = copy.deepcopy(reference).to(torch.bfloat16).float()
    with torch.no_grad():
        expected, (expected_h, expected_c) = rounded(data.bfloat16().float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output, (h_n, c_n) = candidate(data)
    for tensor, expected_tensor in ((output, expected), (h_n, expected_h), (c_n, expected_c)):
        assert tensor.dtype == torch.bfloat16
        torch.testing.assert_close(tensor.float(), expected_tensor, rtol=2e-2, atol=2e-2)
    output.float().sum().backward()
    assert candidate.weight_ih_l0.grad.dtype == torch.float32


def test_functional_call_uses_the_given_parameters():
    reference, candidate = make_pair(num_layers=2, proj_size=2)
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.mul_(2.0)
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    output, _ = torch.func.functional_call(candidate, dict(reference.named_parameters()), (data,))
    torch.testing.assert_close(output, reference(data)[0])


@pytest.mark.parametrize(
    "input_grad,weights_grad", [(False, True), (True, False)], ids=["data-input", "frozen-weights"]
)
def test_gradients_only_of_what_requires_grad(input_grad, weights_grad):
    # The backward skips the input's or the weights' GEMMs when nothing asks for them; the
    # gradients that are asked for stay nn.LSTM's.
    torch.manual_seed(0)
    reference = torch.nn.LSTM(5, 7, num_layers=2, proj_size=3, bidirectional=True)
    candidate = lstm_ext.LSTM.from_torch(reference)
    for module in (reference, candidate):
        module.requires_grad_(weights_grad)
    x = torch.randn(6, 4, 5, requires_grad=input_grad)
    h0 = torch.randn(4, 4, 3, requires_grad=True)
    leaves = [h0] + ([x] if input_grad else [])
    grads = []
    for module in (reference, candidate):
        output, (h_n, c_n) = module(x, (h0, torch.zeros(4, 4, 7)))
        loss = (output * torch.linspace(-1, 1, output.numel()).view_as(output)).sum() + c_n.sum()
        weights = list(module.parameters()) if weights_grad else []
        grads.append(torch.autograd.grad(loss, leaves + weights))
    expected, actual = grads
    assert len(actual) == len(expected) == len(leaves) + (20 if weights_grad else 0)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_bias_gradients_are_separate_tensors_that_accumulate():
    # The backward hands both biases one gradient tensor; each parameter's .grad must still be
    # its own tensor, so that accumulating into one leaves the other alone.
    torch.manual_seed(0)
    module = lstm_ext.LSTM(4, 5, batch_first=True)
    x = torch.randn(2, 3, 4)
    module(x)[0].sum().backward()
    first = module.bias_ih_l0.grad.clone()
    assert module.bias_ih_l0.grad.data_ptr() != module.bias_hh_l0.grad.data_ptr()
    module(x)[0].sum().backward()
    torch.testing.assert_close(module.bias_ih_l0.grad, 2 * first)
    torch.testing.assert_close(module.bias_hh_l0.grad, 2 * first)


@pytest.mark.parametrize("used", [("output",), ("h_n",), ("c_n",), ("h_n", "c_n")], ids="+".join)
def test_gradients_when_the_loss_leaves_outputs_unused(used):
    # An output the loss does not use gets no gradient tensor in the backward (autograd does not
    # make zeros for it): the layers' backward must take the missing ones as zeros.
    reference, candidate = make_pair(num_layers=2, bidirectional=True, proj_size=PROJ_SIZE)
    data = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    grads = []
    for module in (reference, candidate):
        leaf = data.clone().requires_grad_()
        output, (h_n, c_n) = module(leaf)
        outputs = {"output": output, "h_n": h_n, "c_n": c_n}
        torch.manual_seed(1234)
        loss = sum((outputs[name] * torch.randn_like(outputs[name])).sum() for name in used)
        grads.append(torch.autograd.grad(loss, [leaf, *module.parameters()]))
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("packed", [False, True])
def test_hx_as_one_tensor_is_refused_with_a_type_error(packed):
    # Its first dimension indexes as (h_0, c_0), but nn.LSTM refuses it (a TypeError from ATen).
    reference, candidate = make_pair(num_layers=2)
    input = torch.randn((STEPS, BATCH, INPUT_SIZE), dtype=DTYPE)
    if packed:
        input = pack_padded_sequence(input, torch.tensor([5, 4, 2]))
    hx = torch.zeros((2, 2, BATCH, HIDDEN_SIZE), dtype=DTYPE)
    with pytest.raises(TypeError):
        reference(input, hx)
    with pytest.raises(TypeError, match=r"LSTM: hx must be a tuple \(h_0, c_0\), got Tensor"):
        candidate(input, hx)


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("trainable", ["weight_hr", "bias_hh", "weight_ih"])
def test_outputs_require_grad_where_those_of_nn_lstm_do(steps, trainable):
    # With only W_hr trainable, c_n of a single step depends on no trainable parameter.
    reference, candidate = make_pair(proj_size=PROJ_SIZE, bidirectional=True)
    flags = []
    for module in (reference, candidate):
        for name, parameter in module.named_parameters():
            parameter.requires_grad_(name.startswith(trainable))
        output, (h_n, c_n) = module(torch.randn((steps, BATCH, INPUT_SIZE), dtype=DTYPE))
        flags.append((output.requires_grad, h_n.requires_grad, c_n.requires_grad))
    assert flags[1] == flags[0]
    assert flags[0][2] == (steps > 1 or trainable != "weight_hr")
