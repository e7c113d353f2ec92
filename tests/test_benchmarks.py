"""benchmarks/bench_lstm.py: argument parsing, a tiny run's JSON and PNG, refusal of a wrong
lstm_ext, the script entry point, ISA caps, alternated timing, the summary and the plot."""

import json
import math
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import lstm_ext
from benchmarks import isa_cap, timing
from benchmarks.bench_lstm import DEFAULT_OUT, main, parse_args, result_record
from benchmarks.configs import PRESETS, LstmSize
from benchmarks.implementations import Candidate
from benchmarks.plot import is_grid, plot
from benchmarks.summary import summarize, summary_table

pytestmark = pytest.mark.usefixtures("benchmark_in_this_process")

REPO = Path(__file__).resolve().parent.parent
TINY = [
    "--batch",
    "3",
    "--steps",
    "4",
    "--input-size",
    "5",
    "--hidden-size",
    "6",
    "--min-run-time",
    "0.01",
    "--device",
    "cpu",
    "--compile-max-steps",
    "0",
]
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
    assert PRESETS["small-batch"].sizes == tuple(
        LstmSize(b, 100, h, h) for h in (256, 512, 1024) for b in (1, 2, 4, 8)
    )
    assert all(size.packed for size in PRESETS["packed"].sizes)
    full = PRESETS["full"].sizes
    assert {size.proj_size > 0 for size in full} == {False, True}
    assert len({(s.batch, s.steps, s.hidden_size) for s in full}) == 18
    assert parse_args([]).preset_name() == "quick"


def test_options_parse():
    args = parse_args(
        [
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
            "--out",
            "/tmp/x",
            "--threads",
            "3",
            "--min-run-time",
            "0.5",
            "--no-plot",
            "--tf32",
            "--timing",
            "blocked",
        ]
    )
    assert (
        args.device,
        args.dtype,
        args.out,
        args.threads,
        args.min_run_time,
        args.no_plot,
        args.tf32,
        args.timing,
    ) == ("cpu", "bfloat16", Path("/tmp/x"), 3, 0.5, True, True, "blocked")
    assert (args.isa, parse_args([]).timing) == ("native", None)


@pytest.mark.parametrize("isa", ["avx2", "avx512", "default"])
def test_an_isa_cap_implies_the_cpu(isa):
    args = parse_args(["--isa", isa])
    assert (args.isa, args.device) == (isa, "cpu")


def test_size_arguments_make_a_custom_grid():
    args = parse_args(
        [
            "--preset",
            "fastrnns",
            "--batch",
            "1,8",
            "--hidden-size",
            "32,64",
            "--proj-size",
            "16",
            "--packed",
        ]
    )
    assert args.preset_name() == "custom"
    steps, inputs = PRESETS["quick"].sizes[0].steps, PRESETS["quick"].sizes[0].input_size
    assert args.sizes() == [
        LstmSize(b, steps, inputs, h, 16, packed=True) for b in (1, 8) for h in (32, 64)
    ]


