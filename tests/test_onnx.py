"""ONNX export of lstm_ext.LSTM (lstm_ext.onnx): layers without projection become ONNX's LSTM
operator, layers with one a Scan over the steps; onnxruntime runs the model exported at one size
at other batch sizes and lengths and equals eager mode; what ONNX cannot get is refused at export
time with a message that says what to do."""

import os
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

import lstm_ext
import lstm_ext.onnx
from examples import tagger

SIZES = [(3, 7), (1, 1), (1, 25), (6, 4)]  # (batch, steps) onnxruntime runs at


def export_tagger(tmp_path, sizes, dtype=None):
    torch.manual_seed(0)
    model = tagger.Tagger(sizes, dtype=dtype).eval()
    example = torch.randn(3, 7, sizes.features, dtype=dtype)
    path = tmp_path / "tagger.onnx"
    lstm_ext.onnx.export(
        model, (example,), path, dynamic_shapes=tagger.dynamic_shapes(), verbose=False
    )
    return model, path


def check_onnxruntime_matches_eager(model, path, dtype=torch.float32):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (input_name,) = [input.name for input in session.get_inputs()]
    generator = torch.Generator().manual_seed(1)
    for batch, steps in SIZES:
        input = torch.randn(batch, steps, model.front.in_features, generator=generator, dtype=dtype)
        (scores,) = session.run(None, {input_name: input.numpy()})
        with torch.no_grad():
            torch.testing.assert_close(
                torch.from_numpy(scores), model(input), msg=f"B={batch} T={steps}"
            )


def operator_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("bidirectional", (False, True))
def test_layers_without_projection_become_onnx_lstm(tmp_path, bidirectional):
    sizes = tagger.TaggerSizes(proj=0, bidirectional=bidirectional)
    model, path = export_tagger(tmp_path, sizes)
    nodes = onnx.load(str(path)).graph.node
    lstms = [node for node in nodes if node.op_type == "LSTM"]
    directions = [
        next(a.s.decode() for a in node.attribute if a.name == "direction") for node in lstms
    ]
    expected = ["forward", "reverse"] * 2 if bidirectional else ["forward"] * 2
    assert sorted(directions) == sorted(expected)
    assert "Scan" not in operator_types(path)
    check_onnxruntime_matches_eager(model, path)


@pytest.mark.parametrize("bidirectional", (False, True))
def test_layers_with_projection_become_a_scan_over_the_steps(tmp_path, bidirectional):
    sizes = tagger.TaggerSizes(proj=12, bidirectional=bidirectional)
    model, path = export_tagger(tmp_path, sizes)
    types = operator_types(path)
    assert "Scan" in types and "LSTM" not in types
    check_onnxruntime_matches_eager(model, path)


def test_layers_without_bias(tmp_path):
    torch.manual_seed(0)
    sizes = tagger.TaggerSizes(bidirectional=False)
    model = tagger.Tagger(sizes).eval()
    for proj, name in ((0, "plain.onnx"), (6, "projected.onnx")):
        model.lstm = lstm_ext.LSTM(
            sizes.embedding,
            sizes.hidden,
            num_layers=2,
            bias=False,
            proj_size=proj,
            batch_first=True,
        ).eval()
        model.head = torch.nn.Linear(proj or sizes.hidden, sizes.tags)
        lstm_ext.onnx.export(
            model,
            (torch.randn(3, 7, sizes.features),),
            tmp_path / name,
            dynamic_shapes=tagger.dynamic_shapes(),
            verbose=False,
        )
        check_onnxruntime_matches_eager(model, tmp_path / name)


def test_projected_layers_run_in_float64(tmp_path):
    sizes = tagger.TaggerSizes()
    model, path = export_tagger(tmp_path, sizes, dtype=torch.float64)
    check_onnxruntime_matches_eager(model, path, dtype=torch.float64)


def test_translation_table_works_with_torch_onnx_export(tmp_path):
    torch.manual_seed(0)
    lstm = lstm_ext.LSTM(5, 8, proj_size=3).eval()
    sequence = torch.randn(6, 2, 5)
    state = (torch.randn(1, 2, 3), torch.randn(1, 2, 8))
    with torch.no_grad():
        program = torch.onnx.export(
            lstm,
            (sequence, state),
            dynamo=True,
            verbose=False,
            custom_translation_table=lstm_ext.onnx.translation_table(),
        )
        expected = lstm(sequence, state)
    outputs = program(sequence, state)
    torch.testing.assert_close(outputs[0], expected[0])
    torch.testing.assert_close(outputs[1:], list(expected[1]))


def test_training_mode_dropout_is_refused():
    model = torch.nn.Sequential(lstm_ext.LSTM(4, 6, num_layers=2, dropout=0.3)).train()
    with pytest.raises(NotImplementedError, match=r"0 applies dropout=0.3 .* Call model.eval"):
        lstm_ext.onnx.export(model, (torch.randn(3, 2, 4),))


class PackedModel(torch.nn.Module):
    """An LSTM on a PackedSequence made of the model's inputs."""

    def __init__(self):
        super().__init__()
        self.lstm = lstm_ext.LSTM(4, 6)

    def forward(self, rows, batch_sizes, order, h0, c0):
        output, _ = self.lstm(PackedSequence(rows, batch_sizes, order, order), (h0, c0))
        return output.data


def packed_args():
    return (
        torch.randn(10, 4),
        torch.tensor([3, 3, 2, 1, 1]),
        torch.arange(3),
        torch.zeros(1, 3, 6),
        torch.zeros(1, 3, 6),
    )


def test_packed_sequences_are_refused():
    with pytest.raises(NotImplementedError, match="PackedSequence input is not supported"):
        lstm_ext.onnx.export(PackedModel().eval(), packed_args())
    lstm = lstm_ext.LSTM(4, 6).eval()
    packed = PackedSequence(torch.randn(10, 4), torch.tensor([3, 3, 2, 1, 1]))
    with pytest.raises(NotImplementedError, match="Export the model on padded tensors"):
        lstm_ext.onnx.export(lstm, (packed,))


def test_translation_refuses_packed_sequences_under_torch_onnx_export():
    # The exporter wraps the translation's error in its own, whose message quotes it.
    with torch.no_grad(), pytest.raises(Exception, match="PackedSequence input is not supported"):
        torch.onnx.export(
            PackedModel().eval(),
            packed_args(),
            dynamo=True,
            verbose=False,
            custom_translation_table=lstm_ext.onnx.translation_table(),
        )


def test_importing_lstm_ext_does_not_import_onnxscript(tmp_path):
    code = (
        "import sys, lstm_ext; print('onnxscript' in sys.modules, 'lstm_ext.onnx' in sys.modules)"
    )
    environment = {**os.environ, "PYTHONPATH": str(Path(lstm_ext.__file__).resolve().parents[1])}
    completed = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=tmp_path,
        env=environment,
    )
    assert completed.stdout.split() == ["False", "False"]
