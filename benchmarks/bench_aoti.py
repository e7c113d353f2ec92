"""Time the lstm_ext tagger (examples/tagger.py) compiled ahead of time with AOTInductor against
the same model in eager mode, on the CPU.

    python benchmarks/bench_aoti.py                         # the small and the speech-like tagger
    python benchmarks/bench_aoti.py --sizes speech --batch 1,16 --steps 100 --calls 200

Each size is exported (dynamic batch and length), compiled and packaged with
torch._inductor.aoti_compile_and_package, loaded with aoti_load_package and checked against eager
mode; then the two run call by call in alternation (which goes first alternates too), under
torch.inference_mode(), and the table gives the median time of one call.
"""

import argparse
import sys
import tempfile
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch

import lstm_ext
from benchmarks.alternating import time_alternating
from examples import tagger

TAGGERS = {"small": tagger.TaggerSizes(),
           "speech": tagger.TaggerSizes(features=80, embedding=256, hidden=512, proj=256, tags=40)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="small,speech", help="of " + ", ".join(TAGGERS))
    parser.add_argument("--batch", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="sequence length")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per implementation")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes.split(",")
    args.batch = [int(batch) for batch in args.batch.split(",")]
    return args


def run(args):
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for name in args.sizes:
            sizes = TAGGERS[name]
            torch.manual_seed(0)
            model = tagger.Tagger(sizes).eval()
            package = tagger.aoti_package(model, Path(directory) / f"{name}.pt2")
            compiled = torch._inductor.aoti_load_package(package)
            with torch.inference_mode():
                for batch in args.batch:
                    input = torch.randn(batch, args.steps, sizes.features)
                    torch.testing.assert_close(compiled(input), model(input))
                    medians = time_alternating({"eager": model, "aoti": compiled}, [input],
                                               args.calls)
                    rows.append({"size": name, "batch": batch, "steps": args.steps, **medians,
                                 "ratio": medians["aoti"] / medians["eager"]})
    return rows


def print_table(rows):
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU ISA "
          f"{lstm_ext.cpu_isa()}; median ms per call, float32")
    print(f"{'tagger':8} {'B':>4} {'T':>5} {'eager':>9} {'AOTI':>9} {'AOTI/eager':>11}")
    for row in rows:
        print(f"{row['size']:8} {row['batch']:4d} {row['steps']:5d} {row['eager'] * 1e3:9.3f} "
              f"{row['aoti'] * 1e3:9.3f} {row['ratio']:10.3f}")


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print_table(rows)
    return rows


if __name__ == "__main__":
    main()
