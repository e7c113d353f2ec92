"""The CPU's float32 whole-layer kernels (csrc/cpu/layer_forward.cpp, layer_backward.cpp) on the
shapes that pick their branches: steps of 1-4 rows (the register-tiled GEMMs, and the dot
products over W_hh as stored) and more (brgemm), items walked forward and in reverse, one
thread and two (hidden units and projection columns split into work items that the threads
claim, with ragged last items, and steps of many rows into bands of rows, or batch rows split
over threads), several input-projection chunks or the driver's projection of all rows first,
packed batches in both directions, with and without saving activations. Each is compared with
torch.nn.LSTM (float32: outputs, states and every gradient) or, through the operator, with the
float64 result of the same operator."""

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence

import lstm_ext

TOLERANCE = dict(rtol=2e-5, atol=2e-5)

# Every test runs at each ISA level of the microkernels that the processor supports.
pytestmark = pytest.mark.usefixtures("cpu_isa")


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


# The GEMMs after the backward loop: lstm_ext's parallel_gemm or ATen's mm (by default the one
# faster on this processor; LSTM_EXT_CPU_GEMM picks one).
@pytest.fixture(params=["lstm_ext", "aten"], ids=["lstm_ext-gemm", "aten-gemm"])
def cpu_gemm(request, monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CPU_GEMM", request.param)
    return request.param


def make_modules(input_size, hidden_size, proj_size, bidirectional=False):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(
        input_size, hidden_size, proj_size=proj_size, bidirectional=bidirectional
    )
    return reference, lstm_ext.LSTM.from_torch(reference)


def gradients(module, output, state, leaves):
    """Gradients of a fixed random function of (output, h_n, c_n) by the leaves and weights."""
    generator = torch.Generator().manual_seed(1)
    loss = sum(
        (tensor * torch.randn(tensor.shape, generator=generator)).sum()
        for tensor in (output, *state)
    )
    return torch.autograd.grad(loss, [*leaves, *module.parameters()])


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 17])
# Steps of 1-4 rows read W_hh and W_hr as stored, through dot products over their rows (of
# 19-400 floats), where the 9 steps are fewer than the vectors per dot product (rows of 400 at
# every level, of 130 below AVX-512) or W_hh outgrows a core's L2 (H=400: 2.6 MB), and transpose
# them into panels elsewhere (H=37, 48); steps of up to 16 rows whose weights outgrow half an L2
# per thread (H=400) walk their items in reverse on every other step.
@pytest.mark.parametrize(
    "hidden_size,proj_size", [(37, 0), (130, 0), (130, 19), (48, 33), (400, 0), (300, 220)]
)
def test_inference_matches_nn_lstm(threads, batch, hidden_size, proj_size):
    reference, ext = make_modules(23, hidden_size, proj_size)
    x = torch.randn(9, batch, 23)
    hx = (torch.randn(1, batch, proj_size or hidden_size), torch.randn(1, batch, hidden_size))
    with torch.no_grad():
        expected = reference(x, hx)
        actual = ext(x, hx)
    torch.testing.assert_close(actual, expected, **TOLERANCE)


@pytest.mark.parametrize("batch", [1, 2, 3, 4, 5, 17])
# Steps of 1-4 rows read W_hh and W_hr as stored, through dot products over their rows (of
# 19-400 floats), where the 9 steps are fewer than the vectors per dot product (rows of 400 at
# every level, of 130 below AVX-512) or W_hh outgrows a core's L2 (H=400: 2.6 MB), and transpose
# them into panels elsewhere (H=37, 48); steps of up to 16 rows whose weights outgrow half an L2
# per thread (H=400) walk their items in reverse on every other step.
@pytest.mark.parametrize(
    "hidden_size,proj_size", [(37, 0), (130, 0), (130, 19), (48, 33), (400, 0), (300, 220)]
)
def test_training_matches_nn_lstm(threads, cpu_gemm, batch, hidden_size, proj_size):
    reference, ext = make_modules(23, hidden_size, proj_size)
    x = torch.randn(9, batch, 23, requires_grad=True)
    h0 = torch.randn(1, batch, proj_size or hidden_size, requires_grad=True)
    c0 = torch.randn(1, batch, hidden_size, requires_grad=True)
    expected_output, expected_state = reference(x, (h0, c0))
    actual_output, actual_state = ext(x, (h0, c0))
    torch.testing.assert_close(actual_output, expected_output, **TOLERANCE)
    torch.testing.assert_close(actual_state, expected_state, **TOLERANCE)
    expected_grads = gradients(reference, expected_output, expected_state, (x, h0, c0))
    actual_grads = gradients(ext, actual_output, actual_state, (x, h0, c0))
    torch.testing.assert_close(actual_grads, expected_grads, rtol=1e-4, atol=1e-4)


