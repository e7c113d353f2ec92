"""torch.func transforms of lstm_ext.LSTM against nn.LSTM's results: grad, vjp, jacrev, vmap over
sequences, over an ensemble's parameters and over per-sample gradients; and the private torch
APIs the autograd routing relies on, so that a torch upgrade that changes them fails here."""

import torch
from torch.func import functional_call, grad, jacrev, vjp, vmap

import lstm_ext

DTYPE = torch.float64
CONFIG = dict(num_layers=2, bidirectional=True, proj_size=2)


def make_pair(seed=0):
    torch.manual_seed(seed)
    reference = torch.nn.LSTM(3, 4, dtype=DTYPE, **CONFIG)
    return reference, lstm_ext.LSTM.from_torch(reference)


def loss_of(module, parameters, input):
    output, (h_n, c_n) = functional_call(module, parameters, (input,))
    return output.square().sum() + h_n.sum() + c_n.square().sum()


def parameters_of(module):
    return {name: p.detach() for name, p in module.named_parameters()}


def test_grad_matches_nn_lstm():
    reference, candidate = make_pair()
    input = torch.randn(5, 2, 3, dtype=DTYPE)
    expected = grad(loss_of, argnums=(1, 2))(reference, parameters_of(reference), input)
    actual = grad(loss_of, argnums=(1, 2))(candidate, parameters_of(candidate), input)
    torch.testing.assert_close(actual, expected)


def test_vjp_matches_nn_lstm():
    reference, candidate = make_pair()
    input = torch.randn(5, 2, 3, dtype=DTYPE)
    cotangent = torch.randn(5, 2, 4, dtype=DTYPE)
    results = []
    for module in (reference, candidate):
        output, pullback = vjp(lambda x, module=module: module(x)[0], input)
        results.append((output, *pullback(cotangent)))
    torch.testing.assert_close(results[1], results[0])


def test_vjp_differentiated_by_autograd_matches_nn_lstm():
    # The pullback runs after vjp's level has finished; its result must still carry the graph
    # to the parameters, which require grad outside the transform.
    reference, candidate = make_pair()
    input = torch.randn(5, 2, 3, dtype=DTYPE)
    results = []
    for module in (reference, candidate):
        output, pullback = vjp(lambda x, module=module: module(x)[0], input)
        (grad_input,) = pullback(output.detach().cos())
        results.append(torch.autograd.grad(grad_input.square().sum(), list(module.parameters())))
    torch.testing.assert_close(results[1], results[0])


def test_jacrev_matches_nn_lstm():
    reference, candidate = make_pair()
    input = torch.randn(4, 3, dtype=DTYPE)  # unbatched
    expected = jacrev(lambda x: reference(x)[0])(input)
    actual = jacrev(lambda x: candidate(x)[0])(input)
    assert actual.shape == (4, 4, 4, 3)
    torch.testing.assert_close(actual, expected)


def test_vmap_over_sequences_matches_a_loop_of_nn_lstm():
    # nn.LSTM has no batching rule; lstm_ext's runs one call per sample.
    reference, candidate = make_pair()
    inputs = torch.randn(3, 5, 3, dtype=DTYPE)  # 3 unbatched sequences of 5 steps
    output, (h_n, c_n) = vmap(candidate)(inputs)
    for index, sequence in enumerate(inputs):
        expected_output, (expected_h_n, expected_c_n) = reference(sequence)
        torch.testing.assert_close(output[index], expected_output)
        torch.testing.assert_close(h_n[index], expected_h_n)
        torch.testing.assert_close(c_n[index], expected_c_n)


def test_vmap_over_an_ensembles_parameters_matches_nn_lstm():
    members = [make_pair(seed) for seed in range(3)]
    input = torch.randn(5, 2, 3, dtype=DTYPE)
    stacked = {
        name: torch.stack([parameters_of(candidate)[name] for _, candidate in members])
        for name in parameters_of(members[0][1])
    }
    outputs = vmap(lambda p: functional_call(members[0][1], p, (input,))[0])(stacked)
    for index, (reference, _) in enumerate(members):
        torch.testing.assert_close(outputs[index], reference(input)[0])


def test_per_sample_gradients_match_nn_lstm():
    # nn.LSTM fails under vmap(grad) on unbatched sequences: its gradients one sample at a time.
    reference, candidate = make_pair()
    inputs = torch.randn(3, 5, 3, dtype=DTYPE)  # 3 unbatched sequences
    actual = vmap(grad(loss_of, argnums=1), in_dims=(None, None, 0))(
        candidate, parameters_of(candidate), inputs
    )
    samples = [
        grad(loss_of, argnums=1)(reference, parameters_of(reference), sequence)
        for sequence in inputs
    ]
    expected = {name: torch.stack([sample[name] for sample in samples]) for name in actual}
    torch.testing.assert_close(actual, expected)


def test_functorch_transforms_are_detected():
    # lstm_ext._reuse makes its tensors afresh under a transform on this signal.
    assert not torch._C._are_functorch_transforms_active()
    seen = []

    def record(x):
        seen.append(torch._C._are_functorch_transforms_active())
        return x.sum()

    grad(record)(torch.ones(2))
    vmap(record)(torch.ones(2, 2))
    assert seen == [True, True]


def test_dispatch_below_autograd_skips_the_autograd_kernel():
    # The eager route calls the operator below the autograd key: no graph may be recorded there,
    # and above it the operator's registration records one.
    from test_operators import packed_args

    args = packed_args("cpu", dtype=torch.float32) + (True,)
    with torch._C._AutoDispatchBelowAutograd():
        output = torch.ops.lstm_ext.lstm_layer_forward(*args)[0]
    assert output.grad_fn is None and not output.requires_grad
    assert torch.ops.lstm_ext.lstm_layer_forward(*args)[0].grad_fn is not None
