"""Builds lstm_ext._C against the installed torch: CPU-only, or CPU+CUDA when torch has CUDA
and nvcc is found. Install with `pip install --no-build-isolation .` (or `-e .`).

Environment:
  LSTM_EXT_FORCE_CPU=1     build the CPU kernels only, even where CUDA could be built
  TORCH_CUDA_ARCH_LIST     CUDA targets, e.g. "9.0" for H100/H200 (torch's own variable)
  MAX_JOBS                 parallel compile jobs (torch's own variable)
"""

import glob
import os
import shutil
import site
import sys
import sysconfig

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def point_cuda_home_at_toolkit():
    """torch takes the CUDA toolkit to be the folder above the `nvcc` on the PATH. Where that nvcc
    is a wrapper outside the toolkit (e.g. /usr/local/bin/nvcc exec'ing /usr/local/cuda/bin/nvcc),
    that folder has no CUDA headers or libraries: use /usr/local/cuda instead. CUDA_HOME or
    CUDA_PATH, when set, are left as they are."""
    if os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or shutil.which("nvcc") is None:
        return
    guessed = os.path.dirname(os.path.dirname(os.path.realpath(shutil.which("nvcc"))))
    for home in (guessed, "/usr/local/cuda"):
        if os.path.exists(os.path.join(home, "include", "cuda_runtime.h")) and os.path.exists(
            os.path.join(home, "bin", "nvcc")
        ):
            if home != guessed:
                os.environ["CUDA_HOME"] = home
            return


point_cuda_home_at_toolkit()

import torch  # noqa: E402  (after CUDA_HOME is settled: cpp_extension reads it on import)
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension  # noqa: E402


def cuda_build_reason():
    """Returns None when the CUDA kernels should be built, else why not."""
    if os.environ.get("LSTM_EXT_FORCE_CPU", "0") == "1":
        return "LSTM_EXT_FORCE_CPU=1"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} has no CUDA"
    if CUDA_HOME is None or not os.path.exists(os.path.join(CUDA_HOME, "bin", "nvcc")):
        return "nvcc not found (set CUDA_HOME or put nvcc on the PATH)"
    return None


def pip_cuda_include_dirs():
    """Headers of torch's CUDA pip packages (cuBLAS, cuSPARSE, ...): torch's CUDA headers
    include them, and a CUDA toolkit without those libraries lacks them."""
    roots = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    roots += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    roots.append(os.path.dirname(os.path.dirname(torch.__file__)))
    found = []
    for root in dict.fromkeys(roots):
        for include in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if include not in found:
                found.append(include)
    return found


def extension():
    sources = sorted(glob.glob(os.path.join("csrc", "core", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cpu", "*.cpp")))
    cxx_flags = ["-O3", "-fopenmp", "-fdiagnostics-color=always"]
    link_flags = ["-fopenmp"]
    reason = cuda_build_reason()
    if reason is not None:
        print(f"lstm_ext: building CPU kernels only ({reason})", file=sys.stderr)
        return CppExtension(
            "lstm_ext._C",
            sources,
            include_dirs=[os.path.join(ROOT, "csrc")],
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=link_flags,
        )
    print(
        f"lstm_ext: building CPU and CUDA kernels (CUDA {torch.version.cuda}, {CUDA_HOME})",
        file=sys.stderr,
    )
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "cuda", "*.cu")))
    return CUDAExtension(
        "lstm_ext._C",
        sources,
        # The toolkit's own headers before the pip packages' partial copies of them.
        include_dirs=[os.path.join(ROOT, "csrc"), os.path.join(CUDA_HOME, "include")]
        + pip_cuda_include_dirs(),
        define_macros=[("LSTM_EXT_WITH_CUDA", None)],
        extra_compile_args={
            "cxx": cxx_flags,
            "nvcc": ["-O3", "-lineinfo"],
        },
        extra_link_args=link_flags,
    )


setup(
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