def assert_packed_matches(reference, ext, packed, grad, hx=None):
    """ext's outputs, states and (with grad) gradients on a PackedSequence are reference's."""
    packed.data.requires_grad_(grad)
    with torch.set_grad_enabled(grad):
        expected_output, expected_state = reference(packed, hx)
        actual_output, actual_state = ext(packed, hx)
    torch.testing.assert_close(actual_output.data, expected_output.data, **TOLERANCE)
    torch.testing.assert_close(actual_state, expected_state, **TOLERANCE)
    if grad:
        expected_grads = gradients(reference, expected_output.data, expected_state, [packed.data])
        actual_grads = gradients(ext, actual_output.data, actual_state, [packed.data])
        torch.testing.assert_close(actual_grads, expected_grads, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_packed_bidirectional_matches_nn_lstm(threads, cpu_gemm, grad):
    reference, ext = make_modules(11, 70, 0, bidirectional=True)
    lengths = [13, 13, 9, 7, 7, 4, 2, 1]
    packed = pack_sequence([torch.randn(n, 11) for n in lengths], enforce_sorted=False)
    assert_packed_matches(reference, ext, packed, grad)


# Steps of 128 rows or more split the forward's work items into bands of at least 64 rows: 200
# sequences make three bands (66, 67 and 67 rows at the first step; the last two steps have
# fewer rows than bands). In reverse, sequences start at every step, so bands hold carried rows,
# starting rows or both. With H = 20 an input-projection chunk spans several steps (each item
# projects its band of each), with H = 170 it is one step.
@pytest.mark.parametrize("hidden_size", [20, 170])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_row_bands_of_large_packed_steps_match_nn_lstm(threads, hidden_size, grad):
    reference, ext = make_modules(9, hidden_size, 0, bidirectional=True)
    generator = torch.Generator().manual_seed(2)
    lengths = [14, 13] + [12] * 58 + torch.randint(1, 12, (140,), generator=generator).tolist()
    packed = pack_sequence([torch.randn(n, 9) for n in lengths], enforce_sorted=False)
    hx = (torch.randn(2, 200, hidden_size), torch.randn(2, 200, hidden_size))
    assert_packed_matches(reference, ext, packed, grad, hx)


# Steps of 8 rows or more per thread whose weights fit in a core's L2 have each thread run a
# share of the batch rows alone (H=40: the shares carry equal rows over all steps, 70 and 130
# sequences of a packed batch); larger weights keep the threads on shared steps, split into
# bands of rows (H=400: 2.6 MB of W_hh).
@pytest.mark.parametrize("hidden_size", [40, 400])
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_large_steps_split_rows_or_columns_match_nn_lstm(threads, hidden_size, grad):
    reference, ext = make_modules(9, hidden_size, 0, bidirectional=True)
    generator = torch.Generator().manual_seed(3)
    lengths = [5] * 70 + torch.randint(1, 5, (130,), generator=generator).tolist()
    packed = pack_sequence([torch.randn(n, 9) for n in lengths], enforce_sorted=False)
    assert_packed_matches(reference, ext, packed, grad)


# The driver projects the input of all steps through ATen before the layer kernel, with or
# without biases: for steps of at most 16 rows with a W_ih of 512 KB or more (4 * 180 x 200
# floats); and on Intel processors, where MKL is the GEMM of that size (15 x 33 rows x 4 * 360 x
# 400, over 2^28 multiply-adds), for steps of 32 rows or more whose W_ih panels stream from
# beyond L2 (over 1 MB per thread), in inference too (elsewhere the kernel projects those chunk
# by chunk: both must match).
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "steps,batch,input_size,hidden_size,proj_size",
    [(7, 1, 200, 180, 0), (7, 16, 200, 180, 0), (15, 33, 400, 360, 0), (15, 33, 400, 360, 72)],
    ids=["B=1", "B=16", "B=33", "B=33-projection"],
)
@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_input_projected_first_matches_nn_lstm(
    threads, bias, steps, batch, input_size, hidden_size, proj_size, grad
):
    torch.manual_seed(0)
    reference = torch.nn.LSTM(input_size, hidden_size, bias=bias, proj_size=proj_size)
    ext = lstm_ext.LSTM.from_torch(reference)
    x = torch.randn(steps, batch, input_size, requires_grad=grad)
    with torch.set_grad_enabled(grad):
        expected_output, expected_state = reference(x)
        actual_output, actual_state = ext(x)
    torch.testing.assert_close(actual_output, expected_output, **TOLERANCE)
    torch.testing.assert_close(actual_state, expected_state, **TOLERANCE)
    if grad:
        expected_grads = gradients(reference, expected_output, expected_state, [x])
        actual_grads = gradients(ext, actual_output, actual_state, [x])
        torch.testing.assert_close(actual_grads, expected_grads, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("proj_size", [0, 24])
def test_many_projection_chunks_match_float64(threads, reverse, proj_size):
    # 512 KB of gates per chunk: 4 * 130 * 4 bytes per row makes 252 rows per chunk, so 40
    # steps of 60 rows take eight chunks of five steps.
    torch.manual_seed(0)
    hidden_size, input_size, batch, steps = 130, 16, 60, 40
    recurrent_size = proj_size or hidden_size
    args = [
        torch.randn(steps * batch, input_size),
        torch.full((steps,), batch),
        torch.randn(batch, recurrent_size),
        torch.randn(batch, hidden_size),
        torch.randn(4 * hidden_size, input_size) * 0.2,
        torch.randn(4 * hidden_size, recurrent_size) * 0.2,
        torch.randn(4 * hidden_size),
        torch.randn(4 * hidden_size),
        torch.randn(proj_size, hidden_size) * 0.2 if proj_size else None,
    ]
    op = torch.ops.lstm_ext.lstm_layer_forward
    as_double = [a.double() if a is not None and a.is_floating_point() else a for a in args]
    expected = op(*as_double, reverse, False)[:3]
    for save_for_backward in (False, True):
        actual = op(*args, reverse, save_for_backward)[:3]
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e.float(), **TOLERANCE)


