"""ONNX export of models holding lstm_ext.LSTM: torch.onnx.export(dynamo=True) with a translation
of torch.ops.lstm_ext.lstm_layer_forward into standard ONNX.

    import lstm_ext.onnx
    lstm_ext.onnx.export(model, (x,), "model.onnx", dynamic_shapes=...)
    # or: torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=...,
    #                       custom_translation_table=lstm_ext.onnx.translation_table())

A layer without projection becomes ONNX's LSTM operator (gate rows reordered from PyTorch's
i, f, g, o to ONNX's i, o, f, c; both biases as its B = [Wb; Rb]; the reverse direction as
direction="reverse"). A layer with projection, which ONNX's LSTM lacks, becomes the function
ProjectedLSTMLayer: one MatMul for the input projection of all steps and a Scan over the steps.
ONNX gets the padded layout only: a PackedSequence whose sequences end at different steps, and
inter-layer dropout in training mode, are refused by `export`. Needs the onnxscript package
(`pip install onnx onnxscript`); `import lstm_ext` does not import this module.
"""

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

try:
    import onnx_ir as ir
    import onnxscript
    from onnxscript import FLOAT
    from onnxscript import opset18 as op
    from onnxscript.values import Opset
except ImportError as error:
    raise ImportError(
        f"lstm_ext.onnx needs onnxscript ({error}): pip install onnx onnxscript "
        "(and onnxruntime to run the exported models)"
    ) from error

from lstm_ext.module import LSTM

LSTM_EXT_DOMAIN = Opset("lstm_ext", 1)
LAYER_FORWARD = torch.ops.lstm_ext.lstm_layer_forward.default


def translation_table():
    """torch.onnx.export's custom_translation_table entries for lstm_ext's operators."""
    return {LAYER_FORWARD: lstm_layer_forward}


def export(model, args, f=None, *, dynamic_shapes=None, **options):
    """torch.onnx.export(model, args, f, dynamo=True, **options) with lstm_ext's translation:
    the ONNXProgram of `model`'s inference (traced without gradients, so no activations are kept
    for a backward pass). Raises NotImplementedError for what ONNX cannot get: PackedSequence
    inputs, inter-layer dropout in training mode."""
    _refuse_training_dropout(model)
    if any(isinstance(arg, PackedSequence) for arg in args):
        raise NotImplementedError(_PACKED_MESSAGE)
    with torch.no_grad():
        program = torch.export.export(model, tuple(args), dynamic_shapes=dynamic_shapes)
    _refuse_packed_layers(program)
    return torch.onnx.export(
        program, f=f, dynamo=True, custom_translation_table=translation_table(), **options
    )


_PACKED_MESSAGE = (
    "lstm_ext.onnx: PackedSequence input is not supported: the ONNX translation takes padded "
    "(T, B, I) or (B, T, I) batches, in which every sequence runs every step. Export the model "
    "on padded tensors; mask the steps past each sequence's end in the model or afterwards."
)


def _refuse_training_dropout(model):
    for name, module in model.named_modules():
        if isinstance(module, LSTM) and module.training and module.dropout > 0:
            raise NotImplementedError(
                f"lstm_ext.onnx: {name or 'the model'} applies dropout={module.dropout} between "
                "its layers in training mode, which ONNX export does not support. Call "
                "model.eval() before exporting (inference applies no dropout)."
            )


def _refuse_packed_layers(program):
    """Every layer's batch_sizes must be the padded [B] * T that lstm_ext.LSTM makes."""
    for node in program.graph.nodes:
        if node.target is LAYER_FORWARD:
            batch_sizes = node.args[1]
            if getattr(batch_sizes, "target", None) is not torch.ops.aten.full.default:
                raise NotImplementedError(_PACKED_MESSAGE)


