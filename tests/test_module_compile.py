"""torch.compile of a model that uses lstm_ext.LSTM: it traces without graph breaks (fullgraph
raises on one; in the default mode Dynamo's counters must show none) and matches eager mode in
the loss and every gradient."""

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext

DTYPE = torch.float64


class Tagger(nn.Module):
    """A small sequence model: lstm_ext.LSTM followed by a linear head, reduced to a loss."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(
            4, 6, num_layers=2, bidirectional=True, proj_size=3, batch_first=True, dtype=DTYPE
        )
        self.head = nn.Linear(6, 2, dtype=DTYPE)

    def forward(self, input, hx=None):
        output, (h_n, c_n) = self.lstm(input, hx)
        if isinstance(output, PackedSequence):
            output = output.data
        return self.head(output).square().sum() + h_n.sum() + c_n.square().sum()


def loss_and_gradients(model, run, make_input, hx):
    """The loss of `run` (model itself or its compiled form) and the gradients of model's
    parameters."""
    model.zero_grad()
    loss = run(make_input(), hx)
    loss.backward()
    return loss, {name: p.grad.clone() for name, p in model.named_parameters()}


def check_compiled_matches_eager(backend, make_input, hx=None, fullgraph=True, **compile_options):
    """The compiled model's loss and gradients are eager mode's; without fullgraph (which raises
    on a graph break) Dynamo must have traced it without one as well."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = Tagger()
    compiled = torch.compile(model, fullgraph=fullgraph, backend=backend, **compile_options)
    expected_loss, expected_gradients = loss_and_gradients(model, model, make_input, hx)
    loss, gradients = loss_and_gradients(model, compiled, make_input, hx)
    assert not counters["graph_break"], dict(counters["graph_break"])
    torch.testing.assert_close(loss, expected_loss)
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, expected_gradients[name], msg=name)


def test_padded_input_compiles_with_inductor():
    torch.manual_seed(1)
    data = torch.randn((3, 5, 4), dtype=DTYPE)
    hx = (torch.randn((4, 3, 3), dtype=DTYPE), torch.randn((4, 3, 6), dtype=DTYPE))
    check_compiled_matches_eager("inductor", data.clone, hx)


@pytest.mark.parametrize("steps", (5, 2))
def test_padded_input_compiles_with_dynamic_shapes(steps):
    torch.manual_seed(2)
    data = torch.randn((3, steps, 4), dtype=DTYPE)
    check_compiled_matches_eager("aot_eager", data.clone, dynamic=True)


def test_unsorted_packed_input_compiles():
    torch.manual_seed(3)
    data = torch.randn((4, 6, 4), dtype=DTYPE)
    lengths = torch.tensor([2, 6, 1, 4])

    def make_input():
        return pack_padded_sequence(data, lengths, batch_first=True, enforce_sorted=False)

    check_compiled_matches_eager("aot_eager", make_input)


@pytest.mark.parametrize(
    "enforce_sorted, with_hx", [(False, False), (True, True)], ids=["unsorted", "sorted-with-hx"]
)
def test_packed_input_compiles_without_graph_breaks_in_the_default_mode(enforce_sorted, with_hx):
    # The batch size comes from a shape: the sorted indices', or hx's.
    torch.manual_seed(4)
    data = torch.randn((3, 5, 4), dtype=DTYPE)
    lengths = torch.tensor([5, 3, 2])
    hx = (
        (torch.randn((4, 3, 3), dtype=DTYPE), torch.randn((4, 3, 6), dtype=DTYPE))
        if with_hx
        else None
    )

    def make_input():
        return pack_padded_sequence(data, lengths, batch_first=True, enforce_sorted=enforce_sorted)

    check_compiled_matches_eager("aot_eager", make_input, hx, fullgraph=False)


def test_sorted_packed_input_without_hx_compiles_with_fullgraph():
    # Its batch size is only in batch_sizes' values, which fullgraph=True captures (the default
    # mode breaks the graph to read it; Dynamo's capture_scalar_outputs avoids that).
    torch.manual_seed(5)
    data = torch.randn((3, 5, 4), dtype=DTYPE)
    lengths = torch.tensor([5, 3, 2])
    check_compiled_matches_eager(
        "aot_eager", lambda: pack_padded_sequence(data, lengths, batch_first=True)
    )
