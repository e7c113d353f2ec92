"""What the benchmark times for one size: the implementations, each as an inference and a
training closure over the same weights and inputs, and the correctness check that must pass first.
"""

import copy
import dataclasses
from typing import Callable, Optional

import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import lstm_ext
from benchmarks.configs import LstmSize

TORCH_LSTM = "torch.nn.LSTM"
REFERENCE = "reference"
COMPILED_REFERENCE = "compiled reference"
IMPLEMENTATIONS_PER_SIZE = 4  # what build_implementations returns, packed or not


@dataclasses.dataclass(frozen=True)
class Candidate:
    """The lstm_ext functions under test; a test swaps in a wrong one to see it refused.

    forward: lstm_ext.forward's signature (batch-first); layer: lstm_ext.lstm_layer's (packed rows).
    """

    forward: Callable = lstm_ext.forward
    layer: Callable = lstm_ext.lstm_layer


class WrongResultError(RuntimeError):
    """lstm_ext disagrees with torch.nn.LSTM: its timings would be meaningless."""


@dataclasses.dataclass
class Problem:
    """One size's data: an nn.LSTM whose parameters every implementation shares, and inputs."""

    size: LstmSize
    module: torch.nn.LSTM
    padded: torch.Tensor  # (B, T, I), zeros past each sequence's length
    packed: Optional[PackedSequence]  # .data (N, I); None unless size.packed
    grad_padded: torch.Tensor  # (B, T, R), the output gradient in training
    grad_packed: Optional[torch.Tensor]  # (N, R)

    def weights(self) -> list[Optional[torch.Tensor]]:
        """[w_ih, w_hh, b_ih, b_hh, w_hr] of layer 0, in lstm_ext.forward's argument order."""
        return [
            getattr(self.module, name, None)
            for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0")
        ]


def make_problem(size: LstmSize, device: torch.device, dtype: torch.dtype, seed: int) -> Problem:
    torch.manual_seed(seed)
    module = torch.nn.LSTM(
        size.input_size,
        size.hidden_size,
        batch_first=True,
        proj_size=size.proj_size,
        device=device,
        dtype=dtype,
    )
    padded = torch.randn(size.batch, size.steps, size.input_size, device=device, dtype=dtype)
    lengths = torch.tensor(size.lengths())
    steps = torch.arange(size.steps)
    padded[(steps[None, :] >= lengths[:, None]).to(device)] = 0
    grad_padded = torch.randn(
        size.batch, size.steps, size.recurrent_size, device=device, dtype=dtype
    )
    packed = grad_packed = None
    if size.packed:
        packed = pack_padded_sequence(padded, lengths, batch_first=True)
        grad_packed = pack_padded_sequence(grad_padded, lengths, batch_first=True).data
    return Problem(size, module, padded, packed, grad_padded, grad_packed)


@dataclasses.dataclass
class Implementation:
    """run(weights, input) -> output: the padded (B, T, R) output, or the packed rows (N, R).

    packed_input says which of the problem's inputs it takes; skip_reason, when set, says why it
    is not timed at this size.
    """

    name: str
    run: Callable
    packed_input: bool = False
    skip_reason: Optional[str] = None
    is_candidate: bool = False

    def inference(self, problem: Problem) -> Callable[[], torch.Tensor]:
        weights = [w.detach() if w is not None else None for w in problem.weights()]
        data = problem.packed if self.packed_input else problem.padded

        def infer():
            with torch.no_grad():
                return self.run(weights, data)

        return infer

    def training(self, problem: Problem) -> Callable[[], tuple]:
        """Forward and backward: the gradients of <output, grad_output> in input and weights."""
        weights = [w for w in problem.weights() if w is not None]
        if self.packed_input:
            data = problem.packed.data.detach().requires_grad_()
            packed = PackedSequence(data, problem.packed.batch_sizes)
            inputs, grad_output = packed, problem.grad_packed
        else:
            data = problem.padded.detach().requires_grad_()
            inputs, grad_output = data, problem.grad_padded

        def train():
            output = self.run(problem.weights(), inputs)
            return torch.autograd.grad(output, [data, *weights], grad_output)

        return train


def _lstm_ext_padded(candidate):
    return lambda weights, x: candidate.forward(x, None, *weights)[0]


def _lstm_ext_packed(candidate, size: LstmSize):
    def run(weights, packed):
        h0 = packed.data.new_zeros((size.batch, size.recurrent_size))
        c0 = packed.data.new_zeros((size.batch, size.hidden_size))
        return candidate.layer(packed.data, packed.batch_sizes, h0, c0, *weights)[0]

    return run


