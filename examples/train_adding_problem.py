"""Train the same two-layer LSTM with a projection on the adding problem, with lstm_ext.LSTM or
torch.nn.LSTM: the same seed, data and initial weights give the same loss curve.

    python examples/train_adding_problem.py                 # both, side by side
    python examples/train_adding_problem.py --impl lstm_ext --epochs 10

The adding problem (Hochreiter & Schmidhuber, 1997): each step carries a random number in [0, 1)
and a marker; exactly two steps are marked, and the target is the sum of their numbers. Always
predicting 1 gives a mean squared error of about 1/6; a model that learned the task goes well
below. The data are generated here; nothing is downloaded.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

import lstm_ext


def adding_problem(batch: int, steps: int, generator: torch.Generator):
    """inputs (B, T, 2): value and marker per step; targets (B,): the sum of the marked values."""
    values = torch.rand(batch, steps, generator=generator)
    first = torch.randint(0, steps // 2, (batch,), generator=generator)
    second = torch.randint(steps // 2, steps, (batch,), generator=generator)
    markers = torch.zeros(batch, steps)
    rows = torch.arange(batch)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    return torch.stack([values, markers], dim=2), values[rows, first] + values[rows, second]


class AddingModel(nn.Module):
    """Two LSTM layers with a projection, batch-first, and a linear read-out of the last step."""

    def __init__(self, lstm: nn.Module):
        super().__init__()
        self.lstm = lstm
        self.head = nn.Linear(lstm.proj_size or lstm.hidden_size, 1)

    def forward(self, inputs):  # inputs (B, T, 2) -> (B,)
        output, _ = self.lstm(inputs)
        return self.head(output[:, -1]).squeeze(1)


def build_model(impl: str, hidden_size: int, proj_size: int, seed: int) -> AddingModel:
    """The same initial weights for both implementations: nn.LSTM draws them from `seed`, and
    lstm_ext.LSTM.from_torch copies them."""
    torch.manual_seed(seed)
    lstm = nn.LSTM(2, hidden_size, num_layers=2, batch_first=True, proj_size=proj_size)
    model = AddingModel(lstm)
    if impl == "lstm_ext":
        model.lstm = lstm_ext.LSTM.from_torch(lstm)
    return model


def train(impl: str, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    """Returns the mean training loss and the seconds of each epoch."""
    model = build_model(impl, args.hidden_size, args.proj_size, args.seed).to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    generator = torch.Generator().manual_seed(args.seed + 1)  # the same batches for each impl
    batches = [
        adding_problem(args.batch, args.steps, generator) for _ in range(args.batches_per_epoch)
    ]
    losses, seconds = [], []
    for _ in range(args.epochs):
        started, total = time.perf_counter(), 0.0
        for inputs, targets in batches:
            inputs, targets = inputs.to(args.device), targets.to(args.device)
            loss = nn.functional.mse_loss(model(inputs), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()  # .item() waits for the device, so the epoch time is complete
        seconds.append(time.perf_counter() - started)
        losses.append(total / len(batches))
    return losses, seconds


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--impl", choices=("lstm_ext", "torch", "both"), default="both")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batches-per-epoch", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40, help="sequence length T")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--proj-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() and lstm_ext.cuda_available() else "cpu",
    )
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, tuple[list[float], list[float]]]:
    args = parse_args(argv)
    # nn.LSTM says once that oneDNN lacks projections and that it uses ATen's own path instead.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    impls = ("lstm_ext", "torch") if args.impl == "both" else (args.impl,)
    runs = {impl: train(impl, args) for impl in impls}
    print("epoch  " + "  ".join(f"{impl + ' loss':>14s} {'s/epoch':>8s}" for impl in impls))
    for epoch in range(args.epochs):
        print(
            f"{epoch + 1:5d}  "
            + "  ".join(
                f"{runs[impl][0][epoch]:14.6f} {runs[impl][1][epoch]:8.3f}" for impl in impls
            )
        )
    return runs


if __name__ == "__main__":
    main()
