"""Where a GPU call's time goes, lstm_ext against nn.LSTM (cuDNN): the GPU's busy time and the
number of kernels per call (torch.profiler), and the forward replayed from a CUDA graph, which
leaves out the host's launches. A call much slower than its busy time and its graph replay is
bound by the host, not by its kernels.

    python benchmarks/gpu_profile.py                  # the sizes of benchmarks/README.md's GPU run
    python benchmarks/gpu_profile.py --sizes 8,50,256,256,0 --dtype bfloat16

Prints one line per implementation and mode; needs an NVIDIA GPU and lstm_ext's CUDA kernels.
"""

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

import lstm_ext
from benchmarks import timing
from benchmarks.bench_lstm import DTYPES

DEFAULT_SIZES = "64,100,512,512,0;1,100,512,512,0;64,100,512,1024,256"  # B,T,I,H,P


def graph_replay_ms(fn, min_run_time=0.2) -> float:
    """Median time of fn captured once in a CUDA graph and replayed (warmed up on a side stream,
    as capture requires)."""
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return timing.blocked(graph.replay, min_run_time, torch.get_num_threads()).median_s * 1e3


def device_profile(fn) -> dict:
    """One call of fn (after warm-up): the GPU's busy time (ms), its kernel and copy count, and
    the four costliest kernels (name, count, ms)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    events = [
        event
        for event in prof.key_averages()
        if event.device_type.name == "CUDA" and event.count > 0
    ]
    events.sort(key=lambda event: -event.self_device_time_total)
    return {
        "busy_ms": sum(event.self_device_time_total for event in events) / 1e3,
        "launches": sum(event.count for event in events),
        "top": [
            (event.key, event.count, event.self_device_time_total / 1e3) for event in events[:4]
        ],
    }


def profile_size(batch, steps, input_size, hidden_size, proj_size, dtype) -> list[dict]:
    torch.manual_seed(0)
    reference = torch.nn.LSTM(
        input_size, hidden_size, proj_size=proj_size, device="cuda", dtype=dtype
    )
    candidates = {"nn.LSTM": reference, "lstm_ext": lstm_ext.LSTM.from_torch(reference)}
    data = torch.randn(steps, batch, input_size, device="cuda", dtype=dtype)
    data_with_grad = data.clone().requires_grad_()
    rows = []
    for name, module in candidates.items():

        def forward(module=module):
            with torch.no_grad():
                module(data)

        def forward_backward(module=module):
            output, _ = module(data_with_grad)
            output.sum().backward()

        rows.append(
            {
                "implementation": name,
                "mode": "forward",
                **device_profile(forward),
                "graph_replay_ms": graph_replay_ms(forward),
            }
        )
        rows.append(
            {
                "implementation": name,
                "mode": "forward+backward",
                **device_profile(forward_backward),
                "graph_replay_ms": None,
            }
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default=DEFAULT_SIZES, help="';'-separated B,T,I,H,P (default: %(default)s)"
    )
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = parser.parse_args(argv)
    if not (torch.cuda.is_available() and lstm_ext.cuda_available()):
        raise SystemExit("gpu_profile.py needs an NVIDIA GPU and lstm_ext built with CUDA")
    # Full float32, as the benchmark and the tests run cuDNN and cuBLAS.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    for spec in args.sizes.split(";"):
        batch, steps, input_size, hidden_size, proj_size = map(int, spec.split(","))
        print(f"\nB={batch} T={steps} I={input_size} H={hidden_size} P={proj_size} {args.dtype}")
        for row in profile_size(
            batch, steps, input_size, hidden_size, proj_size, DTYPES[args.dtype]
        ):
            replay = (
                f"graph replay {row['graph_replay_ms']:6.3f} ms"
                if row["graph_replay_ms"] is not None
                else " " * 22
            )
            top = "; ".join(f"{name[:40]} x{count} {ms:.2f} ms" for name, count, ms in row["top"])
            print(
                f"  {row['implementation']:9s} {row['mode']:16s} busy {row['busy_ms']:7.3f} ms "
                f"launches {row['launches']:5d}  {replay}  | {top}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
