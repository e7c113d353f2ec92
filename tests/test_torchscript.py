"""TorchScript: torch.jit.trace records lstm_ext (module and functional) correctly for every
shape, whatever ran before it; torch.jit.script refuses with a message that names what works,
and that alternative, torch.export, does."""

import pytest
import torch

import lstm_ext

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")

# (batch, steps) of the calls a trace must serve, the single sequence included.
SHAPES = [(2, 5), (1, 3), (4, 7)]


def make_module():
    torch.manual_seed(0)
    return lstm_ext.LSTM(
        3, 5, num_layers=2, bidirectional=True, proj_size=2, batch_first=True, dtype=torch.float64
    )


def functional_layer(input, w_ih, w_hh, b_ih, b_hh):
    output, (h_n, c_n) = lstm_ext.forward(input, None, w_ih, w_hh, b_ih, b_hh)
    return output, h_n, c_n


def outputs_and_grads(function, input, parameters):
    """function(input, *parameters)'s outputs and the gradients of a loss of them."""
    leaf = input.clone().requires_grad_()
    outputs = function(leaf, *parameters)
    flat = [outputs[0], *outputs[1]] if isinstance(outputs[1], tuple) else list(outputs)
    loss = sum((tensor * tensor.detach().sin()).sum() for tensor in flat)
    return flat, torch.autograd.grad(loss, [leaf, *parameters])


@pytest.mark.parametrize("traced_shape", SHAPES[:2], ids=["batch2", "batch1"])
@pytest.mark.parametrize("api", ["module", "functional"])
@pytest.mark.parametrize("eager_call_first", [False, True])
def test_trace_matches_eager_for_every_shape(api, traced_shape, eager_call_first):
    module = make_module()
    if api == "module":
        function, parameters = module, ()
    else:
        function = functional_layer
        parameters = tuple(
            torch.randn(shape, dtype=torch.float64, requires_grad=True)
            for shape in ((20, 3), (20, 5), (20,), (20,))
        )
    example = torch.randn(*traced_shape, 3, dtype=torch.float64)
    if eager_call_first:  # fills the caches of reused tensors, which a trace must not record
        function(example, *parameters)
    traced = torch.jit.trace(function, (example, *parameters))  # checks the trace, by default
    for batch, steps in SHAPES:
        input = torch.randn(batch, steps, 3, dtype=torch.float64)
        expected = outputs_and_grads(function, input, parameters)
        actual = outputs_and_grads(traced, input, parameters)
        torch.testing.assert_close(actual, expected)


class Tagger(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(3, 4)

    def forward(self, input):
        return self.lstm(input)[0]


def scripted_caller(input, w_ih, w_hh):
    return lstm_ext.forward(input, None, w_ih, w_hh)[0]


@pytest.mark.parametrize(
    "target, name",
    [
        (lambda: lstm_ext.LSTM(3, 4), "lstm_ext.LSTM"),
        (Tagger, "lstm_ext.LSTM"),
        (lambda: lstm_ext.forward, "lstm_ext.forward"),
        (lambda: lstm_ext.lstm_layer, "lstm_ext.lstm_layer"),
        (lambda: scripted_caller, "lstm_ext.forward"),
    ],
    ids=["module", "submodule", "forward", "lstm_layer", "caller"],
)
def test_script_refuses_and_points_to_compile_and_export(target, name):
    with pytest.raises(RuntimeError, match=f"{name} cannot be compiled by torch.jit.script") as e:
        torch.jit.script(target())
    assert "torch.compile" in str(e.value) and "torch.export" in str(e.value)


def test_export_with_dynamic_shapes_matches_eager():
    module = make_module()
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    example = torch.randn(2, 5, 3, dtype=torch.float64)
    exported = torch.export.export(
        module, (example,), dynamic_shapes={"input": {0: batch, 1: steps}}
    )
    for shape in SHAPES[0], SHAPES[2]:
        input = torch.randn(*shape, 3, dtype=torch.float64)
        torch.testing.assert_close(exported.module()(input), module(input))