@pytest.mark.parametrize(
    "argv",
    [
        ["--dtype", "int8"],
        ["--device", "tpu"],
        ["--threads", "0"],
        ["--min-run-time", "-1"],
        ["--batch", "2,x"],
        ["--hidden-size", "8", "--proj-size", "8"],
        ["--preset", "huge"],
        ["--steps", "0"],
        ["--isa", "sse"],
        ["--isa", "avx2", "--device", "cuda"],
        ["--timing", "fast"],
    ],
)
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
        (size, mode, name)
        for size in ("B=3 T=4 I=5 H=6", "B=3 T=4 I=5 H=6 P=2")
        for mode in ("forward", "forward+backward")
        for name in IMPLEMENTATIONS
    ]
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
            {"mm", "onednn"} if torch.backends.mkldnn.is_available() else {"mm"}
        )
        assert gemm["gflops"] == max(gemm["engine_gflops"].values())
        assert gemm["engine_gflops"][gemm["engine"]] == gemm["gflops"]
        base = next(
            r
            for r in results
            if (r["size"], r["mode"], r["implementation"])
            == (result["size"], result["mode"], "lstm_ext")
        )
        expected = None if result is base else result["median_s"] / base["median_s"]
        assert result["lstm_ext_speedup"] == pytest.approx(expected)
    assert (tmp_path / "custom-cpu-float32.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert payload["summary"] == summarize(results)
    for text in (
        "lstm_ext speed-up",
        "% of GEMM",
        "B=3 T=4 I=5 H=6 P=2",
        "torch.nn.LSTM",
        f"isa {lstm_ext.cpu_isa()} (native)",
        "timing: alternate",
        summary_table(payload["summary"]),
    ):
        assert text in captured.out


def test_implementations_alternate_over_the_same_rounds(tmp_path, capsys):
    status, _ = _run([*TINY, "--no-plot"], tmp_path, capsys)
    assert status == 0
    payload = json.loads((tmp_path / "custom-cpu-float32.json").read_text())
    assert payload["timing"] == "alternate"
    for mode in ("forward", "forward+backward"):
        timed = [r for r in payload["results"] if r["mode"] == mode and r["status"] == "ok"]
        assert [r["implementation"] for r in timed] == IMPLEMENTATIONS[:3]
        assert len({r["runs"] for r in timed}) == 1 and timed[0]["runs"] >= timing.MIN_ROUNDS
        assert all(r["calls_per_run"] == 1 and r["iqr_s"] >= 0 for r in timed)


def test_packed_run_times_packed_and_padded(tmp_path, capsys):
    status, _ = _run(
        [
            *TINY,
            "--packed",
            "--proj-size",
            "2",
            "--no-plot",
            "--dtype",
            "float64",
            "--timing",
            "blocked",
        ],
        tmp_path,
        capsys,
    )
    assert status == 0
    payload = json.loads((tmp_path / "custom-cpu-float64.json").read_text())
    assert payload["timing"] == "blocked"
    assert [(entry["mode"], entry["against"]) for entry in payload["summary"]] == [
        (mode, f"torch.nn.LSTM {layout}")
        for mode in ("forward", "forward+backward")
        for layout in ("packed", "padded")
    ]
    assert {r["implementation"] for r in payload["results"] if r["status"] == "ok"} == {
        "lstm_ext packed",
        "torch.nn.LSTM packed",
        "lstm_ext padded",
        "torch.nn.LSTM padded",
    }
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


@pytest.mark.parametrize(
    "candidate, extra, what",
    [
        (Candidate(forward=_scaled_forward), [], "output (inference)"),
        (Candidate(forward=_wrong_backward_forward), [], "gradient of input"),
        (Candidate(layer=_shifted_layer), ["--packed"], "lstm_ext packed gives a wrong output"),
    ],
)
def test_a_wrong_result_is_refused(candidate, extra, what, tmp_path, capsys):
    status, captured = _run([*TINY, *extra], tmp_path, capsys, candidate=candidate)
    assert status == 1
    assert "Refusing to benchmark a wrong result" in captured.err and what in captured.err
    assert list(tmp_path.iterdir()) == []


def test_runs_as_a_script(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "bench_lstm.py"),
            *TINY,
            "--no-plot",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "lstm_ext speed-up" in completed.stdout
    assert (tmp_path / "custom-cpu-float32.json").exists()


def test_gpu_profile_says_what_it_needs_without_a_gpu(monkeypatch):
    from benchmarks import gpu_profile

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="needs an NVIDIA GPU"):
        gpu_profile.main(["--sizes", "1,2,3,4,0"])


def test_a_cap_sets_every_library_and_its_own_inductor_cache():
    shell = {"PATH": "/bin", "LSTM_EXT_CPU_ISA": "avx512", "TORCHINDUCTOR_CACHE_DIR": "/cache"}
    assert isa_cap.capped_environment("avx2", shell) == {
        "PATH": "/bin",
        "LSTM_EXT_CPU_ISA": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "TORCHINDUCTOR_CACHE_DIR": str(isa_cap.inductor_cache_dir("avx2")),
    }
    # native lifts every cap (a lone one would cap lstm_ext and not nn.LSTM) and keeps the cache.
    assert isa_cap.capped_environment("native", shell) == {
        "PATH": "/bin",
        "TORCHINDUCTOR_CACHE_DIR": "/cache",
    }
    assert len({isa_cap.inductor_cache_dir(isa) for isa in isa_cap.CAPS}) == len(isa_cap.CAPS)


@pytest.mark.skipif("default" not in lstm_ext.supported_cpu_isas(), reason="x86 levels only")
def test_an_isa_cap_runs_in_a_fresh_process(tmp_path, capfd):
    status = main([*TINY, "--isa", "default", "--no-plot", "--out", str(tmp_path)])
    assert status == 0
    environment = json.loads((tmp_path / "custom-cpu-float32.json").read_text())["environment"]
    assert (
        environment["isa"],
        environment["lstm_ext_cpu_isa"],
        environment["aten_cpu_capability"],
    ) == ("default", "default", "DEFAULT")
    assert environment["isa_caps"] == isa_cap.CAPS["default"]
    assert environment["torchinductor_cache_dir"] == str(isa_cap.inductor_cache_dir("default"))
    assert "isa default (capped)" in capfd.readouterr().out


