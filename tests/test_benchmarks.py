"""benchmarks/bench_lstm.py: argument parsing, a tiny run's JSON and PNG, refusal of a wrong
lstm_ext, and the script entry point."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lstm_ext
from benchmarks.bench_lstm import DEFAULT_OUT, main, parse_args
from benchmarks.configs import PRESETS, LstmSize
from benchmarks.implementations import Candidate

REPO = Path(__file__).resolve().parent.parent
TINY = ["--batch", "3", "--steps", "4", "--input-size", "5", "--hidden-size", "6",
        "--min-run-time", "0.01", "--device", "cpu", "--compile-max-steps", "0"]
IMPLEMENTATIONS = ["lstm_ext", "torch.nn.LSTM", "reference", "compiled reference"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_parses_to_its_sizes(preset):
    args = parse_args(["--preset", preset])
    assert args.preset_name() == preset
    assert args.sizes() == list(PRESETS[preset].sizes)
    assert (args.device, args.dtype, args.out) == ("auto", "float32", DEFAULT_OUT)


def test_preset_sizes_are_those_the_issue_names():
    assert PRESETS["fastrnns"].sizes == (LstmSize(64, 100, 512, 512),)
    assert PRESETS["proj"].sizes == (LstmSize(64, 100, 512, 1024, 256),)
    assert [size.batch for size in PRESETS["small-batch"].sizes] == [1, 2, 4, 8]
    assert all(size.packed for size in PRESETS["packed"].sizes)
    full = PRESETS["full"].sizes
    assert {size.proj_size > 0 for size in full} == {False, True}
    assert len({(s.batch, s.steps, s.hidden_size) for s in full}) == 18
    assert parse_args([]).preset_name() == "quick"


def test_options_parse():
    args = parse_args(["--device", "cpu", "--dtype", "bfloat16", "--out", "/tmp/x",
                       "--threads", "3", "--min-run-time", "0.5", "--no-plot", "--tf32"])
    assert (args.device, args.dtype, args.out, args.threads, args.min_run_time, args.no_plot,
            args.tf32) == ("cpu", "bfloat16", Path("/tmp/x"), 3, 0.5, True, True)


def test_size_arguments_make_a_custom_grid():
    args = parse_args(["--preset", "fastrnns", "--batch", "1,8", "--hidden-size", "32,64",
                       "--proj-size", "16", "--packed"])
    assert args.preset_name() == "custom"
    steps, inputs = PRESETS["quick"].sizes[0].steps, PRESETS["quick"].sizes[0].input_size
    assert args.sizes() == [LstmSize(b, steps, inputs, h, 16, packed=True)
                            for b in (1, 8) for h in (32, 64)]


@pytest.mark.parametrize("argv", [["--dtype", "int8"], ["--device", "tpu"], ["--threads", "0"],
                                  ["--min-run-time", "-1"], ["--batch", "2,x"],
                                  ["--hidden-size", "8", "--proj-size", "8"],
                                  ["--preset", "huge"], ["--steps", "0"]])
def test_bad_arguments_exit_with_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_packed_lengths_and_flops():
    size = LstmSize(5, 8, 3, 4, 2, packed=True)
    assert size.lengths() == [8, 7, 5, 4, 2]
    assert size.rows() == 26
    assert size.forward_flops() == 8 * 26 * 4 * (3 + 2) + 2 * 26 * 2 * 4
    assert size.gemm_shape() == (26, 5, 16)


def _run(argv, tmp_path, capsys, candidate=None):
    status = main([*argv, "--out", str(tmp_path)], candidate=candidate)
    return status, capsys.readouterr()


def test_tiny_run_writes_table_json_and_plot(tmp_path, capsys):
    status, captured = _run([*TINY, "--proj-size", "0,2"], tmp_path, capsys)
    assert status == 0
    payload = json.loads((tmp_path / "custom-cpu-float32.json").read_text())
    assert payload["environment"]["device"] == "cpu"
    assert payload["environment"]["torch"] == torch.__version__
    assert payload["environment"]["threads"] == torch.get_num_threads()
    results = payload["results"]
    assert [(r["size"], r["mode"], r["implementation"]) for r in results] == [
        (size, mode, name) for size in ("B=3 T=4 I=5 H=6", "B=3 T=4 I=5 H=6 P=2")
        for mode in ("forward", "forward+backward") for name in IMPLEMENTATIONS]
    for result in results:
        if result["implementation"] == "compiled reference":
            assert result["status"] == "skipped"
            continue
        assert result["status"] == "ok" and result["median_s"] > 0
        factor = 3 if result["mode"] == "forward+backward" else 1
        assert result["gflop"] == pytest.approx(factor * result["forward_gflop"])
        assert result["gflops"] == pytest.approx(result["gflop"] / result["median_s"])
        gemm = payload["gemm"][result["size"]]
        assert result["gemm_fraction"] == pytest.approx(result["gflops"] / gemm["gflops"])
        # The denominator is the faster of ATen's mm and oneDNN's matmul, both measured before
        # and after the size's implementations.
        assert gemm["timings"] == 2
        assert set(gemm["engine_gflops"]) == (
            {"mm", "onednn"} if torch.backends.mkldnn.is_available() else {"mm"})
        assert gemm["gflops"] == max(gemm["engine_gflops"].values())
        assert gemm["engine_gflops"][gemm["engine"]] == gemm["gflops"]
        base = next(r for r in results if (r["size"], r["mode"], r["implementation"]) ==
                    (result["size"], result["mode"], "lstm_ext"))
        expected = None if result is base else result["median_s"] / base["median_s"]
        assert result["lstm_ext_speedup"] == pytest.approx(expected)
    assert (tmp_path / "custom-cpu-float32.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for text in ("lstm_ext speed-up", "% of GEMM", "B=3 T=4 I=5 H=6 P=2", "torch.nn.LSTM"):
        assert text in captured.out


def test_packed_run_times_packed_and_padded(tmp_path, capsys):
    status, _ = _run([*TINY, "--packed", "--proj-size", "2", "--no-plot", "--dtype", "float64"],
                     tmp_path, capsys)
    assert status == 0
    payload = json.loads((tmp_path / "custom-cpu-float64.json").read_text())
    assert {r["implementation"] for r in payload["results"] if r["status"] == "ok"} == {
        "lstm_ext packed", "torch.nn.LSTM packed", "lstm_ext padded", "torch.nn.LSTM padded"}
    assert not (tmp_path / "custom-cpu-float64.png").exists()


def test_compiled_reference_is_timed_where_allowed(tmp_path, capsys):
    argv = [a if a != "0" else "2" for a in TINY]  # --compile-max-steps 2 ...
    argv[argv.index("--steps") + 1] = "2"
    status, _ = _run([*argv, "--no-plot", "--hidden-size", "4"], tmp_path, capsys)
    assert status == 0
    results = json.loads((tmp_path / "custom-cpu-float32.json").read_text())["results"]
    compiled = [r for r in results if r["implementation"] == "compiled reference"]
    assert [r["status"] for r in compiled] == ["ok", "ok"]


def _scaled_forward(*args):
    output, states = lstm_ext.forward(*args)
    return output * 1.01, states


class _DoubleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return 2 * grad


def _wrong_backward_forward(*args):
    output, states = lstm_ext.forward(*args)
    return _DoubleGradient.apply(output), states


def _shifted_layer(*args, **kwargs):
    output, h_n, c_n = lstm_ext.lstm_layer(*args, **kwargs)
    return output + 1e-2, h_n, c_n


@pytest.mark.parametrize("candidate, extra, what", [
    (Candidate(forward=_scaled_forward), [], "output (inference)"),
    (Candidate(forward=_wrong_backward_forward), [], "gradient of input"),
    (Candidate(layer=_shifted_layer), ["--packed"], "lstm_ext packed gives a wrong output"),
])
def test_a_wrong_result_is_refused(candidate, extra, what, tmp_path, capsys):
    status, captured = _run([*TINY, *extra], tmp_path, capsys, candidate=candidate)
    assert status == 1
    assert "Refusing to benchmark a wrong result" in captured.err and what in captured.err
    assert list(tmp_path.iterdir()) == []


def test_runs_as_a_script(tmp_path):
    completed = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_lstm.py"), *TINY, "--no-plot",
         "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "lstm_ext speed-up" in completed.stdout
    assert (tmp_path / "custom-cpu-float32.json").exists()


def test_gpu_profile_says_what_it_needs_without_a_gpu(monkeypatch):
    from benchmarks import gpu_profile
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        gpu_profile.main(["--sizes", "1,2,3,4,0"])
