"""AOTInductor: the package of the lstm_ext tagger calls lstm_ext's operator through the proxy
executor (no per-step code), runs it when loaded with aoti_load_package, equals eager mode at
other sizes than the example's, and runs from a C++ program (examples/aoti_cpp) that loads the
operator library before torch::inductor::AOTIModelPackageLoader."""

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from examples import tagger
from examples.aoti_cpp import package_tagger

REPO = Path(__file__).resolve().parent.parent
SIZES = [(2, 3), (1, 1), (1, 20), (6, 9)]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """(eager model, package path): the package is compiled once for the module's tests."""
    directory = tmp_path_factory.mktemp("aoti")
    torch.manual_seed(0)
    model = tagger.Tagger().eval()
    input = torch.randn(4, 50, model.front.in_features)
    return model, package_tagger.write_package(model, directory, input)


def package_files(package, suffix):
    with zipfile.ZipFile(package) as archive:
        return [archive.read(name).decode() for name in archive.namelist() if name.endswith(suffix)]


def test_package_calls_the_lstm_ext_operator_through_the_proxy_executor(compiled):
    _, package = compiled
    (extern_nodes,) = package_files(package, ".wrapper.json")
    targets = [node["node"]["target"] for node in json.loads(extern_nodes)["nodes"]]
    assert targets == ["lstm_ext::lstm_layer_forward"] * 4  # 2 layers x 2 directions
    (wrapper,) = package_files(package, ".wrapper.cpp")
    assert wrapper.count("aoti_torch_proxy_executor_call_function(proxy_executor") == 4
    generated = wrapper + "".join(package_files(package, ".kernel.cpp"))
    assert "sigmoid" not in generated and "tanh" not in generated


def test_loaded_package_equals_eager_at_other_sizes(compiled):
    model, package = compiled
    runner = torch._inductor.aoti_load_package(str(package))
    generator = torch.Generator().manual_seed(1)
    for batch, steps in SIZES:
        input = torch.randn(batch, steps, model.front.in_features, generator=generator)
        with torch.no_grad():
            torch.testing.assert_close(runner(input), model(input), msg=f"B={batch} T={steps}")


def test_loaded_package_runs_the_lstm_ext_kernels(compiled):
    model, package = compiled
    runner = torch._inductor.aoti_load_package(str(package))
    input = torch.randn(2, 5, model.front.in_features)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        runner(input)
    calls = [event for event in profile.events() if event.name == "lstm_ext::lstm_layer_forward"]
    assert len(calls) == 4


def build_cpp_example(directory):
    """Compiles examples/aoti_cpp/main.cpp against this torch's libtorch (what its CMakeLists.txt
    does, without needing CMake)."""
    torch_lib = cpp_extension.library_paths()[0]
    command = [
        os.environ.get("CXX", "c++"),
        "-std=c++20",
        "-O1",
        str(REPO / "examples" / "aoti_cpp" / "main.cpp"),
        "-o",
        str(directory / "tagger"),
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        f"-L{torch_lib}",
        f"-Wl,-rpath,{torch_lib}",
        "-Wl,--no-as-needed",
        "-ltorch",
        "-ltorch_cpu",
        "-lc10",
        "-ldl",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return directory / "tagger"


def test_cpp_program_runs_the_package(compiled, tmp_path):
    _, package = compiled
    program = build_cpp_example(tmp_path)
    output = package.parent / "output.pt"
    completed = subprocess.run(
        [
            str(program),
            str(package),
            package_tagger.operator_library(),
            str(package.parent / "input.pt"),
            str(output),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "input [4, 50, 10] -> scores [4, 50, 5]" in completed.stdout
    package_tagger.check(package.parent)

    # Without the operator library the package cannot find lstm_ext's operator.
    missing = subprocess.run(
        [str(program), str(package), "libm.so.6", str(package.parent / "input.pt"), str(output)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 1
    assert "Could not find schema for lstm_ext::lstm_layer_forward" in missing.stderr