# gemm_block splits brgemm calls deeper than 1024 into equal chunks and B blocks over 128K
# floats into column blocks: 1100-deep input projections (chunks of 550 x 224 columns) and
# backward steps 4 * 960 deep (four chunks of 960 x 128). The weight panels are stored in those
# column blocks; with one thread, whose work items are a quarter of the hidden units, an item of
# 240 units takes two blocks of the 1100-deep W_ih (224 columns), of the 960-deep W_hh (128) and
# of the backward's 3840-deep one (128); with H = 720 and 3 rows, the backward's small GEMM runs
# over two blocks of the 2880-deep W_hh (128), and the forward's steps read the (large) W_hh as
# stored, through dot products. W_ih (1100 x 3840) is over 1 MB per thread, so with lstm_ext's
# GEMM the input projection runs on larger chunks in tiles of 256 rows (340 rows: two tiles);
# with ATen's, the driver projects all rows first. The GEMMs after the
# backward loop chunk their K (the rows: 2400 in three chunks of 800, which the bias gradient
# sums chunk by chunk) and split C over the threads by rows (the input gradient; dW = dG^T [x | h]
# with many rows) or by columns (dW_hr; dW with I = 1100, whose thread blocks straddle the two
# products).
@pytest.mark.parametrize("proj_size", [0, 40])
@pytest.mark.parametrize(
    "steps,batch,input_size,hidden_size",
    [(20, 17, 1100, 960), (5, 3, 16, 720), (40, 60, 16, 130)],
    ids=["deep", "deep-few-rows", "many-rows"],
)
def test_chunked_gemms_match_nn_lstm(
    threads, cpu_gemm, proj_size, steps, batch, input_size, hidden_size
):
    reference, ext = make_modules(input_size, hidden_size, proj_size)
    x = torch.randn(steps, batch, input_size, requires_grad=True)
    expected_output, expected_state = reference(x)
    actual_output, actual_state = ext(x)
    torch.testing.assert_close(actual_output, expected_output, **TOLERANCE)
    torch.testing.assert_close(actual_state, expected_state, **TOLERANCE)
    expected_grads = gradients(reference, expected_output, expected_state, [x])
    actual_grads = gradients(ext, actual_output, actual_state, [x])
    torch.testing.assert_close(actual_grads, expected_grads, rtol=1e-4, atol=1e-4)


