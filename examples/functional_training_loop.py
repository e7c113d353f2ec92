"""A hand-written training loop on lstm_ext.forward: no nn.Module, the weights are plain tensors
updated by gradient descent. The task: forecast the next value of noisy sine waves.

    python examples/functional_training_loop.py
"""

import argparse
import math
import sys
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch

import lstm_ext


def sine_waves(batch: int, steps: int, generator: torch.Generator):
    """inputs (B, T, 1) and targets (B, T, 1): each wave's value at t and at t + 1."""
    frequency = 0.1 + 0.2 * torch.rand(batch, 1, generator=generator)
    phase = 2 * math.pi * torch.rand(batch, 1, generator=generator)
    t = torch.arange(steps + 1, dtype=torch.float32)
    waves = torch.sin(frequency * t + phase) + 0.05 * torch.randn(
        batch, steps + 1, generator=generator
    )
    return waves[:, :-1, None], waves[:, 1:, None]


def init_weights(hidden_size: int, proj_size: int, generator: torch.Generator) -> dict:
    """nn.LSTM's initialisation, U(-1/sqrt(H), 1/sqrt(H)), for one layer and a linear read-out."""
    bound = 1 / math.sqrt(hidden_size)

    def uniform(*shape):
        return ((torch.rand(*shape, generator=generator) * 2 - 1) * bound).requires_grad_()

    return {
        "w_ih": uniform(4 * hidden_size, 1),
        "w_hh": uniform(4 * hidden_size, proj_size),
        "b_ih": uniform(4 * hidden_size),
        "b_hh": uniform(4 * hidden_size),
        "w_hr": uniform(proj_size, hidden_size),
        "w_out": uniform(1, proj_size),
        "b_out": uniform(1),
    }


def train(
    steps: int = 200,
    hidden_size: int = 32,
    proj_size: int = 16,
    lr: float = 0.1,
    seed: int = 0,
    forward=lstm_ext.forward,
) -> list[float]:
    """Returns the loss of every step. `forward` has lstm_ext.forward's signature (the tests pass
    lstm_ext.reference.lstm_forward to check that the losses agree)."""
    generator = torch.Generator().manual_seed(seed)
    weights = init_weights(hidden_size, proj_size, generator)
    losses = []
    for _ in range(steps):
        inputs, targets = sine_waves(16, 50, generator)
        output, _ = forward(
            inputs,
            None,
            weights["w_ih"],
            weights["w_hh"],
            weights["b_ih"],
            weights["b_hh"],
            weights["w_hr"],
        )  # output (B, T, P)
        prediction = output @ weights["w_out"].t() + weights["b_out"]  # (B, T, 1)
        loss = torch.nn.functional.mse_loss(prediction, targets)
        gradients = torch.autograd.grad(loss, list(weights.values()))
        with torch.no_grad():
            for weight, gradient in zip(weights.values(), gradients):
                weight -= lr * gradient.clamp(-1, 1)
        losses.append(loss.item())
    return losses


def main(argv=None) -> list[float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    losses = train(steps=args.steps, seed=args.seed)
    for step in range(0, args.steps, max(1, args.steps // 10)):
        print(f"step {step + 1:4d}  loss {losses[step]:.5f}")
    print(f"step {args.steps:4d}  loss {losses[-1]:.5f}")
    return losses


if __name__ == "__main__":
    main()
