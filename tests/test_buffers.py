"""The layer operators' CPU buffers, whose memory a cache reuses (csrc/lstm_buffers.cpp): a
call's saved activations stay intact while other calls take and give back memory, gradients stay
nn.LSTM's with several graphs alive at once, and the tensors resize like at::empty's."""

import pytest
import torch

import lstm_ext

# Large enough for the reused memory (4 MB and more): gates of N x 4H = 1024 x 1024 floats.
STEPS, BATCH, INPUT_SIZE, HIDDEN_SIZE = 8, 128, 16, 256


def layer_arguments(seed, proj_size):
    """Float32 arguments of lstm_layer_forward (time-major rows), without requires_grad."""
    generator = torch.Generator().manual_seed(seed)
    recurrent_size = proj_size or HIDDEN_SIZE

    def randn(*shape):
        return torch.randn(*shape, generator=generator) * 0.3

    return (
        randn(STEPS * BATCH, INPUT_SIZE),
        torch.full((STEPS,), BATCH, dtype=torch.int64),
        randn(BATCH, recurrent_size),
        randn(BATCH, HIDDEN_SIZE),
        randn(4 * HIDDEN_SIZE, INPUT_SIZE),
        randn(4 * HIDDEN_SIZE, recurrent_size),
        randn(4 * HIDDEN_SIZE),
        randn(4 * HIDDEN_SIZE),
        randn(proj_size, HIDDEN_SIZE) if proj_size else None,
    )


@pytest.mark.parametrize("proj_size", [0, 64])
def test_saved_activations_stay_intact_while_other_calls_run(proj_size):
    forward = torch.ops.lstm_ext.lstm_layer_forward
    first = forward(*layer_arguments(0, proj_size), False, True)
    assert first[3].numel() * first[3].element_size() >= 4 << 20
    expected = [tensor.clone() for tensor in first]
    kept = forward(*layer_arguments(1, proj_size), False, True)
    for seed in range(2, 5):  # each call's buffers go back to be taken by the next one
        forward(*layer_arguments(seed, proj_size), False, True)
    for tensor, expected_tensor in zip(first, expected):
        assert torch.equal(tensor, expected_tensor)
    assert kept[3].data_ptr() != first[3].data_ptr()


@pytest.mark.parametrize("proj_size", [0, 64])
def test_gradients_of_graphs_alive_at_once_match_nn_lstm(proj_size):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, proj_size=proj_size)
    candidate = lstm_ext.LSTM.from_torch(reference)
    inputs = [torch.randn(STEPS, BATCH, INPUT_SIZE) for _ in range(3)]
    grads = []
    for module in (reference, candidate):
        leaves = [data.clone().requires_grad_() for data in inputs]
        losses = [(module(leaf)[0] * (index + 1)).sum() for index, leaf in enumerate(leaves)]
        for loss in reversed(losses):  # the last graph's buffers are given back first
            loss.backward()
        grads.append([leaf.grad for leaf in leaves] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-4)


def test_outputs_and_saved_activations_are_ordinary_resizable_tensors():
    # Their memory may come from the cache, but they must behave as at::empty's: a caller can
    # resize them (which allocates anew) and keep using them.
    results = torch.ops.lstm_ext.lstm_layer_forward(*layer_arguments(0, 0), False, True)
    for tensor in results[:5]:
        values = tensor.clone()
        tensor.resize_(tensor.numel() * 2)
        assert torch.equal(tensor[: values.numel()], values.view(-1))
