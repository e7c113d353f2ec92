"""The CUDA operators: against the CPU operators and against torch.nn.LSTM on CUDA (cuDNN), for
outputs and every gradient; half types against PyTorch's own error at the same precision; streams
and devices. Those tests skip where no GPU is present. The first two tests run everywhere: they
check that the CUDA kernels use the math and indexing of csrc/lstm_math.h, the header the CPU
tests exercise, and that its vector variants (the kernels' aligned path) equal its element
functions."""

import pathlib
import re
import shutil
import subprocess

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence

import lstm_ext
from tolerances import assert_close_scaled

ROOT = pathlib.Path(__file__).resolve().parent.parent
CUDA_SOURCES = sorted((ROOT / "csrc" / "cuda").glob("*.cu"))

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
requires_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")

# ------------------------------------------------------------------------------------------------
# Run everywhere: the CUDA kernels share the CPU path's math.


def test_cuda_kernels_call_the_shared_math_and_nothing_else():
    """The .cu sources include lstm_math.h and reach the math only through its element and vector
    functions: no activation, cell formula or gate indexing of their own."""
    assert CUDA_SOURCES, "no .cu source in csrc/cuda"
    source = "\n".join(path.read_text() for path in CUDA_SOURCES)
    code = re.sub(r"//[^\n]*", "", source)  # comments may name anything
    assert '#include "core/lstm_math.h"' in code
    for function in (
        "lstm_forward_element",
        "lstm_backward_element",
        "lstm_forward_vector",
        "lstm_backward_vector",
    ):
        assert re.search(rf"\b{function}\s*<", code), f"the CUDA kernels do not call {function}"
    own_math = re.findall(
        r"\b(?:__)?(?:exp2?f?|tanhf?|sigmoid|logistic|lstm_cell_forward|"
        r"lstm_cell_backward|exp_primitive|tanh_activation)\s*\(",
        code,
    )
    assert not own_math, f"math outside lstm_math.h in the CUDA sources: {own_math}"
    own_indexing = re.findall(
        r"\b(?:params|p)\s*\.\s*\w+\s*\[|\b[23]\s*\*\s*(?:H|hidden_size)\b", code
    )
    assert not own_indexing, f"step indexing outside lstm_math.h: {own_indexing}"


