"""Writes what the C++ example (main.cpp) runs: the AOTInductor package of the lstm_ext tagger,
an input and eager mode's scores for it; or checks the C++ program's scores against those.

    python examples/aoti_cpp/package_tagger.py OUT_DIR          # tagger.pt2 input.pt expected.pt
    ./aoti_tagger OUT_DIR/tagger.pt2 LIBRARY OUT_DIR/input.pt OUT_DIR/output.pt
    python examples/aoti_cpp/package_tagger.py OUT_DIR --check    # output.pt == expected.pt?

It prints the operator library to give the C++ program (LIBRARY: lstm_ext/_C*.so).
"""

import argparse
import sys
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[2]))

import torch

import lstm_ext
from examples import tagger


def operator_library() -> str:
    """The shared library that registers torch.ops.lstm_ext (what a C++ program loads)."""
    return lstm_ext.ops._C.__file__


def write_package(model: tagger.Tagger, directory: Path, input: torch.Tensor) -> Path:
    """tagger.pt2 (the package of `model`), input.pt (`input`) and expected.pt (eager mode's
    scores for it) in `directory`; returns the package's path."""
    package = tagger.aoti_package(model, directory / "tagger.pt2")
    with torch.no_grad():
        torch.save(model(input), directory / "expected.pt")
    torch.save(input, directory / "input.pt")
    return Path(package)


def check(directory: Path):
    expected = torch.load(directory / "expected.pt")
    output = torch.load(directory / "output.pt")
    torch.testing.assert_close(output, expected)
    print(f"the C++ program's scores {tuple(output.shape)} equal eager mode's")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument(
        "--check",
        action="store_true",
        help="compare output.pt (the C++ program's) with expected.pt",
    )
    args = parser.parse_args(argv)
    if args.check:
        check(args.directory)
        return
    args.directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = tagger.Tagger().eval()
    input = torch.randn(4, 50, model.front.in_features)
    print(f"package: {write_package(model, args.directory, input)}")
    print(f"operator library: {operator_library()}")


if __name__ == "__main__":
    main()
