"""lstm_ext.LSTM: a drop-in replacement for torch.nn.LSTM built on the fused layer operators.

Every layer and direction is one call of `lstm_layer` on the packed time-major rows: a
PackedSequence's data goes in as it is (each step computes only the sequences still running), and
a padded batch is the special case batch_sizes = [B] * T. The reverse direction walks the same
rows backwards inside the operator, so no flipped copy of the sequence is ever made.

The module is deliberately an nn.Module and not a subclass of nn.LSTM/nn.RNNBase: TorchDynamo
refuses to trace RNN module classes, which would break torch.compile(fullgraph=True).
"""

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import PackedSequence

from lstm_ext._reuse import padded_batch_sizes, reused
from lstm_ext._torchscript import refuse_scripting
from lstm_ext.ops import lstm_layer


class LSTM(nn.Module):
    """torch.nn.LSTM's interface and semantics: the same constructor, parameter names and shapes
    (state dicts load both ways), initialisation, forward(input, hx=None) with padded, unbatched
    and PackedSequence input, outputs, and errors for a wrong input or hidden state.

    Inter-layer dropout (training mode) is torch's dropout on each layer's output but the last,
    so the same seed gives the same mask run to run. On the CPU that is also nn.LSTM's mask (ATen
    draws it the same way); cuDNN draws its random numbers differently, so on a GPU the masks of
    the two modules differ.
    """

    def __init__(
        self,
        input_size,
        hidden_size,
        num_layers=1,
        bias=True,
        batch_first=False,
        dropout=0.0,
        bidirectional=False,
        proj_size=0,
        device=None,
        dtype=None,
    ):
        super().__init__()
        _check_constructor_args(
            input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size
        )
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size
        factory_kwargs = {"device": device, "dtype": dtype}
        num_directions = 2 if bidirectional else 1
        recurrent_size = proj_size if proj_size > 0 else hidden_size
        gate_size = 4 * hidden_size
        # Names per (layer, direction) in nn.LSTM's registration order, which is also the order
        # reset_parameters draws them in: the same seed gives nn.LSTM's initial weights.
        self._all_weights = []
        self._weight_suffixes = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else recurrent_size * num_directions
            for direction in range(num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {
                    f"weight_ih{suffix}": (gate_size, layer_input_size),
                    f"weight_hh{suffix}": (gate_size, recurrent_size),
                }
                if bias:
                    shapes[f"bias_ih{suffix}"] = (gate_size,)
                    shapes[f"bias_hh{suffix}"] = (gate_size,)
                if proj_size > 0:
                    shapes[f"weight_hr{suffix}"] = (proj_size, hidden_size)
                for name, shape in shapes.items():
                    self.register_parameter(
                        name, nn.Parameter(torch.empty(shape, **factory_kwargs))
                    )
                self._all_weights.append(list(shapes))
                self._weight_suffixes.append(suffix)
        self.reset_parameters()

    @classmethod
    def from_torch(cls, module):
        """An lstm_ext.LSTM with the configuration, device, dtype, weights and train/eval mode of
        the torch.nn.LSTM `module` (copies of its weights, not shared parameters)."""
        first_weight = module.weight_ih_l0
        lstm = cls(
            module.input_size,
            module.hidden_size,
            num_layers=module.num_layers,
            bias=module.bias,
            batch_first=module.batch_first,
            dropout=module.dropout,
            bidirectional=module.bidirectional,
            proj_size=module.proj_size,
            device=first_weight.device,
            dtype=first_weight.dtype,
        )
        lstm.load_state_dict(module.state_dict())
        lstm.train(module.training)
        return lstm

    def reset_parameters(self):
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def __prepare_scriptable__(self):
        refuse_scripting("lstm_ext.LSTM")

    def flatten_parameters(self):
        """A no-op, for code written for nn.LSTM (the operators take the weights as they are)."""

    @property
    def all_weights(self):
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def extra_repr(self):
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    def forward(self, input, hx=None):
        """input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence;
        hx: (h_0, c_0), each (num_layers * num_directions, B, R or H) ((L*D, R or H) unbatched),
        or None for zeros. Returns (output, (h_n, c_n)) in nn.LSTM's types and layouts."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        return self._forward_padded(input, hx)

    def _forward_packed(self, packed, hx):
        rows, batch_sizes, sorted_indices, unsorted_indices = packed  # rows (N, I)
        self._check_input(rows, expected_dim=2)
        if hx is None:
            h0, c0 = self._zero_states(rows, _packed_batch_size(batch_sizes, sorted_indices, None))
        else:
            self._check_state_count(hx)
            self._check_states(hx, _packed_batch_size(batch_sizes, sorted_indices, hx), rows)
            h0, c0 = _select_batch(hx, sorted_indices)  # in the sorted order of the rows
        output, h_n, c_n = self._run_layers(rows, batch_sizes, h0, c0)
        return (
            PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices),
            _select_batch((h_n, c_n), unsorted_indices),
        )

    def _forward_padded(self, input, hx):
        if input.dim() not in (2, 3):
            raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {input.dim()}D instead")
        is_batched = input.dim() == 3
        batch_dim = 0 if self.batch_first else 1
        if not is_batched:
            input = input.unsqueeze(batch_dim)
        self._check_input(input, expected_dim=3)
        steps, batch = input.shape[1 - batch_dim], input.shape[batch_dim]
        # A single sequence lies in time-major order either way: no transpose (nor its autograd
        # node) for it, except in a TorchScript trace, which must serve every batch size.
        transposed = self.batch_first and (torch.jit.is_tracing() or batch != 1)
        if transposed:
            input = input.transpose(0, 1)  # (T, B, I); the reshape below copies it once
        if hx is None:
            h0, c0 = self._zero_states(input, batch)
        else:
            expected_dim = 3 if is_batched else 2
            if hx[0].dim() != expected_dim or hx[1].dim() != expected_dim:
                kind = "batched 3-D" if is_batched else "unbatched 2-D"
                raise RuntimeError(
                    f"For {kind} input, hx and cx should also be {expected_dim}-D but got "
                    f"({hx[0].dim()}-D, {hx[1].dim()}-D) tensors"
                )
            self._check_state_count(hx)
            h0, c0 = hx if is_batched else (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            self._check_states((h0, c0), batch, input)
        if steps == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")
        # A padded batch is the packed layout with every sequence running every step; for a
        # contiguous seq-first input the reshape is a view.
        rows = input.reshape(steps * batch, input.shape[2])
        batch_sizes = padded_batch_sizes(self.__dict__, steps, batch)
        output, h_n, c_n = self._run_layers(rows, batch_sizes, h0, c0)
        if transposed:
            output = output.view(steps, batch, output.shape[1]).transpose(0, 1)
        else:
            output = output.view(input.shape[0], input.shape[1], output.shape[1])
        if not is_batched:
            return output.squeeze(batch_dim), (h_n.squeeze(1), c_n.squeeze(1))
        return output, (h_n, c_n)

    def _run_layers(self, rows, batch_sizes, h0, c0):
        """rows (N, I) packed time-major; batch_sizes (T,) int64 CPU; h0 (L*D, B, R) and
        c0 (L*D, B, H), or sequences of L*D tensors (B, R) and (B, H). Returns
        (output (N, D*R), h_n (L*D, B, R), c_n (L*D, B, H))."""
        compute_dtype = self._compute_dtype(rows)
        if compute_dtype is not None:
            rows = rows.to(compute_dtype)
            h0 = [state.to(compute_dtype) for state in h0]
            c0 = [state.to(compute_dtype) for state in c0]
        num_directions = 2 if self.bidirectional else 1
        final_hidden, final_cell = [], []
        layer_input = rows
        for layer in range(self.num_layers):
            direction_outputs = []
            for direction in range(num_directions):
                state_index = layer * num_directions + direction
                w_ih, w_hh, b_ih, b_hh, w_hr = self._weights(state_index, compute_dtype)
                output, h_n, c_n = lstm_layer(
                    layer_input,
                    batch_sizes,
                    h0[state_index],
                    c0[state_index],
                    w_ih,
                    w_hh,
                    b_ih,
                    b_hh,
                    w_hr,
                    reverse=direction == 1,
                )
                direction_outputs.append(output)
                final_hidden.append(h_n)
                final_cell.append(c_n)
            layer_input = (
                torch.cat(direction_outputs, dim=1) if num_directions == 2 else direction_outputs[0]
            )
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)
        if len(final_hidden) == 1:  # a view instead of a copy
            return layer_input, final_hidden[0].unsqueeze(0), final_cell[0].unsqueeze(0)
        return layer_input, torch.stack(final_hidden), torch.stack(final_cell)

    def _weights(self, state_index, compute_dtype):
        """(w_ih, w_hh, b_ih, b_hh, w_hr) of one layer and direction, None where absent."""
        suffix = self._weight_suffixes[state_index]
        # Straight from the parameter dict: nn.Module.__getattr__ costs microseconds a call.
        parameters = self._parameters
        weights = [
            parameters.get(name + suffix)
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")
        ]
        if compute_dtype is not None:
            weights = [w.to(compute_dtype) if w is not None else None for w in weights]
        return weights

    def _compute_dtype(self, input):
        """The dtype autocast runs nn.LSTM in (its lower-precision type), else None."""
        if not torch._C._is_any_autocast_enabled():  # a few microseconds less a call
            return None
        device_type = input.device.type
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
        return None

    def _zero_states(self, input, batch):
        """(h0, c0) for hx=None: L*D references to one zero (B, R) and one zero (B, H) tensor."""
        num_states = self.num_layers * (2 if self.bidirectional else 1)
        recurrent_size = self.proj_size if self.proj_size > 0 else self.hidden_size

        def make():
            return (
                (input.new_zeros((batch, recurrent_size)),) * num_states,
                (input.new_zeros((batch, self.hidden_size)),) * num_states,
            )

        return reused(self.__dict__, "_zero_states_cache", (batch, input.dtype, input.device), make)

    def _check_input(self, input, expected_dim):
        weight = self._parameters["weight_ih_l0"]
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(
                f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                f"Convert input: input.to({weight.dtype}), or convert model: "
                f"model.to({input.dtype})"
            )
        if input.device != weight.device:
            raise RuntimeError(
                "Input and parameter tensors are not at the same device, found "
                f"input tensor at {input.device} and parameter tensor at "
                f"{weight.device}"
            )
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(
                f"input.size(-1) must be equal to input_size. Expected "
                f"{self.input_size}, got {input.size(-1)}"
            )

    def _check_state_count(self, hx):
        # nn.LSTM's ATen call refuses one tensor, even one whose first dimension is 2.
        if not isinstance(hx, (tuple, list)):
            raise TypeError(f"LSTM: hx must be a tuple (h_0, c_0), got {type(hx).__name__}")
        if len(hx) != 2:
            raise RuntimeError("lstm expects two hidden states")

    def _check_states(self, hx, batch, input):
        """hx's sizes, then its devices, with nn.LSTM's messages."""
        num_states = self.num_layers * (2 if self.bidirectional else 1)
        recurrent_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        expected_sizes = (
            (num_states, batch, recurrent_size),
            (num_states, batch, self.hidden_size),
        )
        for index, (state, expected) in enumerate(zip(hx, expected_sizes)):
            if state.size() != expected:
                raise RuntimeError(
                    f"Expected hidden[{index}] size {expected}, got {list(state.size())}"
                )
        for state in hx:
            if state.device != input.device:
                raise RuntimeError(
                    "Input and hidden tensors are not at the same device, found "
                    f"input tensor at {input.device} and hidden tensor at "
                    f"{state.device}"
                )


def _packed_batch_size(batch_sizes, sorted_indices, hx):
    """batch_sizes[0], from a shape where one has it: the sorted indices', or under torch.compile
    hx's (h_0 (L*D, B, R); the operators check it against batch_sizes[0] when they run). Reading
    the value breaks torch.compile's graph unless Dynamo captures scalars (fullgraph=True)."""
    if sorted_indices is not None:
        return sorted_indices.shape[0]
    if hx is not None and torch.compiler.is_compiling() and hx[0].dim() == 3:
        return hx[0].shape[1]
    return int(batch_sizes[0])


def _select_batch(hx, indices):
    """hx = (h (L*D, B, R), c (L*D, B, H)) with the batch reordered by `indices` (None: as is)."""
    if indices is None:
        return hx
    return hx[0].index_select(1, indices), hx[1].index_select(1, indices)


def _check_constructor_args(
    input_size, hidden_size, num_layers, bias, batch_first, dropout, proj_size
):
    """nn.RNNBase's argument checks, with its messages."""
    if (
        not isinstance(dropout, numbers.Number)
        or not 0 <= dropout <= 1
        or isinstance(dropout, bool)
    ):
        raise ValueError(
            "dropout should be a number in range [0, 1] representing the "
            "probability of an element being zeroed"
        )
    if dropout > 0 and num_layers == 1:
        warnings.warn(
            "dropout option adds dropout after all but last recurrent layer, so "
            "non-zero dropout expects num_layers greater than 1, but got "
            f"dropout={dropout} and num_layers={num_layers}",
            stacklevel=3,
        )
    if not isinstance(bias, bool):
        raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
    if not isinstance(batch_first, bool):
        raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
    if not isinstance(input_size, int):
        raise TypeError(f"input_size should be of type int, got: {type(input_size).__name__}")
    if input_size <= 0:
        raise ValueError("input_size must be greater than zero")
    if not isinstance(hidden_size, int):
        raise TypeError(f"hidden_size should be of type int, got: {type(hidden_size).__name__}")
    if hidden_size <= 0:
        raise ValueError("hidden_size must be greater than zero")
    if num_layers <= 0:
        raise ValueError("num_layers must be greater than zero")
    if proj_size < 0:
        raise ValueError("proj_size should be a positive integer or zero to disable projections")
    if proj_size >= hidden_size:
        raise ValueError("proj_size has to be smaller than hidden_size")
