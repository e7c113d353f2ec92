"""The persistent CUDA forward kernel (csrc/cuda/persistent_forward.cu), run with
LSTM_EXT_CUDA_PERSISTENT=1: against the CPU operators in float64, the reference and nn.LSTM on
cuDNN in true float32 (conftest's full_precision_float32); packed, bidirectional, projected, at
odd sizes and on either side of this device's on-chip budget, on a side stream and inside CUDA
graph capture. Every test checks that the persistent kernel really ran (or really did not)
through torch.ops.lstm_ext.cuda_persistent_launches. All skip without a GPU."""

import contextlib

import pytest
import torch
from test_cuda import assert_close_all, make_case, run_layer, run_nn_lstm
from torch.nn.utils.rnn import pack_padded_sequence

import lstm_ext
from tolerances import assert_close_scaled

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")

FLOAT32 = 4
STEPS_PER_LAUNCH = 100  # kPersistentStepsPerLaunch (persistent_forward.h)


@pytest.fixture
def persistent(monkeypatch):
    """Turns the persistent kernel on for the test (it is off by default)."""
    monkeypatch.setenv("LSTM_EXT_CUDA_PERSISTENT", "1")


def launches():
    return torch.ops.lstm_ext.cuda_persistent_launches()


@contextlib.contextmanager
def expect_launches(count):
    """Asserts that the block makes exactly `count` persistent launches."""
    before = launches()
    yield
    torch.cuda.synchronize()
    assert launches() - before == count, (
        f"{launches() - before} persistent launches, expected {count}"
    )


def fits_this_device(hidden_size, projection_size=0):
    recurrent_size = projection_size or hidden_size
    answer = torch.ops.lstm_ext.cuda_persistent_plan(
        hidden_size,
        recurrent_size,
        projection_size,
        FLOAT32,
        *torch.ops.lstm_ext.cuda_persistent_budget(),
    )
    return answer[0] == 0


def edge_of_this_device(projection_of):
    """The largest H whose layer fits this device (binary search; fitting is monotone in H)."""
    low, high = 1, 1 << 14
    assert fits_this_device(low, projection_of(low)) and not fits_this_device(
        high, projection_of(high)
    )
    while high - low > 1:
        middle = (low + high) // 2
        if fits_this_device(middle, projection_of(middle)):
            low = middle
        else:
            high = middle
    return low


# (H, P): odd sizes, one unit per CTA, more units per CTA than warps, with projections.
SIZES = [(1, 0), (17, 0), (17, 5), (1000, 0), (1000, 250), (64, 48)]


def case_of(hidden_size, proj_size, packed, batch=5, steps=6, seed=0):
    return make_case(
        batch=batch,
        steps=steps,
        input_size=16,
        hidden_size=hidden_size,
        proj_size=proj_size,
        packed=packed,
        seed=seed,
    )


def test_plan_of_this_device_takes_the_odd_sizes():
    for hidden_size, proj_size in SIZES:
        assert fits_this_device(hidden_size, proj_size), (hidden_size, proj_size)


@pytest.mark.parametrize("hidden_size,proj_size", SIZES)
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_matches_cpu_in_float64(persistent, hidden_size, proj_size, packed, reverse):
    """Outputs and every gradient (the backward reads the kernel's saved activations) against
    the CPU operators in float64, at the CUDA float32 tolerance."""
    case = case_of(hidden_size, proj_size, packed)
    with expect_launches(1):
        actual = run_layer(case, "cuda", torch.float32, reverse)
    expected = run_layer(case, "cpu", torch.float64, reverse)
    assert_close_all(actual, expected, torch.float32, f"persistent H={hidden_size} P={proj_size}")


@pytest.mark.parametrize("hidden_size,proj_size", SIZES)
@pytest.mark.parametrize("packed", [False, True])
def test_matches_cudnn_both_directions(persistent, hidden_size, proj_size, packed):
    case = case_of(hidden_size, proj_size, packed, seed=1)
    expected_forward, expected_reverse, expected_grad_input = run_nn_lstm(
        case, "cuda", torch.float32
    )
    with expect_launches(2):
        forward = run_layer(case, "cuda", torch.float32)
        reverse = run_layer(case, "cuda", torch.float32, reverse=True)
    assert_close_all(forward, expected_forward, torch.float32, "forward vs cuDNN")
    assert_close_all(reverse, expected_reverse, torch.float32, "reverse vs cuDNN")
    assert_close_scaled(
        forward[1][0] + reverse[1][0],
        expected_grad_input,
        torch.float32,
        "cuda",
        lambda m: f"input gradient vs cuDNN: {m}",
    )


def to_cuda_float32(value):
    """A tensor, a tuple of them or None, in float32 on the GPU."""
    if isinstance(value, tuple):
        return tuple(to_cuda_float32(v) for v in value)
    return value.cuda().float() if value is not None else None


@pytest.mark.parametrize("proj_size", [0, 7])
def test_matches_the_reference(persistent, proj_size):
    generator = torch.Generator().manual_seed(2)
    batch, steps, input_size, hidden_size = 4, 9, 12, 33

    def rand(*shape):
        return torch.rand(shape, generator=generator, dtype=torch.float64) - 0.5

    recurrent_size = proj_size or hidden_size
    args = [
        rand(batch, steps, input_size),
        (rand(batch, recurrent_size), rand(batch, hidden_size)),
        rand(4 * hidden_size, input_size),
        rand(4 * hidden_size, recurrent_size),
        rand(4 * hidden_size),
        rand(4 * hidden_size),
        rand(proj_size, hidden_size) if proj_size else None,
    ]
    expected_output, (expected_h, expected_c) = lstm_ext.reference.lstm_forward(*args)
    input, (h0, c0), *weights = [to_cuda_float32(a) for a in args]
    with expect_launches(1):
        output, (h_n, c_n) = lstm_ext.forward(input, (h0, c0), *weights)
    for name, actual, expected in (
        ("output", output, expected_output),
        ("h_n", h_n, expected_h),
        ("c_n", c_n, expected_c),
    ):
        assert_close_scaled(
            actual.cpu(),
            expected,
            torch.float32,
            "cuda",
            lambda m, name=name: f"{name} vs the reference: {m}",
        )