def lstm_layer_forward(
    input,
    batch_sizes,
    h0,
    c0,
    w_ih,
    w_hh,
    b_ih=None,
    b_hh=None,
    w_hr=None,
    reverse=False,
    save_for_backward=False,
):
    """The translation of lstm_ext::lstm_layer_forward on padded rows: input (T*B, I) ->
    (output (T*B, R), h_n (B, R), c_n (B, H), and three empty tensors for the activations that
    only a backward pass reads)."""
    if batch_sizes.producer() is None:  # the model's input, not the [B] * T of a padded batch
        raise NotImplementedError(_PACKED_MESSAGE)
    steps = op.Shape(batch_sizes)
    batch = op.Shape(h0, start=0, end=1)
    input_size = op.Constant(value_ints=[w_ih.shape[1]])
    sequence = op.Reshape(input, op.Concat(steps, batch, input_size, axis=0))  # (T, B, I)
    if w_hr is None:
        output, h_n, c_n = _onnx_lstm(sequence, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
    else:
        output, h_n, c_n = _projected_lstm(sequence, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse)
    rows = op.Reshape(output, op.Constant(value_ints=[-1, w_hh.shape[1]]))
    empty = op.CastLike(op.Constant(value=ir.tensor(np.zeros((0,), np.float32))), input)
    return rows, h_n, c_n, empty, empty, empty


def _onnx_lstm(sequence, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse):
    """ONNX's LSTM operator, one direction: (output (T, 1, B, H), h_n (B, H), c_n (B, H))."""
    hidden_size = w_hh.shape[0] // 4
    first = op.Constant(value_ints=[0])
    weights = op.Unsqueeze(_onnx_gate_order(w_ih), first)
    recurrent_weights = op.Unsqueeze(_onnx_gate_order(w_hh), first)
    bias = None
    if b_ih is not None or b_hh is not None:
        b_ih = _zeros_like_rows(w_ih) if b_ih is None else b_ih
        b_hh = _zeros_like_rows(w_ih) if b_hh is None else b_hh
        bias = op.Unsqueeze(
            op.Concat(_onnx_gate_order(b_ih), _onnx_gate_order(b_hh), axis=0), first
        )
    output, h_n, c_n = op.LSTM(
        sequence,
        weights,
        recurrent_weights,
        bias,
        None,
        op.Unsqueeze(h0, first),
        op.Unsqueeze(c0, first),
        hidden_size=hidden_size,
        direction="reverse" if reverse else "forward",
    )
    return output, op.Squeeze(h_n, first), op.Squeeze(c_n, first)


def _onnx_gate_order(rows):
    """Gate blocks of `rows` (4H, ...) from PyTorch's order i, f, g, o to ONNX's i, o, f, c. One
    Gather of constant indices, which the exporter folds into the weights."""
    hidden_size = rows.shape[0] // 4
    blocks = np.arange(4 * hidden_size).reshape(4, hidden_size)[[0, 3, 1, 2]]
    return op.Gather(rows, op.Constant(value=ir.tensor(blocks.reshape(-1))), axis=0)


def _zeros_like_rows(weight):
    """Zeros (4H) in weight's dtype."""
    return op.CastLike(op.ConstantOfShape(op.Shape(weight, start=0, end=1)), weight)


def _projected_lstm(sequence, h0, c0, w_ih, w_hh, b_ih, b_hh, w_hr, reverse):
    """ProjectedLSTMLayer over the sequence, or over it backwards for the reverse direction."""
    if b_ih is None and b_hh is None:
        bias = _zeros_like_rows(w_ih)
    else:
        bias = b_ih if b_hh is None else b_hh if b_ih is None else op.Add(b_ih, b_hh)
    if reverse:
        sequence = _flip_steps(sequence)
    output, h_n, c_n = ProjectedLSTMLayer(sequence, h0, c0, w_ih, w_hh, bias, w_hr)
    return (_flip_steps(output) if reverse else output), h_n, c_n


def _flip_steps(sequence):
    """sequence (T, ...) with its steps in reverse order."""
    return op.Slice(
        sequence,
        op.Constant(value_ints=[-1]),
        op.Constant(value_ints=[-(2**63)]),
        op.Constant(value_ints=[0]),
        op.Constant(value_ints=[-1]),
    )


@onnxscript.script(LSTM_EXT_DOMAIN, default_opset=op)
def ProjectedLSTMLayer(
    x: FLOAT, h0: FLOAT, c0: FLOAT, w_ih: FLOAT, w_hh: FLOAT, bias: FLOAT, w_hr: FLOAT
) -> tuple[FLOAT, FLOAT, FLOAT]:
    """An LSTM layer with projection, torch.nn.LSTM's: x (T, B, I), h0 (B, P), c0 (B, H),
    w_ih (4H, I), w_hh (4H, P), bias (4H) = b_ih + b_hh, w_hr (P, H) -> (output (T, B, P),
    h_n (B, P), c_n (B, H))."""
    w_hh_t = op.Transpose(w_hh, perm=[1, 0])
    w_hr_t = op.Transpose(w_hr, perm=[1, 0])

    @onnxscript.graph()
    def step(h, c, gx):
        gates = op.Add(gx, op.MatMul(h, w_hh_t))
        i, f, g, o = op.Split(gates, num_outputs=4, axis=1)
        c_next = op.Add(op.Mul(op.Sigmoid(f), c), op.Mul(op.Sigmoid(i), op.Tanh(g)))
        h_next = op.MatMul(op.Mul(op.Sigmoid(o), op.Tanh(c_next)), w_hr_t)
        h_out = op.Identity(h_next)
        return h_next, c_next, h_out

    gx = op.Add(op.MatMul(x, op.Transpose(w_ih, perm=[1, 0])), bias)  # every step's input gates
    h_n, c_n, output = op.Scan(h0, c0, gx, body=step, num_scan_inputs=1)
    return output, h_n, c_n
