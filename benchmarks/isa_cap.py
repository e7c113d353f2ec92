"""Capping the instruction set of lstm_ext and torch.nn.LSTM alike, so that a benchmark run
measures both at one ISA level (e.g. AVX2 on an AVX-512 machine).

Each library reads its cap once, when it loads, so a capped run is a fresh process started with
the caps in its environment.
"""

import getpass
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import lstm_ext

NATIVE = "native"  # no cap: every library runs at the best level the processor has

# Per level, the variable each library reads: lstm_ext; oneDNN (nn.LSTM's CPU path); MKL (ATen's
# GEMMs, those of nn.LSTM with a projection and of the reference); ATen's vectorized kernels.
CAPS = {
    "avx512": {
        "LSTM_EXT_CPU_ISA": "avx512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "MKL_ENABLE_INSTRUCTIONS": "AVX512",
        "ATEN_CPU_CAPABILITY": "avx512",
    },
    "avx2": {
        "LSTM_EXT_CPU_ISA": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "ATEN_CPU_CAPABILITY": "avx2",
    },
    "default": {
        "LSTM_EXT_CPU_ISA": "default",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
        "ATEN_CPU_CAPABILITY": "default",
    },
}
ISA_CHOICES = (NATIVE, *CAPS)
CAP_VARIABLES = tuple(CAPS["avx2"])
# Inductor's cache key ignores ATEN_CPU_CAPABILITY: a kernel compiled under one level would be
# reused under another, with wrong results, so each capped level compiles into its own cache.
INDUCTOR_CACHE_VARIABLE = "TORCHINDUCTOR_CACHE_DIR"


def _program() -> str:
    """The running script's name, for messages (bench_lstm, bench_models)."""
    return Path(sys.argv[0]).stem or "benchmark"


def inductor_cache_dir(isa: str) -> Path:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a container user without a name
        user = str(os.getuid())
    return Path(tempfile.gettempdir()) / f"torchinductor_{user}_isa_{isa}"


def capped_environment(isa: str, environ: dict[str, str]) -> dict[str, str]:
    """environ as a run at `isa` needs it: every cap variable set for that level (native: unset,
    so that a cap left in the shell cannot cap one library and not the others)."""
    env = {name: value for name, value in environ.items() if name not in CAP_VARIABLES}
    if isa != NATIVE:
        env.update(CAPS[isa])
        env[INDUCTOR_CACHE_VARIABLE] = str(inductor_cache_dir(isa))
    return env


def needs_fresh_process(isa: str) -> bool:
    return capped_environment(isa, dict(os.environ)) != dict(os.environ)


def check_processor_has(isa: str) -> None:
    """Exit with a message when the processor cannot run at `isa` (the libraries would quietly
    run at a lower level)."""
    supported = lstm_ext.supported_cpu_isas()
    if isa != NATIVE and isa not in supported:
        raise SystemExit(
            f"{_program()}: --isa {isa}: this processor lacks {isa.upper()} "
            f"(it runs: {', '.join(supported)})"
        )


def check_running_at(isa: str) -> None:
    """Exit unless lstm_ext and ATen run at the capped level: a cap set after they loaded (in a
    process that imported them before the caps were in its environment) has no effect."""
    if isa == NATIVE:
        return
    import torch

    running = {
        "lstm_ext": lstm_ext.cpu_isa(),
        "ATen": torch.backends.cpu.get_cpu_capability().lower(),
    }
    wrong = {name: level for name, level in running.items() if level != isa}
    if wrong:
        raise SystemExit(
            f"{_program()}: --isa {isa}, but "
            + ", ".join(f"{name} runs at {level}" for name, level in wrong.items())
        )


def rerun_capped(isa: str, script: Path, argv: list[str]) -> int:
    """Run `script` with `argv` in a fresh process under the caps of `isa`; its exit status.

    The child imports the same lstm_ext as this process (and the benchmarks beside it)."""
    env = capped_environment(isa, dict(os.environ))
    source_root = str(Path(lstm_ext.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    caps = " ".join(f"{name}={env[name]}" for name in CAP_VARIABLES if name in env)
    print(
        f"{_program()}: running in a fresh process at --isa {isa} ({caps or 'no caps'})",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    return subprocess.run([sys.executable, str(script), *argv], env=env).returncode


def run_at(isa: str, script: Path, argv: list[str]) -> int | None:
    """Make the run happen at `isa`: refuse a level the processor lacks; where this process runs
    under other caps, rerun `script` with `argv` in a fresh process and return its exit status;
    else check that the libraries run at the level and return None (the caller runs here)."""
    check_processor_has(isa)
    if needs_fresh_process(isa):
        return rerun_capped(isa, script, argv)
    check_running_at(isa)
    return None
