"""lstm_ext.LSTM against torch.nn.LSTM on the LSTM layers of models users run (speech, language
models, taggers, time series, streaming), off the presets' grid: whole modules, as a user swaps
them, forward under torch.no_grad() and training (forward, backward of every parameter).

    python benchmarks/bench_models.py                     # every model, at the machine's ISA
    python benchmarks/bench_models.py --isa avx2 --models tagger,ptb-medium --threads 2

Each model's lstm_ext.LSTM comes from its nn.LSTM (LSTM.from_torch); outputs and gradients are
checked against nn.LSTM before timing (a mismatch stops the run with exit status 1). The two are
timed call by call in alternation (benchmarks/timing.py); the table gives medians.
"""

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

import lstm_ext
from benchmarks import isa_cap
from benchmarks.summary import geometric_mean
from benchmarks.timing import alternate


@dataclass(frozen=True)
class Model:
    """An nn.LSTM configuration and the batch it runs on (batch-first)."""

    name: str
    batch: int
    steps: int
    input_size: int
    hidden_size: int
    layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0

    def label(self) -> str:
        extras = [f"{self.layers}L"] if self.layers > 1 else []
        extras += ["bi"] if self.bidirectional else []
        extras += [f"P={self.proj_size}"] if self.proj_size else []
        return (
            f"B={self.batch} T={self.steps} I={self.input_size} H={self.hidden_size} "
            + " ".join(extras)
        ).strip()


MODELS = (
    Model("speech-encoder", 8, 200, 80, 1024, layers=2, bidirectional=True, proj_size=256),
    Model("speech-stream", 1, 40, 80, 512, layers=2, proj_size=256),
    Model("keyword-spotting", 1, 100, 40, 320),
    Model("sensor-series", 1, 1000, 8, 50),
    Model("forecaster", 64, 48, 10, 64, layers=2),
    Model("sentence-classifier", 3, 50, 300, 300),
    Model("tagger", 32, 40, 100, 128, bidirectional=True),
    Model("char-rnn", 50, 100, 65, 512, layers=2),
    Model("seq2seq-encoder", 64, 30, 256, 512, bidirectional=True),
    Model("sentiment", 16, 200, 300, 256, bidirectional=True),
    Model("handwriting", 16, 300, 3, 400, layers=3),
    Model("ptb-medium", 20, 35, 650, 650, layers=2),
    Model("ptb-large", 20, 35, 1500, 1500, layers=2),
    Model("awd-lstm", 32, 70, 400, 1150),
    Model("summarizer", 12, 60, 512, 1000),
)
MODES = ("forward", "training")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    names = ",".join(model.name for model in MODELS)
    parser.add_argument("--models", default=names, help=f"comma-separated, of: {names}")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--min-run-time", type=float, default=1.0, help="seconds per implementation and mode"
    )
    parser.add_argument(
        "--isa",
        choices=isa_cap.ISA_CHOICES,
        default=isa_cap.NATIVE,
        help="cap lstm_ext and nn.LSTM alike at this x86 level (a fresh process)",
    )
    args = parser.parse_args(argv)
    wanted = args.models.split(",")
    unknown = sorted(set(wanted) - {model.name for model in MODELS})
    if unknown:
        parser.error(f"unknown models: {', '.join(unknown)}")
    args.models = [model for model in MODELS if model.name in wanted]
    return args


def make_pair(model: Model) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    """(nn.LSTM, its lstm_ext.LSTM, an input batch)."""
    torch.manual_seed(0)
    reference = nn.LSTM(
        model.input_size,
        model.hidden_size,
        num_layers=model.layers,
        bidirectional=model.bidirectional,
        proj_size=model.proj_size,
        batch_first=True,
    )
    x = torch.randn(model.batch, model.steps, model.input_size)
    return reference, lstm_ext.LSTM.from_torch(reference), x


def forward_call(module: nn.Module, x: torch.Tensor):
    def run():
        with torch.no_grad():
            return module(x)[0]

    return run


def training_call(module: nn.Module, x: torch.Tensor):
    parameters = list(module.parameters())

    def run():
        output = module(x)[0]
        return torch.autograd.grad(output.sum(), parameters)

    return run


def check_agree(reference: nn.Module, ours: nn.Module, x: torch.Tensor) -> None:
    """nn.LSTM's and lstm_ext's outputs and gradients, within float32's tolerance."""
    torch.testing.assert_close(
        forward_call(ours, x)(), forward_call(reference, x)(), rtol=1e-4, atol=1e-5
    )
    for ours_grad, reference_grad in zip(training_call(ours, x)(), training_call(reference, x)()):
        torch.testing.assert_close(ours_grad, reference_grad, rtol=1e-3, atol=1e-4)


def time_model(model: Model, min_run_time: float) -> dict:
    reference, ours, x = make_pair(model)
    check_agree(reference, ours, x)
    row = {"model": model}
    for mode, call in (("forward", forward_call), ("training", training_call)):
        timings = alternate(
            {"lstm_ext": call(ours, x), "nn.LSTM": call(reference, x)}, min_run_time
        )
        row[mode] = {name: timing.median_s for name, timing in timings.items()}
    return row


def speedup(row: dict, mode: str) -> float:
    return row[mode]["nn.LSTM"] / row[mode]["lstm_ext"]


def print_table(rows: list[dict]) -> None:
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, lstm_ext CPU ISA "
        f"{lstm_ext.cpu_isa()}, ATen {torch.backends.cpu.get_cpu_capability()}; "
        "median ms per call; speed-up = nn.LSTM's time / lstm_ext's"
    )
    header = f"{'model':20} {'size':36}"
    for mode in MODES:
        header += f" {mode + ' nn':>12} {'ext':>8} {'speed-up':>8}"
    print(header)
    for row in rows:
        line = f"{row['model'].name:20} {row['model'].label():36}"
        for mode in MODES:
            line += (
                f" {row[mode]['nn.LSTM'] * 1e3:12.3f} {row[mode]['lstm_ext'] * 1e3:8.3f}"
                f" {speedup(row, mode):7.2f}x"
            )
        print(line)
    for mode in MODES:
        ratios = [speedup(row, mode) for row in rows]
        geomean = geometric_mean(ratios)
        faster = sum(ratio >= 1.0 for ratio in ratios)
        print(
            f"{mode}: at least as fast at {faster} of {len(ratios)} models, "
            f"geomean {geomean:.2f}x, lowest {min(ratios):.2f}x"
        )


def main(argv=None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    status = isa_cap.run_at(args.isa, Path(__file__).resolve(), argv)
    if status is not None:
        raise SystemExit(status)
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = [time_model(model, args.min_run_time) for model in args.models]
    except AssertionError as error:
        print(f"lstm_ext disagrees with nn.LSTM; not timed:\n{error}", file=sys.stderr)
        raise SystemExit(1) from None
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
