"""Time the deployed forms of the lstm_ext tagger (examples/tagger.py) against the same model in
eager mode, on the CPU: its AOTInductor package and its ONNX model in onnxruntime.

    python benchmarks/bench_deploy.py                       # small, speech-like and plain taggers
    python benchmarks/bench_deploy.py --sizes speech --batch 1,8 --calls 30 --paths aoti

Each size is exported (dynamic batch and length), then compiled and packaged with
torch._inductor.aoti_compile_and_package and loaded with aoti_load_package, and converted with
lstm_ext.onnx.export and loaded in an onnxruntime session; each is checked against eager mode.
Then all run call by call in alternation (which goes first alternates too), under
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

# The tests' tagger; a speech-like one with projection (ONNX: a Scan); one without (ONNX: LSTM).
TAGGERS = {
    "small": tagger.TaggerSizes(),
    "speech": tagger.TaggerSizes(features=80, embedding=256, hidden=512, proj=256, tags=40),
    "plain": tagger.TaggerSizes(features=80, embedding=256, hidden=256, proj=0, tags=40),
}
PATHS = ("aoti", "onnx")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=",".join(TAGGERS), help="of " + ", ".join(TAGGERS))
    parser.add_argument("--paths", default=",".join(PATHS), help="of " + ", ".join(PATHS))
    parser.add_argument("--batch", default="1,16", help="batch sizes, comma-separated")
    parser.add_argument("--steps", type=int, default=100, help="sequence length")
    parser.add_argument("--calls", type=int, default=100, help="timed calls per implementation")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    args.sizes = args.sizes.split(",")
    args.paths = args.paths.split(",")
    args.batch = [int(batch) for batch in args.batch.split(",")]
    return args


def aoti_runner(model, directory):
    package = tagger.aoti_package(model, Path(directory) / "tagger.pt2")
    return torch._inductor.aoti_load_package(package)


def onnx_runner(model, directory):
    import onnxruntime

    import lstm_ext.onnx

    path = Path(directory) / "tagger.onnx"
    lstm_ext.onnx.export(
        model,
        (torch.randn(2, 3, model.front.in_features),),
        path,
        dynamic_shapes=tagger.dynamic_shapes(),
        verbose=False,
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return lambda input: torch.from_numpy(session.run(None, {input_name: input.numpy()})[0])


RUNNERS = {"aoti": aoti_runner, "onnx": onnx_runner}


def run(args):
    rows = []
    for name in args.sizes:
        sizes = TAGGERS[name]
        torch.manual_seed(0)
        model = tagger.Tagger(sizes).eval()
        with tempfile.TemporaryDirectory() as directory:
            runs = {"eager": model}
            runs.update({path: RUNNERS[path](model, directory) for path in args.paths})
        with torch.inference_mode():
            for batch in args.batch:
                input = torch.randn(batch, args.steps, sizes.features)
                expected = model(input)
                for path in args.paths:
                    torch.testing.assert_close(runs[path](input), expected, msg=path)
                medians = time_alternating(runs, [input], args.calls)
                rows.append({"size": name, "batch": batch, "steps": args.steps, **medians})
    return rows


def print_table(rows, paths):
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU ISA "
        f"{lstm_ext.cpu_isa()}; median ms per call, float32; ratio = time / eager's"
    )
    header = "".join(f" {path:>9} {'ratio':>6}" for path in paths)
    print(f"{'tagger':8} {'B':>4} {'T':>5} {'eager':>9}{header}")
    for row in rows:
        cells = "".join(
            f" {row[path] * 1e3:9.3f} {row[path] / row['eager']:6.3f}" for path in paths
        )
        print(
            f"{row['size']:8} {row['batch']:4d} {row['steps']:5d} {row['eager'] * 1e3:9.3f}{cells}"
        )


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = run(args)
    print_table(rows, args.paths)
    return rows


if __name__ == "__main__":
    main()
