"""torch.export of a model holding lstm_ext.LSTM: with dynamic batch and sequence length the
program calls one lstm_ext.lstm_layer_forward per layer and direction (no per-step graph), runs
at other sizes than the example's, equals eager mode, and survives torch.export.save/load."""

import pytest
import torch

from examples import tagger

# (batch, steps) that the programs exported at the example's (3, 7) run at.
SIZES = [(3, 7), (1, 1), (1, 12), (5, 2), (8, 40)]
# The ops a per-step decomposition of an LSTM would bring into the graph.
PER_STEP_OPS = ("sigmoid", "tanh", "lstm_cell", "aten.lstm", "aten.mm", "aten.addmm")


def call_targets(program):
    return [str(node.target) for node in program.graph.nodes if node.op == "call_function"]


def exported_tagger(strict=False):
    torch.manual_seed(0)
    model = tagger.Tagger().eval()
    example = torch.randn(3, 7, model.front.in_features)
    with torch.no_grad():
        program = torch.export.export(
            model, (example,), dynamic_shapes=tagger.dynamic_shapes(), strict=strict
        )
    return model, program


def check_matches_eager(model, run):
    generator = torch.Generator().manual_seed(1)
    for batch, steps in SIZES:
        input = torch.randn(batch, steps, model.front.in_features, generator=generator)
        with torch.no_grad():
            expected = model(input)
            torch.testing.assert_close(run(input), expected, msg=f"B={batch} T={steps}")


@pytest.mark.parametrize("strict", (False, True))
def test_exported_program_calls_one_fused_layer_per_layer_and_direction(strict):
    model, program = exported_tagger(strict)
    targets = call_targets(program)
    layers = [target for target in targets if target == "lstm_ext.lstm_layer_forward.default"]
    assert len(layers) == 4  # 2 layers x 2 directions
    assert not [target for target in targets if any(op in target for op in PER_STEP_OPS)]
    layer_nodes = [
        node
        for node in program.graph.nodes
        if str(node.target) == "lstm_ext.lstm_layer_forward.default"
    ]
    assert all(node.args[-1] is False for node in layer_nodes)  # save_for_backward
    check_matches_eager(model, program.module())


def test_batch_and_steps_stay_symbolic():
    _, program = exported_tagger()
    input_node = next(
        node for node in program.graph.nodes if node.op == "placeholder" and node.name == "input"
    )
    batch, steps, features = input_node.meta["val"].shape
    assert isinstance(batch, torch.SymInt) and isinstance(steps, torch.SymInt)
    assert features == 10
    full = next(node for node in program.graph.nodes if str(node.target) == "aten.full.default")
    assert isinstance(full.args[0][0], torch.fx.Node)  # batch_sizes' length is T, symbolic
    assert isinstance(full.args[1], torch.fx.Node)  # its value is B, symbolic


def test_decomposed_program_keeps_the_fused_layers():
    model, program = exported_tagger()
    decomposed = program.run_decompositions()
    assert call_targets(decomposed).count("lstm_ext.lstm_layer_forward.default") == 4
    check_matches_eager(model, decomposed.module())


def test_saved_and_loaded_program_matches_eager(tmp_path):
    model, program = exported_tagger()
    path = tmp_path / "tagger.pt2"
    torch.export.save(program, path)
    loaded = torch.export.load(path)
    assert call_targets(loaded).count("lstm_ext.lstm_layer_forward.default") == 4
    check_matches_eager(model, loaded.module())


def test_export_helper_traces_without_gradients():
    torch.manual_seed(0)
    model = tagger.Tagger()
    program = tagger.export(model, torch.randn(2, 3, 10))
    layer_nodes = [
        node
        for node in program.graph.nodes
        if str(node.target) == "lstm_ext.lstm_layer_forward.default"
    ]
    assert len(layer_nodes) == 4 and all(node.args[-1] is False for node in layer_nodes)
    check_matches_eager(model.eval(), program.module())
