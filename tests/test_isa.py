"""The ISA levels of the CPU microkernels (lstm_ext/isa.py, csrc/cpu/isa.cpp): which level runs,
how LSTM_EXT_CPU_ISA and select_cpu_isa cap it, and that the levels differ in rounding only."""

import os

import pytest
import torch
from conftest import CPU_ISAS
from fresh_python import run_python

import lstm_ext


def test_the_best_supported_level_runs_by_default():
    supported = lstm_ext.supported_cpu_isas()
    assert supported[0] == CPU_ISAS[0]
    assert all(name in CPU_ISAS for name in supported)
    if "LSTM_EXT_CPU_ISA" not in os.environ:
        assert lstm_ext.cpu_isa() == supported[-1]


@pytest.mark.parametrize("cap", CPU_ISAS)
def test_environment_variable_caps_the_level(cap):
    supported = lstm_ext.supported_cpu_isas()
    expected = cap if cap in supported else supported[-1]
    result = run_python("import lstm_ext; print(lstm_ext.cpu_isa())", LSTM_EXT_CPU_ISA=cap.upper())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


def test_default_names_the_baseline_everywhere():
    result = run_python("import lstm_ext; print(lstm_ext.cpu_isa())", LSTM_EXT_CPU_ISA="default")
    assert result.stdout.strip() == CPU_ISAS[0], result.stderr


def test_an_unknown_level_is_refused_with_the_known_ones():
    code = (
        "import torch, lstm_ext\n"
        "try:\n"
        "    lstm_ext.forward(torch.randn(1, 2, 3), None, torch.randn(8, 3), torch.randn(8, 2))\n"
        "except RuntimeError as error:\n"
        "    print(error)\n"
    )
    result = run_python(code, LSTM_EXT_CPU_ISA="sse9")
    assert (
        f"LSTM_EXT_CPU_ISA must be one of {', '.join(CPU_ISAS)} (or unset), got 'sse9'"
        in result.stdout
    ), result.stdout + result.stderr
    with pytest.raises(RuntimeError, match="got 'sse9'"):
        lstm_ext.select_cpu_isa("sse9")


def test_selecting_caps_at_the_best_supported_level(cpu_isa):
    previous = lstm_ext.cpu_isa()
    try:
        assert lstm_ext.select_cpu_isa(CPU_ISAS[-1]) == lstm_ext.supported_cpu_isas()[-1]
        assert lstm_ext.select_cpu_isa(cpu_isa) == cpu_isa == lstm_ext.cpu_isa()
    finally:
        lstm_ext.select_cpu_isa(previous)


def layer_results(batch, hidden_size, proj_size):
    """Output, states and gradients of one layer on fixed data, at the level in use."""
    torch.manual_seed(0)
    module = lstm_ext.LSTM(19, hidden_size, proj_size=proj_size)
    x = torch.randn(7, batch, 19, requires_grad=True)
    output, (h_n, c_n) = module(x)
    loss = output.square().sum() + h_n.sum() + c_n.square().sum()
    grads = torch.autograd.grad(loss, [x, *module.parameters()])
    return [t.detach() for t in (output, h_n, c_n, *grads)]


# Steps of 1-4 rows (register-tiled GEMMs and dot products, partial vectors of 260 columns) and
# of many rows (oneDNN's GEMM), with and without the projection.
LEVEL_CASES = [(1, 260, 0), (3, 37, 11), (70, 130, 0)]


@pytest.mark.parametrize("batch, hidden_size, proj_size", LEVEL_CASES)
def test_levels_differ_in_rounding_only(batch, hidden_size, proj_size):
    """Every supported level gives nn.LSTM's results within float32 rounding of each other: the
    vector widths sum in other orders, and the baseline has no fused multiply-add, so bitwise
    equality between levels is not claimed (within one level it is: see test_repeatable)."""
    previous = lstm_ext.cpu_isa()
    try:
        by_level = {}
        for level in lstm_ext.supported_cpu_isas():
            lstm_ext.select_cpu_isa(level)
            by_level[level] = layer_results(batch, hidden_size, proj_size)
    finally:
        lstm_ext.select_cpu_isa(previous)
    first, *others = by_level.values()
    for results in others:
        for actual, expected in zip(results, first):
            scale = max(1.0, expected.abs().max().item())
            torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5 * scale)


def test_levels_run_their_own_kernels():
    """The baseline has no fused multiply-add: a step of dot products over 260 columns rounds
    differently from the FMA levels, which shows that selecting a level changes the code."""
    supported = lstm_ext.supported_cpu_isas()
    if len(supported) < 2:
        pytest.skip("the processor runs one ISA level only (ARM64: NEON)")
    previous = lstm_ext.cpu_isa()
    try:
        lstm_ext.select_cpu_isa(supported[0])
        baseline = layer_results(1, 260, 0)[0]
        lstm_ext.select_cpu_isa(supported[-1])
        best = layer_results(1, 260, 0)[0]
    finally:
        lstm_ext.select_cpu_isa(previous)
    assert not torch.equal(baseline, best)


def test_repeatable(cpu_isa):
    first = layer_results(3, 37, 11)
    second = layer_results(3, 37, 11)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
