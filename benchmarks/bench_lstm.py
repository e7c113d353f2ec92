"""Time lstm_ext against torch.nn.LSTM (oneDNN/ATen on a CPU, cuDNN on a GPU), the pure-PyTorch
reference and torch.compile of the reference, for inference and for training.

    python benchmarks/bench_lstm.py                      # the `quick` preset, seconds on a CPU
    python benchmarks/bench_lstm.py --preset fastrnns    # T=100, B=64, I=H=512
    python benchmarks/bench_lstm.py --batch 1,8 --steps 50 --hidden-size 256,512   # your grid
    python benchmarks/bench_lstm.py --isa avx2           # lstm_ext and nn.LSTM capped at AVX2

Prints a table and a summary against torch.nn.LSTM, writes a JSON with every figure and the
environment and a PNG of the speed-ups into --out (benchmarks/results/). On a CPU the
implementations are timed alternately, call by call. lstm_ext is checked against torch.nn.LSTM
at each size before it is timed; a wrong result stops the run with exit status 1. See
benchmarks/README.md.
"""

import argparse
import functools
import itertools
import os
import sys
import time
import warnings
from pathlib import Path

# Run as a script: look in the source tree too (an in-place build), after any installed lstm_ext.
if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from tqdm import tqdm

from benchmarks import isa_cap, report, timing
from benchmarks.configs import PRESETS, TRAIN_FLOPS_FACTOR, LstmSize
from benchmarks.implementations import (
    IMPLEMENTATIONS_PER_SIZE,
    Candidate,
    WrongResultError,
    build_implementations,
    check_against_torch,
    make_problem,
)
from benchmarks.plot import plot
from benchmarks.summary import summarize, summary_table

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
MODES = ("forward", "forward+backward")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
PROGRESS_BAR_AFTER_S = 5.0  # show a progress bar when the run is expected to take longer


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers separated by commas, got {text!r}"
        ) from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _positive(kind):
    def parse(text):
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


class _Args(argparse.Namespace):
    """The parsed arguments, with what follows from them."""

    def custom_grid(self) -> bool:
        return any(
            getattr(self, name) is not None
            for name in ("batch", "steps", "input_size", "hidden_size", "proj_size")
        )

    def preset_name(self) -> str:
        return "custom" if self.custom_grid() else self.preset

    def sizes(self) -> list[LstmSize]:
        if not self.custom_grid():
            return list(PRESETS[self.preset].sizes)
        default = PRESETS["quick"].sizes[0]
        grid = [
            getattr(self, name) or [getattr(default, name)]
            for name in ("batch", "steps", "input_size", "hidden_size", "proj_size")
        ]
        return [LstmSize(*values, packed=self.packed) for values in itertools.product(*grid)]


