"""Per-chunk latency of streaming inference at B=1: lstm_ext.StreamingLSTM over lstm_ext.LSTM
against the same stream through torch.nn.LSTM, each carrying its (h, c) from chunk to chunk.

    python benchmarks/bench_streaming.py                    # speech-like and plain sizes
    python benchmarks/bench_streaming.py --chunks 1,10,40 --layers 2 --calls 5000

The two run call by call in alternation (which goes first alternates too), under
torch.inference_mode(); the table gives the median time of one chunk. Both streams are checked
against each other before they are timed; a mismatch stops the run with exit status 1.
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
from benchmarks.alternating import time_alternating


@dataclass(frozen=True)
class StreamSize:
    name: str
    input_size: int
    hidden_size: int
    proj_size: int = 0


SIZES = (StreamSize("speech", 80, 512, 256), StreamSize("plain", 256, 256))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", default="1,10", help="chunk lengths in frames, comma-separated")
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--calls", type=int, default=2000, help="timed chunks per implementation")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument(
        "--sizes",
        default=",".join(size.name for size in SIZES),
        help="which of " + ", ".join(size.name for size in SIZES),
    )
    args = parser.parse_args(argv)
    args.chunks = [int(chunk) for chunk in args.chunks.split(",")]
    args.sizes = [size for size in SIZES if size.name in args.sizes.split(",")]
    return args


def make_streams(size, layers, chunk, chunks_per_stream=8):
    """(lstm_ext stream, nn.LSTM stream, chunks): the same weights, B=1, batch-first."""
    torch.manual_seed(0)
    reference = nn.LSTM(
        size.input_size,
        size.hidden_size,
        num_layers=layers,
        proj_size=size.proj_size,
        batch_first=True,
    )
    ours = lstm_ext.LSTM.from_torch(reference)
    frames = torch.randn(1, chunk * chunks_per_stream, size.input_size)
    return (
        lstm_ext.StreamingLSTM(ours),
        lstm_ext.StreamingLSTM(reference),
        frames.split(chunk, dim=1),
    )


def check_streams_agree(ours, reference, chunks):
    for chunk in chunks:
        torch.testing.assert_close(ours(chunk), reference(chunk), rtol=1e-4, atol=1e-5)
    ours.reset()
    reference.reset()


def run(args):
    """One row per (size, chunk length): the medians and lstm_ext's speed-up."""
    rows = []
    with torch.inference_mode():
        for size in args.sizes:
            for chunk in args.chunks:
                ours, reference, chunks = make_streams(size, args.layers, chunk)
                check_streams_agree(ours, reference, chunks)
                medians = time_alternating(
                    {"lstm_ext": ours, "torch": reference}, chunks, args.calls, warmup_calls=20
                )
                rows.append(
                    {
                        "size": size,
                        "chunk": chunk,
                        **medians,
                        "speedup": medians["torch"] / medians["lstm_ext"],
                    }
                )
    return rows


def print_table(rows, layers):
    print(
        f"B=1, {layers} layer(s), torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, CPU ISA {lstm_ext.cpu_isa()}; median us per chunk"
    )
    print(f"{'size':32} {'chunk':>5} {'lstm_ext':>10} {'nn.LSTM':>10} {'speed-up':>9}")
    for row in rows:
        size = row["size"]
        label = f"{size.name} I={size.input_size} H={size.hidden_size} P={size.proj_size}"
        print(
            f"{label:32} {row['chunk']:5d} {row['lstm_ext'] * 1e6:10.1f} "
            f"{row['torch'] * 1e6:10.1f} {row['speedup']:8.2f}x"
        )


def main(argv=None):
    args = parse_args(argv)
    # nn.LSTM says on every call with a projection that oneDNN does not do it (ATen then does).
    warnings.filterwarnings("ignore", "LSTM with projections is not supported with oneDNN")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        rows = run(args)
    except AssertionError as error:
        print(f"lstm_ext's stream disagrees with nn.LSTM's; not timed:\n{error}", file=sys.stderr)
        raise SystemExit(1) from None
    print_table(rows, args.layers)
    return rows


if __name__ == "__main__":
    main()