# Two threads claim each step's work items (80 hidden units, 64 projection columns; at B=130,
# two bands of 65 rows of 64 units, 22 in the last item) as they get to them: which thread runs
# an item must not change a bit of the results.
@pytest.mark.parametrize("proj_size", [0, 136])
@pytest.mark.parametrize("batch,hidden_size", [(16, 520), (130, 150)], ids=["B=16", "B=130"])
def test_results_are_bitwise_repeatable(threads, proj_size, batch, hidden_size):
    _, ext = make_modules(24, hidden_size, proj_size)
    x = torch.randn(30, batch, 24, requires_grad=True)

    def run():
        output, state = ext(x)
        return (output, *state, *gradients(ext, output, state, [x]))

    first = run()
    for _ in range(4):
        for a, b in zip(first, run()):
            assert torch.equal(a, b)


# Steps of 1-4 rows run the register-tiled kernels, whose arithmetic does not depend on how the
# threads split the work: their results are the same, bit for bit, for any number of threads
# (larger steps run oneDNN's GEMM and, on Intel, MKL's, whose blocking follows the shapes that
# the thread count gives the calls: there the last bits may differ; see docs/performance.md).
@pytest.mark.parametrize("batch", [1, 2, 3, 4])
@pytest.mark.parametrize("hidden_size,proj_size", [(300, 0), (200, 70)])
def test_steps_of_few_rows_do_not_depend_on_the_thread_count(batch, hidden_size, proj_size):
    previous = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            _, ext = make_modules(24, hidden_size, proj_size, bidirectional=True)
            x = torch.randn(
                12, batch, 24, generator=torch.Generator().manual_seed(4), requires_grad=True
            )
            output, state = ext(x)
            results.append((output, *state, *gradients(ext, output, state, [x])))
    finally:
        torch.set_num_threads(previous)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


# The cell's activations clamp their arguments: a NaN must still reach the outputs as in nn.LSTM
# (it signals a diverged model), and an infinite pre-activation saturate its gate.
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("batch", [3, 64])
def test_nan_and_infinity_propagate_like_nn_lstm(threads, value, batch):
    reference, ext = make_modules(7, 48, 0)
    x = torch.randn(6, batch, 7)
    x[2, 1, 3] = value
    with torch.no_grad():
        expected = reference(x)
        actual = ext(x)
    torch.testing.assert_close(actual, expected, equal_nan=True, **TOLERANCE)
    assert actual[0].isnan().any() == (value != value)


# A gate whose pre-activation is -inf is exactly closed, as in nn.LSTM: sigmoid(-inf) is 0 (not
# the smallest normal float), so a c_n fed only through that gate is 0, and the gradients through
# the gate's derivative s (1 - s) take nn.LSTM's NaN or infinity where an input is infinite.
def test_a_gate_at_minus_infinity_is_closed_like_nn_lstm(threads):
    reference, ext = make_modules(5, 8, 0)
    with torch.no_grad():
        for module in (reference, ext):
            for parameter in module.parameters():
                parameter.zero_()
            module.bias_ih_l0[:8] = -float("inf")  # the input gate
            module.bias_hh_l0[16:24] = 1.0  # the cell gate: tanh(1)
        _, (_, c_n) = ext(torch.randn(3, 2, 5))
    assert torch.equal(c_n, torch.zeros_like(c_n))


@pytest.mark.parametrize("value", [float("inf"), -float("inf")])
def test_gradients_of_infinite_inputs_match_nn_lstm(threads, value):
    reference, ext = make_modules(7, 16, 0)
    x = torch.randn(5, 3, 7)
    x[1, 2, 4] = value
    grads = []
    for module in (reference, ext):
        leaf = x.clone().requires_grad_()
        output, state = module(leaf)
        grads.append(gradients(module, output, state, [leaf]))
    for expected, actual in zip(*grads):
        assert torch.equal(actual.isnan(), expected.isnan())
        assert torch.equal(actual.isinf(), expected.isinf())
        finite = expected.isfinite()
        torch.testing.assert_close(actual[finite], expected[finite], rtol=1e-4, atol=1e-4)


def test_unknown_cpu_gemm_is_refused(monkeypatch):
    monkeypatch.setenv("LSTM_EXT_CPU_GEMM", "mkl")
    _, ext = make_modules(5, 16, 0)
    x = torch.randn(3, 2, 5, requires_grad=True)
    with pytest.raises(RuntimeError, match="LSTM_EXT_CPU_GEMM must be lstm_ext or aten, got mkl"):
        ext(x)[0].sum().backward()
