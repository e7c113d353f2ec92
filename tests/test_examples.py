"""examples/: the adding-problem training gives the same losses with lstm_ext.LSTM and
torch.nn.LSTM; the hand-written loop on lstm_ext.forward learns and matches the reference."""

import subprocess
import sys
from pathlib import Path

import torch

import lstm_ext
from examples import functional_training_loop, train_adding_problem

REPO = Path(__file__).resolve().parent.parent
SMALL_ADDING = [
    "--epochs",
    "2",
    "--batches-per-epoch",
    "3",
    "--batch",
    "8",
    "--steps",
    "10",
    "--hidden-size",
    "16",
    "--proj-size",
    "8",
    "--device",
    "cpu",
]


def test_adding_problem_targets_are_the_sums_of_the_two_marked_values():
    inputs, targets = train_adding_problem.adding_problem(64, 12, torch.Generator().manual_seed(3))
    assert inputs.shape == (64, 12, 2) and targets.shape == (64,)
    markers = inputs[..., 1]
    assert torch.equal(markers.sum(1), torch.full((64,), 2.0))
    torch.testing.assert_close((inputs[..., 0] * markers).sum(1), targets)


def test_both_impls_start_from_the_same_weights():
    torch_model = train_adding_problem.build_model("torch", 16, 8, seed=5)
    ext_model = train_adding_problem.build_model("lstm_ext", 16, 8, seed=5)
    assert isinstance(ext_model.lstm, lstm_ext.LSTM)
    torch.testing.assert_close(ext_model.state_dict(), torch_model.state_dict(), rtol=0, atol=0)


def test_adding_problem_trains_to_the_same_losses_with_both_impls(capsys):
    runs = train_adding_problem.main(SMALL_ADDING)
    ext_losses, ext_seconds = runs["lstm_ext"]
    torch_losses, _ = runs["torch"]
    assert len(ext_losses) == len(ext_seconds) == 2 and all(s > 0 for s in ext_seconds)
    torch.testing.assert_close(ext_losses, torch_losses, rtol=1e-5, atol=1e-6)
    assert ext_losses[1] < ext_losses[0]
    output = capsys.readouterr().out
    assert "lstm_ext loss" in output and "torch loss" in output and "s/epoch" in output


def test_functional_loop_matches_the_reference_and_learns():
    losses = functional_training_loop.train(steps=40, hidden_size=16, proj_size=8)
    reference_losses = functional_training_loop.train(
        steps=5, hidden_size=16, proj_size=8, forward=lstm_ext.reference.lstm_forward
    )
    torch.testing.assert_close(losses[:5], reference_losses, rtol=1e-5, atol=1e-6)
    assert sum(losses[-5:]) / 5 < 0.8 * losses[0]


def test_functional_loop_runs_as_a_script():
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "functional_training_loop.py"), "--steps", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "step    3  loss" in completed.stdout
