"""Data-parallel training of the lstm_ext tagger (examples/tagger.py) with
DistributedDataParallel: gloo on CPUs, NCCL on GPUs (one process per GPU).

    torchrun --nproc_per_node=2 examples/ddp_train.py                # 2 processes
    torchrun --nproc_per_node=2 examples/ddp_train.py --steps 400 --batch 64
    python examples/ddp_train.py                                     # 1 process, no DDP

Each step draws one global batch (the same on every process: a seeded generator stands in for a
DistributedSampler) and each process trains on its equal share of it; DDP averages the gradients,
so the parameters follow those of one process training on the whole batch. The task: tag each
step with the index of the largest of the previous step's first `tags` features. Synthetic data;
nothing is downloaded.
"""

import argparse
import os
import sys
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from examples.tagger import Tagger, TaggerSizes

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="SGD steps")
    parser.add_argument("--batch", type=int, default=32, help="global batch, all processes")
    parser.add_argument("--seq-len", type=int, default=20)
    parser.add_argument("--lr", type=float, default=2.0)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: one GPU per process where there are GPUs, else the CPU",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        help="write the trained parameters (torch.save of the state dict) here",
    )
    return parser.parse_args(argv)


def tagging_batch(step, batch, steps, sizes, dtype, seed):
    """The global batch of SGD step `step`: inputs (B, T, features) and tags (B, T)."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    inputs = torch.randn(batch, steps, sizes.features, generator=generator, dtype=dtype)
    tags = torch.zeros(batch, steps, dtype=torch.int64)
    tags[:, 1:] = inputs[:, :-1, : sizes.tags].argmax(dim=2)
    return inputs, tags


def start_process_group(device_choice):
    """(rank, world size, device): from torchrun's environment, or a single process."""
    use_cuda = device_choice == "cuda" or (device_choice == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if "WORLD_SIZE" not in os.environ:
        return 0, 1, device
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def train(args, rank, world_size, device):
    """Trains the tagger on this process's share of each global batch; returns (model, losses).
    The losses are this process's, of its share."""
    if args.batch % world_size:
        raise ValueError(f"--batch {args.batch} must split evenly over {world_size} processes")
    sizes, dtype = TaggerSizes(), DTYPES[args.dtype]
    torch.manual_seed(args.seed)  # the same initial weights everywhere (DDP broadcasts rank 0's)
    model = Tagger(sizes, dtype=dtype).to(device)
    trained = model
    if world_size > 1:
        device_ids = [device.index] if device.type == "cuda" else None
        trained = DistributedDataParallel(model, device_ids=device_ids)
    optimizer = torch.optim.SGD(trained.parameters(), lr=args.lr)
    share = args.batch // world_size
    losses = []
    for step in range(args.steps):
        inputs, tags = tagging_batch(step, args.batch, args.seq_len, sizes, dtype, args.seed)
        rows = slice(rank * share, (rank + 1) * share)
        inputs, tags = inputs[rows].to(device), tags[rows].to(device)
        scores = trained(inputs)
        loss = F.cross_entropy(scores.reshape(-1, sizes.tags), tags.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if rank == 0 and (step + 1) % args.log_every == 0:
            print(f"step {step + 1:4d}  loss {loss.item():.4f}", flush=True)
    return model, losses


def main(argv=None):
    args = parse_args(argv)
    rank, world_size, device = start_process_group(args.device)
    try:
        if rank == 0:
            print(
                f"world size {world_size}, {device}, backend "
                f"{dist.get_backend() if world_size > 1 else 'none'}",
                flush=True,
            )
        model, losses = train(args, rank, world_size, device)
        if rank == 0 and args.save is not None:
            torch.save({name: value.cpu() for name, value in model.state_dict().items()}, args.save)
        if world_size > 1:
            dist.barrier()  # no process tears the group down while another still uses it
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    return model, losses


if __name__ == "__main__":
    main()
    if "WORLD_SIZE" in os.environ:
        # gloo's threads can abort a worker at interpreter exit ("terminate called without an
        # active exception") after all its work is done: a torchrun worker leaves at once.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