def test_shared_header_compiles_for_the_host_and_vector_variants_match_elements(tmp_path):
    """tests/cpp/lstm_math_host_check.cpp, built with the host compiler under AddressSanitizer:
    lstm_math.h compiles without CUDA, its vector functions give the element functions'
    results bit for bit, with no access outside the step's buffers, and the host's exp, tanh and
    sigmoid stay within their error bounds against libm in double, keep NaN and reach their limits
    exactly where they saturate."""
    compiler = shutil.which("c++") or shutil.which("g++")
    assert compiler is not None, "no host C++ compiler (the extension build needs one too)"
    binary = tmp_path / "lstm_math_host_check"
    build = subprocess.run(
        [
            compiler,
            "-std=c++17",
            "-O1",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-ffp-contract=off",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            f"-I{ROOT / 'csrc'}",
            str(ROOT / "tests" / "cpp" / "lstm_math_host_check.cpp"),
            "-o",
            str(binary),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "vector variants match the element functions" in run.stdout
    assert "max error: exp" in run.stdout
    assert "NaN kept: 1, saturation exact: 1" in run.stdout


def test_gpu_results_moved_to_the_cpu_keep_the_gpu_tolerance():
    """The comparisons below move CUDA results to the CPU first: their float32 tolerance is that
    of the device that computed them (gradients 5e-5 from cuDNN's), not the CPU's tighter one."""
    expected = torch.zeros(3)
    actual = torch.full((3,), 3e-5)
    assert_close_scaled(actual, expected, torch.float32, "cuda", "")
    with pytest.raises(AssertionError):
        assert_close_scaled(actual, expected, torch.float32, "cpu", "")


# ------------------------------------------------------------------------------------------------
# Cases on the packed layout.


def packed_batch_sizes(batch, steps, generator):
    """(steps,) int64: the batch sizes of `batch` sequences of lengths 1..steps, sorted
    decreasing, the first of full length."""
    lengths = torch.randint(1, steps + 1, (batch,), generator=generator)
    lengths[0] = steps
    lengths = lengths.sort(descending=True).values
    return torch.stack([(lengths > t).sum() for t in range(steps)]).to(torch.int64)


def make_case(
    batch=3, steps=4, input_size=5, hidden_size=7, proj_size=0, bias=True, packed=True, seed=0
):
    """Arguments of lstm_ext.lstm_layer in float64 on the CPU, with the weights of both
    directions (suffix _reverse) and the gradients of the three outputs."""
    generator = torch.Generator().manual_seed(seed)
    recurrent_size = proj_size or hidden_size
    batch_sizes = (
        packed_batch_sizes(batch, steps, generator)
        if packed
        else torch.full((steps,), batch, dtype=torch.int64)
    )
    rows = int(batch_sizes.sum())

    def rand(*shape, magnitude=0.5):
        return (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * magnitude

    case = dict(input=rand(rows, input_size, magnitude=1.0), batch_sizes=batch_sizes)
    for suffix in ("", "_reverse"):
        case["h0" + suffix] = rand(batch, recurrent_size)
        case["c0" + suffix] = rand(batch, hidden_size)
        case["w_ih" + suffix] = rand(4 * hidden_size, input_size)
        case["w_hh" + suffix] = rand(4 * hidden_size, recurrent_size)
        case["b_ih" + suffix] = rand(4 * hidden_size) if bias else None
        case["b_hh" + suffix] = rand(4 * hidden_size) if bias else None
        case["w_hr" + suffix] = rand(proj_size, hidden_size) if proj_size else None
        case["grad_output" + suffix] = torch.randn(
            rows, recurrent_size, generator=generator, dtype=torch.float64
        )
        case["grad_h_n" + suffix] = torch.randn(
            batch, recurrent_size, generator=generator, dtype=torch.float64
        )
        case["grad_c_n" + suffix] = torch.randn(
            batch, hidden_size, generator=generator, dtype=torch.float64
        )
    return case


LAYER_ARGUMENTS = ("input", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")


def run_layer(case, device, dtype, reverse=False):
    """lstm_ext.lstm_layer on `device` in `dtype`: the outputs (output, h_n, c_n) and the
    gradients of every argument given, in LAYER_ARGUMENTS order, all moved to the CPU."""
    suffix = "_reverse" if reverse else ""
    tensors = {name: case[name if name == "input" else name + suffix] for name in LAYER_ARGUMENTS}
    leaves = {
        name: t.to(device=device, dtype=dtype).requires_grad_()
        for name, t in tensors.items()
        if t is not None
    }
    outputs = lstm_ext.lstm_layer(
        leaves["input"],
        case["batch_sizes"],
        leaves["h0"],
        leaves["c0"],
        leaves["w_ih"],
        leaves["w_hh"],
        leaves.get("b_ih"),
        leaves.get("b_hh"),
        leaves.get("w_hr"),
        reverse=reverse,
    )
    grad_outputs = [
        case[name + suffix].to(device=device, dtype=dtype)
        for name in ("grad_output", "grad_h_n", "grad_c_n")
    ]
    grads = torch.autograd.grad(outputs, list(leaves.values()), grad_outputs)
    return [t.cpu() for t in outputs], [g.cpu() for g in grads]


def run_nn_lstm(case, device, dtype):
    """torch.nn.LSTM (cuDNN on CUDA), bidirectional over the packed rows: the outputs of the
    forward then the reverse direction, and the gradients, in run_layer's order per direction."""
    hidden_size = case["c0"].shape[1]
    proj_size = case["w_hr"].shape[0] if case["w_hr"] is not None else 0
    module = torch.nn.LSTM(
        case["input"].shape[1],
        hidden_size,
        bias=case["b_ih"] is not None,
        proj_size=proj_size,
        bidirectional=True,
        device=device,
        dtype=dtype,
    )
    names = {
        "w_ih": "weight_ih",
        "w_hh": "weight_hh",
        "b_ih": "bias_ih",
        "b_hh": "bias_hh",
        "w_hr": "weight_hr",
    }
    directions = {"": "_l0", "_reverse": "_l0_reverse"}
    with torch.no_grad():
        for ours, theirs in names.items():
            for suffix, module_suffix in directions.items():
                if case[ours + suffix] is not None:
                    getattr(module, theirs + module_suffix).copy_(case[ours + suffix])
    data = case["input"].to(device=device, dtype=dtype).requires_grad_()
    h0 = torch.stack([case["h0"], case["h0_reverse"]]).to(device=device, dtype=dtype)
    c0 = torch.stack([case["c0"], case["c0_reverse"]]).to(device=device, dtype=dtype)
    h0.requires_grad_()
    c0.requires_grad_()
    packed_output, (h_n, c_n) = module(PackedSequence(data, case["batch_sizes"]), (h0, c0))
    recurrent_size = h_n.shape[2]
    outputs = [
        packed_output.data[:, :recurrent_size],
        h_n[0],
        c_n[0],
        packed_output.data[:, recurrent_size:],
        h_n[1],
        c_n[1],
    ]
    grad_outputs = [
        case[name + suffix].to(device=device, dtype=dtype)
        for suffix in directions
        for name in ("grad_output", "grad_h_n", "grad_c_n")
    ]
    weights = {
        suffix: [
            getattr(module, theirs + module_suffix)
            for ours, theirs in names.items()
            if case[ours + suffix] is not None
        ]
        for suffix, module_suffix in directions.items()
    }
    all_weights = weights[""] + weights["_reverse"]
    grads = torch.autograd.grad(outputs, [data, h0, c0] + all_weights, grad_outputs)
    grad_data, grad_h0, grad_c0 = grads[:3]
    grad_weights = grads[3:]
    count = len(weights[""])
    forward = (
        [t.cpu() for t in outputs[:3]],
        [None, grad_h0[0].cpu(), grad_c0[0].cpu()] + [g.cpu() for g in grad_weights[:count]],
    )
    reverse = (
        [t.cpu() for t in outputs[3:]],
        [None, grad_h0[1].cpu(), grad_c0[1].cpu()] + [g.cpu() for g in grad_weights[count:]],
    )
    # The input gradient exists only as the sum of both directions'.
    return forward, reverse, grad_data.cpu()


def assert_close_all(actual, expected, dtype, what):
    (actual_outputs, actual_grads), (expected_outputs, expected_grads) = actual, expected
    for name, a, e in zip(("output", "h_n", "c_n"), actual_outputs, expected_outputs):
        assert_close_scaled(a, e, dtype, "cuda", lambda m: f"{what}, {name}: {m}")
    assert len(actual_grads) == len(expected_grads)
    for index, (a, e) in enumerate(zip(actual_grads, expected_grads)):
        if e is None:
            continue
        assert_close_scaled(
            a, e, dtype, "cuda", lambda m: f"{what}, gradient of argument {index}: {m}"
        )


# Odd H runs the scalar kernels; H = 8, 128 the aligned vector kernels (H = 130 those of float64).
SIZES = [1, 7, 33, 130]


def case_for_size(size, proj, bias, packed):
    proj_size = max(1, size // 2) if proj else 0
    return make_case(
        batch=size if size < 130 else 5,
        steps=5,
        input_size=size,
        hidden_size=max(size, proj_size + 1),
        proj_size=proj_size,
        bias=bias,
        packed=packed,
    )


# ------------------------------------------------------------------------------------------------
# On a GPU.


@requires_gpu
def test_extension_was_built_with_cuda_kernels():
    assert lstm_ext.cuda_available()


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES + [8, 128])
@pytest.mark.parametrize("proj", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_cuda_matches_cpu(dtype, size, proj, bias, reverse):
    case = case_for_size(size, proj, bias, packed=True)
    assert_close_all(
        run_layer(case, "cuda", dtype, reverse),
        run_layer(case, "cpu", dtype, reverse),
        dtype,
        "CUDA vs CPU",
    )


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("proj", [False, True])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("packed", [False, True])
def test_cuda_matches_nn_lstm_cudnn_both_directions(dtype, size, proj, bias, packed):
    case = case_for_size(size, proj, bias, packed)
    expected_forward, expected_reverse, expected_grad_input = run_nn_lstm(case, "cuda", dtype)
    forward = run_layer(case, "cuda", dtype)
    reverse = run_layer(case, "cuda", dtype, reverse=True)
    assert_close_all(forward, expected_forward, dtype, "forward direction vs nn.LSTM")
    assert_close_all(reverse, expected_reverse, dtype, "reverse direction vs nn.LSTM")
    assert_close_scaled(
        forward[1][0] + reverse[1][0],
        expected_grad_input,
        dtype,
        "cuda",
        lambda m: f"input gradient of both directions vs nn.LSTM: {m}",
    )


def max_error(value, reference):
    return (value.double() - reference).abs().max().item()


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hidden_size", [33, 128])
@pytest.mark.parametrize("proj", [False, True])
def test_half_types_are_as_accurate_as_pytorch(dtype, hidden_size, proj):
    """lstm_ext and nn.LSTM (cuDNN), both in `dtype`, against nn.LSTM in float64: ours may be off
    by at most a small factor more than PyTorch's own error, per output and per gradient."""
    case = make_case(
        batch=8,
        steps=20,
        input_size=64,
        hidden_size=hidden_size,
        proj_size=hidden_size // 2 if proj else 0,
        packed=True,
        seed=3,
    )
    reference_forward, _, reference_grad_input = run_nn_lstm(case, "cuda", torch.float64)
    torch_forward, _, torch_grad_input = run_nn_lstm(case, "cuda", dtype)
    ours_forward = run_layer(case, "cuda", dtype)
    reverse = run_layer(case, "cuda", dtype, reverse=True)
    eps = torch.finfo(dtype).eps
    named = [("output", 0, 0), ("h_n", 0, 1), ("c_n", 0, 2), ("grad h0", 1, 1), ("grad c0", 1, 2)]
    named += [(f"grad weight {i}", 1, 3 + i) for i in range(len(reference_forward[1]) - 3)]
    for name, part, index in named:
        reference = reference_forward[part][index]
        ours = ours_forward[part][index]
        theirs = torch_forward[part][index]
        floor = eps * reference.abs().max().item()
        assert max_error(ours, reference) <= 3 * max_error(theirs, reference) + floor, (
            f"{dtype} {name}: lstm_ext error {max_error(ours, reference):.3g}, "
            f"nn.LSTM error {max_error(theirs, reference):.3g}"
        )
    ours_grad_input = ours_forward[1][0].double() + reverse[1][0].double()
    floor = eps * reference_grad_input.abs().max().item()
    assert (
        max_error(ours_grad_input, reference_grad_input)
        <= 3 * max_error(torch_grad_input, reference_grad_input) + floor
    )


@requires_gpu
def test_vector_and_scalar_kernels_agree_bitwise():
    """H = 8 runs the aligned vector kernels; a c0 one element off alignment forces the scalar
    kernels over the same values. Both call the same math, so the results are identical."""
    case = make_case(batch=6, steps=5, input_size=4, hidden_size=8, packed=True)
    aligned = run_layer(case, "cuda", torch.float32, reverse=True)
    storage = torch.empty(case["c0_reverse"].numel() + 1, dtype=torch.float32, device="cuda")
    misaligned_c0 = storage[1:].view_as(case["c0_reverse"])
    misaligned_c0.copy_(case["c0_reverse"])
    shifted = dict(case, c0_reverse=misaligned_c0)
    assert shifted["c0_reverse"].data_ptr() % 16 != 0
    scalar = run_layer(shifted, "cuda", torch.float32, reverse=True)
    for a, s in zip(aligned[0] + aligned[1], scalar[0] + scalar[1]):
        assert torch.equal(a, s)


@requires_gpu
def test_runs_on_the_current_non_default_stream():
    """Everything runs on the current stream: on a side stream held back by a sleeping kernel, a
    kernel launched on another stream would read gates the GEMMs have not written yet."""
    case = make_case(batch=16, steps=12, input_size=32, hidden_size=64, proj_size=24)
    expected = run_layer(case, "cpu", torch.float32)
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        torch.cuda._sleep(200_000_000)
        actual = run_layer(case, "cuda", torch.float32)
    assert_close_all(actual, expected, torch.float32, "side stream vs CPU")


@requires_gpu
def test_deterministic_run_to_run():
    """No atomics: the same call gives the same bits, gradients included."""
    case = make_case(batch=32, steps=16, input_size=48, hidden_size=96, proj_size=40, seed=5)
    first = run_layer(case, "cuda", torch.float32, reverse=True)
    second = run_layer(case, "cuda", torch.float32, reverse=True)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)


@requires_two_gpus
def test_second_gpu_while_first_is_current():
    case = make_case(batch=5, steps=6, input_size=9, hidden_size=12, proj_size=5)
    with torch.cuda.device(0):
        input_on_1 = case["input"].to("cuda:1", torch.float32)
        h0 = case["h0"].to("cuda:1", torch.float32)
        c0 = case["c0"].to("cuda:1", torch.float32)
        weights = [
            case[n].to("cuda:1", torch.float32) for n in ("w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
        ]
        output, h_n, c_n = lstm_ext.lstm_layer(input_on_1, case["batch_sizes"], h0, c0, *weights)
        assert output.device == h_n.device == c_n.device == torch.device("cuda:1")
        assert_close_all(
            run_layer(case, "cuda:1", torch.float32),
            run_layer(case, "cpu", torch.float32),
            torch.float32,
            "cuda:1 vs CPU",
        )


@requires_gpu
def test_opcheck_on_cuda():
    case = make_case(batch=3, steps=4, input_size=5, hidden_size=8, proj_size=3)
    args = [
        case["input"],
        case["batch_sizes"],
        case["h0"],
        case["c0"],
        case["w_ih"],
        case["w_hh"],
        case["b_ih"],
        case["b_hh"],
        case["w_hr"],
    ]
    args = [
        a.cuda().requires_grad_() if a is not None and a.is_floating_point() else a for a in args
    ]
    torch.library.opcheck(torch.ops.lstm_ext.lstm_layer_forward, (*args, True, True))


@requires_gpu
def test_empty_batch_and_no_steps_on_cuda():
    w_ih = torch.randn(16, 3, device="cuda")
    w_hh = torch.randn(16, 4, device="cuda")
    output, (h_n, c_n) = lstm_ext.forward(torch.randn(0, 5, 3, device="cuda"), None, w_ih, w_hh)
    assert output.shape == (0, 5, 4) and h_n.shape == (0, 4) and c_n.shape == (0, 4)
    h0, c0 = torch.randn(2, 4, device="cuda"), torch.randn(2, 4, device="cuda")
    output, (h_n, c_n) = lstm_ext.forward(torch.randn(2, 0, 3, device="cuda"), (h0, c0), w_ih, w_hh)
    assert output.shape == (2, 0, 4)
    assert torch.equal(h_n, h0) and torch.equal(c_n, c0)


@requires_gpu
def test_gpu_profile_counts_both_implementations_kernels():
    from benchmarks.gpu_profile import profile_size

    rows = profile_size(
        batch=3, steps=5, input_size=8, hidden_size=16, proj_size=4, dtype=torch.float32
    )
    assert [(row["implementation"], row["mode"]) for row in rows] == [
        (name, mode) for name in ("nn.LSTM", "lstm_ext") for mode in ("forward", "forward+backward")
    ]
    for row in rows:
        # At least one kernel per step (the step kernel or cuDNN's cell), and time for them.
        assert row["launches"] >= 5 and row["busy_ms"] > 0, row
        assert (row["graph_replay_ms"] > 0) == (row["mode"] == "forward"), row