def _add_grid_and_reference_options(parser: argparse.ArgumentParser) -> None:
    """The custom grid's sizes and the options of the reference implementations."""
    sizes = parser.add_argument_group("a custom grid of sizes (comma-separated lists)")
    for flag in ("--batch", "--steps", "--input-size", "--hidden-size", "--proj-size"):
        sizes.add_argument(flag, type=_int_list)
    sizes.add_argument(
        "--packed", action="store_true", help="variable lengths T/4..T, timed packed and padded"
    )
    parser.add_argument(
        "--reference-max-gflop",
        type=float,
        help="skip the slow reference above this forward size "
        "(default: 30 on a CPU, 1000 on a GPU)",
    )
    parser.add_argument(
        "--compile-max-steps",
        type=int,
        help="torch.compile the reference only up to this T (it compiles every "
        "step; default: 32 on a CPU, 100 on a GPU, 0 where the preset skips "
        "it)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 in cuBLAS and cuDNN for float32 (off: all at full float32 precision)",
    )
    parser.add_argument("--seed", type=int, default=0)


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sizes nn.LSTM refuses, and let --isa imply the CPU."""
    if args.custom_grid():
        for size in args.sizes():
            if size.proj_size and size.proj_size >= size.hidden_size:
                parser.error(
                    f"--proj-size must be smaller than --hidden-size (as in nn.LSTM), "
                    f"got P={size.proj_size}, H={size.hidden_size}"
                )
            if min(size.batch, size.steps, size.input_size, size.hidden_size) == 0:
                parser.error(f"sizes must be positive, got {size.label}")
    if args.isa != isa_cap.NATIVE:
        if args.device == "cuda":
            parser.error(f"--isa {args.isa} caps the CPU; it cannot go with --device cuda")
        args.device = "cpu"


def parse_args(argv=None) -> argparse.Namespace:
    presets = "\n".join(f"  {name:12s} {preset.description}" for name, preset in PRESETS.items())
    parser = argparse.ArgumentParser(
        prog="bench_lstm.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"presets:\n{presets}\n\nGiving any of --batch/--steps/--input-size/"
        "--hidden-size/--proj-size times the grid of their values instead of a preset "
        "(unset ones keep the quick preset's first size).",
    )
    parser.add_argument("--preset", choices=PRESETS, default="quick")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the GPU when there is one and lstm_ext was built for it",
    )
    parser.add_argument("--dtype", choices=DTYPES, default="float32")
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="folder for the JSON and the PNG (default: benchmarks/results/)",
    )
    parser.add_argument(
        "--threads",
        type=_positive(int),
        help="CPU threads for every implementation (default: torch's)",
    )
    parser.add_argument(
        "--min-run-time",
        type=_positive(float),
        help="seconds of timing per implementation and mode (default: preset's)",
    )
    parser.add_argument("--no-plot", action="store_true", help="write no PNG")
    parser.add_argument(
        "--isa",
        choices=isa_cap.ISA_CHOICES,
        default=isa_cap.NATIVE,
        help="cap lstm_ext and nn.LSTM alike at this x86 level (runs in a fresh "
        "process; implies --device cpu); native: no cap",
    )
    parser.add_argument(
        "--timing",
        choices=("alternate", "blocked"),
        help="alternate: the implementations called in turn, medians over the "
        "same rounds (default on a CPU); blocked: each in its own blocked "
        "runs of torch.utils.benchmark (default on a GPU)",
    )
    _add_grid_and_reference_options(parser)
    args = parser.parse_args(argv, namespace=_Args())
    _check_args(parser, args)
    return args


def resolve_device(name: str) -> torch.device:
    import lstm_ext

    gpu = torch.cuda.is_available() and lstm_ext.cuda_available()
    if name == "cuda" and not gpu:
        raise SystemExit(
            "--device cuda: "
            + (
                "no GPU is visible to torch"
                if not torch.cuda.is_available()
                else "lstm_ext was built without its CUDA kernels"
            )
        )
    return torch.device("cuda" if name == "cuda" or (name == "auto" and gpu) else "cpu")


def make_timer(method: str, min_run_time: float, threads: int, device: torch.device):
    """fns (name -> callable) -> {name: timing.Timing}, by the method --timing names."""
    if method == "blocked":
        return functools.partial(timing.blocked_each, min_run_time=min_run_time, threads=threads)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return functools.partial(timing.alternate, min_run_time=min_run_time, synchronize=synchronize)


def measure_gemm(shape, device, dtype, min_run_time, threads) -> dict[str, float]:
    """The machine's rates (GFLOP/s) on one GEMM of the forward pass's gate FLOPs,
    (M, K) @ (K, N), per engine: ATen's mm (MKL on an x86 CPU, cuBLAS on a GPU) and, on a CPU
    with oneDNN, oneDNN's matmul (its tensors already in oneDNN's layout), which beats MKL on
    some processors (AMD's)."""
    m, k, n = shape
    a = torch.randn(m, k, device=device, dtype=dtype)
    b = torch.randn(k, n, device=device, dtype=dtype)
    engines = {"mm": lambda: a @ b}
    if (
        device.type == "cpu"
        and torch.backends.mkldnn.is_available()
        and dtype in (torch.float32, torch.bfloat16)
    ):
        a_onednn, weight_onednn = a.to_mkldnn(), b.t().contiguous().to_mkldnn()
        engines["onednn"] = lambda: torch.ops.aten.mkldnn_linear(a_onednn, weight_onednn)
    return {
        name: 2 * m * k * n / timing.blocked(fn, min_run_time, threads).median_s / 1e9
        for name, fn in engines.items()
    }


def best_gemm(shape, timings: list[dict[str, float]]) -> dict:
    """The "% of GEMM" denominator: the best rate of any engine in any of the timings (one before
    and one after a size's implementations, so that a slow stretch of a shared machine during one
    of them does not lift every percentage of that size)."""
    rates = {name: max(measured[name] for measured in timings) for name in timings[0]}
    engine = max(rates, key=rates.get)
    m, k, n = shape
    return {
        "shape": [m, k, n],
        "median_s": 2 * m * k * n / rates[engine] / 1e9,
        "gflops": rates[engine],
        "engine": engine,
        "engine_gflops": rates,
        "timings": len(timings),
    }


def result_record(size: LstmSize, mode: str, name: str, **fields) -> dict:
    """One implementation's result at one size and mode, as the JSON and the summary hold it;
    `fields` adds the status and the timing (median_s, lstm_ext_speedup, ...)."""
    return {
        "size": size.label,
        "batch": size.batch,
        "steps": size.steps,
        "input_size": size.input_size,
        "hidden_size": size.hidden_size,
        "proj_size": size.proj_size,
        "packed": size.packed,
        "rows": size.rows(),
        "forward_gflop": size.forward_flops() / 1e9,
        "mode": mode,
        "implementation": name,
        **fields,
    }


def _warm_up(problem, implementations, mode, progress) -> tuple[dict, dict]:
    """The implementations that run in this mode (name -> callable), after one call each, which
    also compiles the compiled reference; and a skipped or n/a note for each of the others."""
    runnable, not_run = {}, {}
    for implementation in implementations:
        name = implementation.name
        progress.set_postfix_str(f"{problem.size.label} {mode} {name}: warm-up")
        if implementation.skip_reason:
            not_run[name] = {"status": "skipped", "note": implementation.skip_reason}
            continue
        fn = (
            implementation.inference(problem)
            if mode == "forward"
            else implementation.training(problem)
        )
        try:
            fn()
        except Exception as error:  # an implementation that cannot run this case
            if implementation.is_candidate:
                raise
            not_run[name] = {
                "status": "n/a",
                "note": f"{type(error).__name__}: {error}".splitlines()[0],
            }
            continue
        runnable[name] = fn
    return runnable, not_run


def benchmark_size(problem, implementations, timer, progress) -> list[dict]:
    """Time every implementation in both modes; the first (lstm_ext) is the speed-ups' base."""
    size = problem.size
    results = []
    for mode in MODES:
        flops = size.forward_flops() * (TRAIN_FLOPS_FACTOR if mode != "forward" else 1)
        runnable, not_run = _warm_up(problem, implementations, mode, progress)
        progress.set_postfix_str(f"{size.label} {mode}: timing")
        timings = timer(runnable)
        base = timings[implementations[0].name].median_s
        for implementation in implementations:
            name = implementation.name
            if name in not_run:
                results.append(result_record(size, mode, name, **not_run[name]))
                continue
            measured = timings[name]
            results.append(
                result_record(
                    size,
                    mode,
                    name,
                    status="ok",
                    median_s=measured.median_s,
                    iqr_s=measured.iqr_s,
                    runs=measured.runs,
                    calls_per_run=measured.calls_per_run,
                    gflop=flops / 1e9,
                    gflops=flops / measured.median_s / 1e9,
                    lstm_ext_speedup=None
                    if implementation is implementations[0]
                    else measured.median_s / base,
                )
            )
        progress.update(len(implementations))
    return results


def run_sizes(args, device, dtype, timer, candidate) -> tuple[list, dict]:
    """Check and time every size: (results, the GEMM of each size). Raises WrongResultError."""
    sizes = args.sizes()
    tasks = len(sizes) * len(MODES) * IMPLEMENTATIONS_PER_SIZE
    expected_s = tasks * (args.min_run_time + 0.1) + len(sizes) * (4 * args.min_run_time + 0.5)
    results, gemms = [], {}
    with tqdm(
        total=tasks,
        desc="bench_lstm",
        leave=False,
        file=sys.stderr,
        disable=expected_s < PROGRESS_BAR_AFTER_S,
    ) as progress:
        for size in sizes:
            progress.set_postfix_str(f"{size.label}: checking against torch.nn.LSTM")
            problem = make_problem(size, device, dtype, args.seed)
            implementations = build_implementations(
                problem, candidate, args.reference_max_gflop, args.compile_max_steps
            )
            check_against_torch(problem, implementations)
            gemm_shape = size.gemm_shape()
            gemm_before = measure_gemm(gemm_shape, device, dtype, args.min_run_time, args.threads)
            size_results = benchmark_size(problem, implementations, timer, progress)
            gemm_after = measure_gemm(gemm_shape, device, dtype, args.min_run_time, args.threads)
            gemms[size.label] = best_gemm(gemm_shape, [gemm_before, gemm_after])
            for result in size_results:
                if result["status"] == "ok":
                    result["gemm_fraction"] = result["gflops"] / gemms[size.label]["gflops"]
            results += size_results
            torch._dynamo.reset()  # the next size compiles afresh instead of hitting a limit
    return results, gemms


def _where(args, env: dict, device: torch.device) -> str:
    """The device, and on a CPU the ISA level lstm_ext ran at: "cpu (<name>), isa avx2 (capped)"."""
    where = f"{device.type} ({env.get('gpu', env['cpu'])})"
    if device.type == "cpu":
        capped = "native" if args.isa == isa_cap.NATIVE else "capped"
        where += f", isa {env['lstm_ext_cpu_isa']} ({capped})"
    return where


def _header(args, env: dict, device: torch.device) -> str:
    return (
        f"lstm_ext benchmark, preset {args.preset_name()}: torch {env['torch']}, "
        f"{_where(args, env, device)}, {args.dtype}, threads: {args.threads}, "
        f"timing: {args.timing}"
    )


def _print_report(args, env, device, load_average, results, gemms, summary) -> None:
    print(_header(args, env, device))
    if device.type == "cpu" and load_average is not None and load_average >= env["cpu_count"]:
        print(
            f"note: the load average before the run ({load_average:.1f}) reached the "
            f"{env['cpu_count']} CPUs: other processes share them and the timings are noisy "
            "(try --threads 1)"
        )
    method = (
        "alternated call by call over the same rounds"
        if args.timing == "alternate"
        else "each in its own blocked runs"
    )
    print(
        f"lstm_ext speed-up = other's median time / lstm_ext's (> 1: lstm_ext is faster), "
        f"timed {method}; forward+backward counts 3x the forward FLOPs."
    )
    print(report.table(results, gemms))
    print()
    print(summary_table(summary))


def _apply_settings(args, device: torch.device) -> None:
    """Fill in what the run's options leave to the device and the preset."""
    preset = PRESETS.get(args.preset_name())
    on_gpu = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    args.threads = torch.get_num_threads()
    args.timing = args.timing or ("blocked" if on_gpu else "alternate")
    args.min_run_time = args.min_run_time or (preset.min_run_time if preset else 0.2)
    args.reference_max_gflop = args.reference_max_gflop or (1000.0 if on_gpu else 30.0)
    if args.compile_max_steps is None:
        args.compile_max_steps = (
            (100 if on_gpu else 32) if preset is None or preset.compile_reference else 0
        )
    if on_gpu:
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
        torch.backends.cudnn.allow_tf32 = args.tf32


def main(argv=None, candidate: Candidate = None) -> int:
    """Run the benchmark; returns the exit status (1 when lstm_ext gives a wrong result).

    candidate replaces lstm_ext's functions under test (tests use it to feed a wrong one); it
    cannot cross into the fresh process that a change of --isa needs.
    """
    started = time.perf_counter()
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    if candidate is not None and isa_cap.needs_fresh_process(args.isa):
        raise ValueError("a candidate runs in this process only: set the caps beforehand")
    status = isa_cap.run_at(args.isa, Path(__file__).resolve(), argv)
    if status is not None:
        return status
    # nn.LSTM says once per process that oneDNN lacks projections and it uses ATen's own path.
    warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    _apply_settings(args, device)
    timer = make_timer(args.timing, args.min_run_time, args.threads, device)
    try:
        results, gemms = run_sizes(args, device, dtype, timer, candidate or Candidate())
    except WrongResultError as error:
        print(f"bench_lstm: {error}", file=sys.stderr)
        return 1

    env = report.environment(device, dtype, args.threads, args.isa, load_average)
    summary = summarize(results)
    _print_report(args, env, device, load_average, results, gemms, summary)
    name = f"{args.preset_name()}-{device.type}-{args.dtype}"
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"{name}.json"
    report.write_json(
        json_path,
        {
            "preset": args.preset_name(),
            "environment": env,
            "timing": args.timing,
            "min_run_time_s": args.min_run_time,
            "reference_max_gflop": args.reference_max_gflop,
            "compile_max_steps": args.compile_max_steps,
            "gemm": gemms,
            "results": results,
            "summary": summary,
            "wall_time_s": time.perf_counter() - started,
        },
    )
    print(f"\nwrote {json_path}")
    if not args.no_plot:
        png_path = args.out / f"{name}.png"
        plot(
            png_path,
            results,
            f"lstm_ext speed-up, {name}\n{_where(args, env, device)}, "
            f"threads: {args.threads}, timing: {args.timing}",
        )
        print(f"wrote {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
