"""examples/ddp_train.py under torchrun: two processes with DistributedDataParallel over gloo
(127.0.0.1 only) end a few SGD steps with the parameters of one process trained on the whole
batch, in float64 so that the comparison is tight."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lstm_ext
from examples import ddp_train

REPO = Path(__file__).resolve().parent.parent
TRAINING = [
    "--steps",
    "3",
    "--batch",
    "6",
    "--seq-len",
    "5",
    "--dtype",
    "float64",
    "--log-every",
    "1",
    "--device",
    "cpu",
]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_torchrun(save_path):
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        str(REPO / "examples" / "ddp_train.py"),
        *TRAINING,
        "--save",
        str(save_path),
    ]
    # The workers import the lstm_ext this test imported (installed, or built in place), then
    # the examples from the source tree; gloo over loopback only.
    python_path = [str(Path(lstm_ext.__file__).resolve().parents[1]), str(REPO)]
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(python_path),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)


def test_two_processes_train_like_one_on_the_whole_batch(tmp_path):
    completed = run_torchrun(tmp_path / "ddp.pt")
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "world size 2, cpu, backend gloo" in completed.stdout
    assert "step    3  loss" in completed.stdout
    distributed = torch.load(tmp_path / "ddp.pt")

    single_model, losses = ddp_train.main(TRAINING)
    assert len(losses) == 3
    assert set(distributed) == set(single_model.state_dict())
    for name, value in single_model.state_dict().items():
        torch.testing.assert_close(distributed[name], value, rtol=1e-12, atol=1e-12, msg=name)
    # The steps moved the weights: equality is not that of two untrained models.
    torch.manual_seed(0)
    initial = ddp_train.Tagger(ddp_train.TaggerSizes(), dtype=torch.float64)
    assert not torch.allclose(initial.lstm.weight_hh_l1, distributed["lstm.weight_hh_l1"])


def test_batch_that_does_not_split_evenly_is_refused():
    args = ddp_train.parse_args(["--batch", "5"])
    with pytest.raises(ValueError, match="must split evenly over 2 processes"):
        ddp_train.train(args, rank=0, world_size=2, device=torch.device("cpu"))