def test_an_isa_the_processor_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(isa_cap.lstm_ext, "supported_cpu_isas", lambda: ["default", "avx2"])
    with pytest.raises(SystemExit, match="this processor lacks AVX512 "):
        main([*TINY, "--isa", "avx512"])


@pytest.mark.skipif(lstm_ext.cpu_isa() in ("default", "neon"), reason="needs an x86 SIMD level")
def test_caps_set_after_the_libraries_loaded_are_refused(monkeypatch):
    for name, value in isa_cap.capped_environment("default", {}).items():
        monkeypatch.setenv(name, value)
    refusal = f"--isa default, but lstm_ext runs at {lstm_ext.cpu_isa()}"
    with pytest.raises(SystemExit, match=refusal):
        main([*TINY, "--isa", "default"])


def test_a_candidate_does_not_cross_into_a_fresh_process():
    with pytest.raises(ValueError, match="candidate"):
        main([*TINY, "--isa", lstm_ext.supported_cpu_isas()[0]], candidate=Candidate())


def test_alternate_calls_each_function_once_per_round_in_turn():
    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    timings = timing.alternate(fns, min_run_time=1e-9)
    warm_up, timed = calls[: 3 * timing.WARMUP_ROUNDS], calls[3 * timing.WARMUP_ROUNDS :]
    assert sorted(warm_up) == sorted("abc" * timing.WARMUP_ROUNDS)
    rounds = [timed[i : i + 3] for i in range(0, len(timed), 3)]
    assert len(rounds) == timing.MIN_ROUNDS and all(sorted(r) == list("abc") for r in rounds)
    assert [r[0] for r in rounds[:3]] == list("abc")  # each round starts one further along
    assert {t.runs for t in timings.values()} == {timing.MIN_ROUNDS}


def test_alternate_times_each_call_until_the_budget_is_spent():
    timings = timing.alternate(
        {"slow": lambda: time.sleep(2e-3), "fast": lambda: None}, min_run_time=0.2
    )
    assert timings["slow"].median_s >= 2e-3 > timings["fast"].median_s
    # The 0.4 s budget holds far more than MIN_ROUNDS rounds of 2 ms.
    assert timings["slow"].runs == timings["fast"].runs > timing.MIN_ROUNDS


def _fake_result(size: LstmSize, mode: str, name: str, speedup=None, status="ok") -> dict:
    return result_record(size, mode, name, status=status, lstm_ext_speedup=speedup)


def test_summary_counts_the_sizes_lstm_ext_wins_and_their_geomean():
    sizes = [LstmSize(b, 10, 8, 8) for b in (1, 2, 3)]
    results = [
        _fake_result(size, mode, "lstm_ext")
        for size in sizes
        for mode in ("forward", "forward+backward")
    ]
    results += [
        _fake_result(size, "forward", "torch.nn.LSTM", speedup)
        for size, speedup in zip(sizes, (2.0, 0.5, 1.0))
    ]
    results += [
        _fake_result(sizes[0], "forward+backward", "torch.nn.LSTM", 4.0),
        _fake_result(sizes[1], "forward+backward", "torch.nn.LSTM", status="n/a"),
        _fake_result(sizes[2], "forward", "reference", 0.1),
    ]
    assert summarize(results) == [
        {
            "mode": "forward",
            "against": "torch.nn.LSTM",
            "sizes": 3,
            "at_least_as_fast": 2,
            "geomean_speedup": pytest.approx(1.0),
            "lowest_speedup": 0.5,
            "lowest_size": sizes[1].label,
        },
        {
            "mode": "forward+backward",
            "against": "torch.nn.LSTM",
            "sizes": 1,
            "at_least_as_fast": 1,
            "geomean_speedup": pytest.approx(4.0),
            "lowest_speedup": 4.0,
            "lowest_size": sizes[0].label,
        },
    ]
    text = summary_table(summarize(results))
    assert "2 of 3" in text and "1.00x" in text and f"0.50x ({sizes[1].label})" in text
    assert "at no size" in summary_table(summarize(results[:6]))


def test_a_grid_plots_as_a_heatmap_1600_px_wide(tmp_path):
    results = [
        _fake_result(size, mode, name, None if name == "lstm_ext" else math.exp((k % 7 - 3) / 3))
        for k, size in enumerate(PRESETS["full"].sizes)
        for mode in ("forward", "forward+backward")
        for name in IMPLEMENTATIONS
    ]
    assert is_grid(results) and is_grid([r for r in results if r["proj_size"] == 0])
    assert not any(
        is_grid([_fake_result(size, "forward", "lstm_ext") for size in PRESETS[preset].sizes])
        for preset in ("quick", "fastrnns", "packed")
    )
    path = tmp_path / "full.png"
    plot(path, results, "full")
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the PNG's IHDR
    assert width == 1600 and height < width / 2