def _torch_lstm(module):
    # nn.LSTM owns the same Parameter objects that the others receive as `weights`.
    def run(_weights, inputs):
        output = module(inputs)[0]
        return output.data if isinstance(output, PackedSequence) else output

    return run


def _reference(weights, x):
    return lstm_ext.reference.lstm_forward(x, None, *weights)[0]


def build_implementations(
    problem: Problem, candidate: Candidate, reference_max_gflop: float, compile_max_steps: int
) -> list[Implementation]:
    """lstm_ext first (the speed-ups are its own over each of the others)."""
    size = problem.size
    if size.packed:
        return [
            Implementation(
                "lstm_ext packed", _lstm_ext_packed(candidate, size), True, is_candidate=True
            ),
            Implementation(f"{TORCH_LSTM} packed", _torch_lstm(problem.module), True),
            Implementation("lstm_ext padded", _lstm_ext_padded(candidate), is_candidate=True),
            Implementation(f"{TORCH_LSTM} padded", _torch_lstm(problem.module)),
        ]
    reference_skip = None
    if size.forward_flops() > reference_max_gflop * 1e9:
        reference_skip = f"> {reference_max_gflop:g} GFLOP (--reference-max-gflop)"
    compile_skip = reference_skip
    if compile_skip is None and size.steps > compile_max_steps:
        compile_skip = (
            f"T > {compile_max_steps} (--compile-max-steps)"
            if compile_max_steps
            else "not in this preset (--compile-max-steps)"
        )
    compiled = torch.compile(_reference, dynamic=False) if compile_skip is None else None
    return [
        Implementation("lstm_ext", _lstm_ext_padded(candidate), is_candidate=True),
        Implementation(TORCH_LSTM, _torch_lstm(problem.module)),
        Implementation(REFERENCE, _reference, skip_reason=reference_skip),
        Implementation(COMPILED_REFERENCE, compiled, skip_reason=compile_skip),
    ]


# Largest error allowed, relative to the largest magnitude of the float64 truth.
RELATIVE_TOLERANCE = {
    torch.float64: 1e-9,
    torch.float32: 1e-4,
    torch.float16: 2e-2,
    torch.bfloat16: 1e-1,
}


def _compare(
    name: str,
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    what: str,
    size: LstmSize,
) -> None:
    scale = expected.abs().max().item() if expected.numel() else 1.0
    tolerance = RELATIVE_TOLERANCE[dtype]
    try:
        torch.testing.assert_close(
            actual.double(), expected, rtol=0, atol=tolerance * max(scale, 1e-3)
        )
    except AssertionError as error:
        raise WrongResultError(
            f"{name} gives a wrong {what} at {size.label} ({dtype}): it differs from "
            f"torch.nn.LSTM in float64 by more than {tolerance:g} x max|expected| "
            f"(= {tolerance * scale:.3g}). Refusing to benchmark a wrong result.\n{error}"
        ) from None


def check_against_torch(problem: Problem, implementations: list[Implementation]) -> None:
    """Raise WrongResultError unless every lstm_ext implementation matches torch.nn.LSTM run in
    float64 on the same weights: the output without grad, and the gradients of the input and
    every weight. (The inference path keeps no activations and is a separate code path.)"""
    dtype = problem.padded.dtype
    truth_problem = dataclasses.replace(
        problem,
        module=copy.deepcopy(problem.module).double(),
        padded=problem.padded.double(),
        grad_padded=problem.grad_padded.double(),
        packed=(
            PackedSequence(problem.packed.data.double(), problem.packed.batch_sizes)
            if problem.packed is not None
            else None
        ),
        grad_packed=problem.grad_packed.double() if problem.grad_packed is not None else None,
    )
    truth = Implementation(TORCH_LSTM, _torch_lstm(truth_problem.module))
    names = ["input", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr"]
    for implementation in implementations:
        if not implementation.is_candidate:
            continue
        truth.packed_input = implementation.packed_input
        _compare(
            implementation.name,
            implementation.inference(problem)(),
            truth.inference(truth_problem)(),
            dtype,
            "output (inference)",
            problem.size,
        )
        expected_grads = truth.training(truth_problem)()
        for name, actual, expected in zip(
            names, implementation.training(problem)(), expected_grads
        ):
            _compare(
                implementation.name, actual, expected, dtype, f"gradient of {name}", problem.size
            )