@pytest.mark.parametrize("proj_size", [0, 24])
def test_bidirectional_multilayer_packed_module_against_cudnn(persistent, proj_size):
    torch.manual_seed(3)
    module = torch.nn.LSTM(
        20, 48, num_layers=2, bidirectional=True, proj_size=proj_size, device="cuda"
    )
    ours = lstm_ext.LSTM.from_torch(module)
    lengths = torch.tensor([11, 9, 9, 4, 1])
    padded = torch.randn(11, 5, 20, device="cuda")
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    expected, (expected_h, expected_c) = module(packed)
    with expect_launches(4):  # two layers, two directions
        actual, (h_n, c_n) = ours(packed)
    for name, a, e in (
        ("output", actual.data, expected.data),
        ("h_n", h_n, expected_h),
        ("c_n", c_n, expected_c),
    ):
        assert_close_scaled(
            a.detach().cpu(),
            e.detach().cpu(),
            torch.float32,
            "cuda",
            lambda m, name=name: f"module {name} vs cuDNN: {m}",
        )


@pytest.mark.parametrize("projection", ["none", "quarter"])
def test_either_side_of_the_on_chip_budget(persistent, projection):
    """The largest H that fits this device runs the persistent kernel; one more unit does not
    fit and runs the per-step path. Both match the CPU."""
    projection_of = (lambda h: 0) if projection == "none" else (lambda h: h // 4)
    edge = edge_of_this_device(projection_of)
    for hidden_size, expected_launches in ((edge, 1), (edge + 1, 0)):
        case = make_case(
            batch=3,
            steps=3,
            input_size=8,
            hidden_size=hidden_size,
            proj_size=projection_of(hidden_size),
            packed=True,
            seed=4,
        )
        with expect_launches(expected_launches):
            actual = run_layer(case, "cuda", torch.float32)
        assert_close_all(
            actual,
            run_layer(case, "cpu", torch.float64),
            torch.float32,
            f"H={hidden_size} at the budget's edge {edge}",
        )


def test_a_long_layer_runs_as_several_launches(persistent):
    steps = 2 * STEPS_PER_LAUNCH + 17
    case = make_case(
        batch=3, steps=steps, input_size=8, hidden_size=32, proj_size=12, packed=True, seed=5
    )
    with expect_launches(3):
        actual = run_layer(case, "cuda", torch.float32, reverse=True)
    assert_close_all(
        actual, run_layer(case, "cpu", torch.float64, reverse=True), torch.float32, f"T={steps}"
    )


def layer_args(case, reverse=False):
    suffix = "_reverse" if reverse else ""
    names = ("h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")
    tensors = [case["input"]] + [case[name + suffix] for name in names]
    return [t.cuda().float() if t is not None else None for t in tensors]


def test_inside_cuda_graph_capture(persistent):
    """Captured after a warm-up (which also queries the device once), replayed on new data: the
    replay gives the eager call's results on that data (cuBLAS may pick another GEMM kernel
    under capture, so not necessarily the same bits)."""
    case = make_case(batch=6, steps=7, input_size=10, hidden_size=40, proj_size=16, seed=6)
    static = layer_args(case)
    batch_sizes = case["batch_sizes"]
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        lstm_ext.lstm_layer(static[0], batch_sizes, *static[1:])
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with expect_launches(1), torch.cuda.graph(graph):
        captured = lstm_ext.lstm_layer(static[0], batch_sizes, *static[1:])
    static[0].copy_(torch.randn_like(static[0]))
    graph.replay()
    with expect_launches(1):
        eager = lstm_ext.lstm_layer(static[0], batch_sizes, *static[1:])
    for name, a, e in zip(("output", "h_n", "c_n"), captured, eager):
        assert_close_scaled(
            a.cpu(),
            e.cpu(),
            torch.float32,
            "cuda",
            lambda m, name=name: f"replayed {name} vs eager: {m}",
        )


def test_runs_on_the_current_non_default_stream(persistent):
    case = make_case(batch=16, steps=12, input_size=32, hidden_size=64, proj_size=24, seed=7)
    expected = run_layer(case, "cpu", torch.float64)
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream), expect_launches(1):
        torch.cuda._sleep(200_000_000)
        actual = run_layer(case, "cuda", torch.float32)
    assert_close_all(actual, expected, torch.float32, "side stream vs CPU")


def test_deterministic_run_to_run(persistent):
    case = make_case(batch=32, steps=16, input_size=48, hidden_size=96, proj_size=40, seed=8)
    with expect_launches(2):
        first = run_layer(case, "cuda", torch.float32, reverse=True)
        second = run_layer(case, "cuda", torch.float32, reverse=True)
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        assert torch.equal(a, b)


def test_off_by_default_and_for_other_dtypes(monkeypatch):
    case = make_case(batch=4, steps=5, input_size=8, hidden_size=16, seed=9)
    monkeypatch.delenv("LSTM_EXT_CUDA_PERSISTENT", raising=False)
    with expect_launches(0):
        run_layer(case, "cuda", torch.float32)
    monkeypatch.setenv("LSTM_EXT_CUDA_PERSISTENT", "1")
    with expect_launches(0):
        for dtype in (torch.float64, torch.float16, torch.bfloat16):
            run_layer(case, "cuda", dtype)
