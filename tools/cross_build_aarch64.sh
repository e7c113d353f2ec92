#!/usr/bin/env bash
# Cross-builds lstm_ext's CPU extension for ARM64 (aarch64 Linux: Graviton, Ampere, Apple
# silicon under Linux) on an x86-64 Debian machine, so that a break of the ARM64 build shows
# without ARM hardware.
#
# What it does:
#   1. installs Debian's g++-aarch64-linux-gnu with apt-get where aarch64-linux-gnu-g++ is
#      missing (as root, or through sudo);
#   2. downloads torch's aarch64 manylinux wheel for CPython 3.11 with pip (the version the
#      Makefile's TORCH_SPEC pins, so the headers match the x86 build's) and unpacks its headers
#      (torch/include) and the libraries the extension links against (torch/lib, less the CUDA
#      ones: the extension's CPU build needs none of them);
#   3. downloads Debian's libpython3.11-dev:arm64 and libpython3.11:arm64 with apt-get download
#      through a private apt state (the machine's apt sources, no `dpkg --add-architecture`:
#      nothing is installed) for ARM64's Python.h/pyconfig.h and libpython3.11.so;
#   4. compiles every C++ source of the CPU build (csrc/core/*.cpp, csrc/cpu/*.cpp) with
#      aarch64-linux-gnu-g++ and setup.py's flags as torch.utils.cpp_extension passes them
#      (-DNDEBUG -fwrapv -O3 -Wall -Wsign-compare -fPIC -fopenmp -std=c++NN as the wheel's
#      cpp_extension asks, -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C, -I csrc,
#      torch's include folders; only -g is left out, for speed), printing any warning;
#   5. links _C.so with -shared against the wheel's libc10/libtorch/libtorch_cpu/libtorch_python
#      and libpython3.11 with -Wl,--no-undefined, so that a symbol no library defines fails the
#      build as it would fail the import on an ARM64 machine.
#   With --run it also cross-compiles tests/cpp/microkernels_smoke.cpp (the NEON microkernels,
#   the ISA levels and the cache sizes, checked against scalar references) and runs it under
#   qemu-user (Debian's qemu-user, installed where missing).
#
# Usage (from any folder; the downloads are cached, so reruns only compile):
#   tools/cross_build_aarch64.sh [--run]
# Environment:
#   LSTM_EXT_AARCH64_TORCH   torch version of the wheel (default: the Makefile's TORCH_SPEC)
#   LSTM_EXT_AARCH64_CACHE   cache folder (default: .cache/aarch64 in the repository, git-ignored)
#   PYTHON                   the Python whose pip downloads the wheel (default: the
#                            repository's .venv/bin/python where `make` made it, else python3)
#   MAX_JOBS                 parallel compile jobs (default: the number of processors)
# Exits non-zero on any compile or link error (or failed smoke test); the last line says what
# was built. The first run downloads about 460 MB (the wheel) and 6 MB (Debian's packages) and
# keeps about 800 MB in the cache; from a clean Debian 12 machine with 2 cores it takes about
# 1.5 min (half of it the compiles), a rerun about 40 s, --run adds about 20 s. One run at a
# time per cache folder.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
run_smoke=0
for argument in "$@"; do
  case "$argument" in
    --run) run_smoke=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "cross_build_aarch64: unknown argument '$argument' (try --help)" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
say() { echo "cross_build_aarch64 [$(($(date +%s) - start)) s]: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

torch_version=${LSTM_EXT_AARCH64_TORCH:-$(sed -n 's/^TORCH_SPEC ?= *torch==\([0-9.]*\).*/\1/p' \
  "$root/Makefile")}
torch_version=${torch_version:-2.14.1}
cache=${LSTM_EXT_AARCH64_CACHE:-$root/.cache/aarch64}
jobs=${MAX_JOBS:-$(nproc)}
python=${PYTHON:-python3}
if [ -z "${PYTHON:-}" ] && [ -x "$root/.venv/bin/python" ]; then python=$root/.venv/bin/python; fi
mkdir -p "$cache"
cache=$(cd "$cache" && pwd)

sudo_if_needed=()
if [ "$(id -u)" != 0 ]; then sudo_if_needed=(sudo); fi

apt_install() {  # packages; apt-get's output shows only where the install fails
  say "installing $* with apt-get"
  local log=$cache/apt-get-install.log
  # An update that fails for some other source of the machine's need not stop the install.
  "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$log" 2>&1 ||
    say "apt-get update reported errors; installing anyway"
  "${sudo_if_needed[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1 ||
    { cat "$log" >&2; fail "apt-get install $*"; }
}

# 1. The cross compiler.
if ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  apt_install g++-aarch64-linux-gnu
fi
cxx=aarch64-linux-gnu-g++

# 2. torch's aarch64 wheel: its headers and the libraries to link against.
torch_dir=$cache/torch-$torch_version
if [ ! -f "$torch_dir/.unpacked" ]; then
  wheels=$cache/wheels
  mkdir -p "$wheels"
  shopt -s nullglob
  found=("$wheels"/torch-"$torch_version"-cp311-cp311-*aarch64.whl)
  if [ "${#found[@]}" -eq 0 ]; then
    say "downloading torch $torch_version's aarch64 wheel for CPython 3.11"
    "$python" -m pip download -q "torch==$torch_version" --platform manylinux_2_28_aarch64 \
      --only-binary=:all: --no-deps --python-version 3.11 -d "$wheels"
    found=("$wheels"/torch-"$torch_version"-cp311-cp311-*aarch64.whl)
  fi
  shopt -u nullglob
  [ "${#found[@]}" -gt 0 ] || fail "pip downloaded no aarch64 wheel of torch $torch_version"
  wheel=${found[0]}
  say "unpacking $(basename "$wheel")"
  rm -rf "$torch_dir"
  mkdir -p "$torch_dir"
  python_unzip='
import sys, zipfile
wheel, target = sys.argv[1:]
cuda = ("libtorch_cuda", "libc10_cuda", "libcaffe2_nvrtc", "libtorch_nvshmem")
with zipfile.ZipFile(wheel) as archive:
    names = [n for n in archive.namelist()
             if n.startswith("torch/include/")
             or n == "torch/utils/cpp_extension.py"
             or (n.startswith("torch/lib/") and ".so" in n
                 and not n.startswith(tuple("torch/lib/" + c for c in cuda)))]
    archive.extractall(target, names)
'
  "$python" -c "$python_unzip" "$wheel" "$torch_dir"
  touch "$torch_dir/.unpacked"
fi
torch_lib=$torch_dir/torch/lib
[ -f "$torch_lib/libtorch_cpu.so" ] || fail "no torch/lib/libtorch_cpu.so in the wheel"

# 3. ARM64's Python 3.11 headers and libpython, from Debian's arm64 packages (not installed:
# downloaded through a private apt state and unpacked into the cache).
python_dir=$cache/python3.11
if [ ! -f "$python_dir/.unpacked" ]; then
  say "downloading Debian's libpython3.11-dev:arm64"
  apt_state=$cache/apt
  mkdir -p "$apt_state/lists/partial" "$apt_state/cache/archives/partial" "$apt_state/debs"
  apt_options=(-o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state/cache"
    -o "Dir::State::status=/dev/null" -o APT::Architecture=arm64 -o APT::Architectures::=arm64
    -o "APT::Sandbox::User=$(id -un)" -o Debug::NoLocking=1)
  apt-get "${apt_options[@]}" -qq update ||
    say "apt-get update (arm64 lists) reported errors; downloading anyway"
  (cd "$apt_state/debs" && rm -f ./*.deb &&
    apt-get "${apt_options[@]}" -qq download libpython3.11-dev:arm64 libpython3.11:arm64) ||
    fail "apt-get download libpython3.11-dev:arm64 (Debian 12's Python; other releases lack it)"
  rm -rf "$python_dir"
  mkdir -p "$python_dir"
  for deb in "$apt_state"/debs/*.deb; do dpkg-deb -x "$deb" "$python_dir"; done
  touch "$python_dir/.unpacked"
fi
python_include=$python_dir/usr/include
python_lib=$python_dir/usr/lib/aarch64-linux-gnu
[ -f "$python_include/aarch64-linux-gnu/python3.11/pyconfig.h" ] ||
  fail "no aarch64 pyconfig.h in Debian's libpython3.11-dev:arm64"

# 4. Compile, with the flags of setup.py's build as torch.utils.cpp_extension makes them.
cxx_standard=$(grep -o -- '-std=c++[0-9]*' "$torch_dir/torch/utils/cpp_extension.py" |
  sort | uniq -c | sort -rn | awk 'NR == 1 {print $2}')
cxx_standard=${cxx_standard:--std=c++17}
flags=(-DNDEBUG -fwrapv -O3 -Wall -Wsign-compare -fPIC -fopenmp "$cxx_standard"
  -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C
  -I"$root/csrc" -I"$torch_dir/torch/include" -I"$torch_dir/torch/include/torch/csrc/api/include"
  -I"$python_include/python3.11" -I"$python_include")
build=$cache/build
rm -rf "$build"
mkdir -p "$build/obj"
sources=()
for source in "$root"/csrc/core/*.cpp "$root"/csrc/cpu/*.cpp; do
  sources+=("${source#"$root"/}")
done
[ "${#sources[@]}" -gt 0 ] || fail "no C++ sources under csrc/core and csrc/cpu"

compile_one() {  # source (relative to the repository root); its log lands beside its object
  local object=$build/obj/${1//\//__}.o
  if "$cxx" "${flags[@]}" -c "$root/$1" -o "$object" >"$object.log" 2>&1; then
    [ -s "$object.log" ] && { echo "--- warnings in $1:"; cat "$object.log"; } >&2
    return 0
  fi
  { echo "--- error in $1:"; cat "$object.log"; } >&2
  return 1
}
say "compiling ${#sources[@]} sources with $cxx $("$cxx" -dumpfullversion) $cxx_standard," \
  "$jobs jobs"
failed=0
running=0
for source in "${sources[@]}"; do
  compile_one "$source" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || failed=$((failed + 1))
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || failed=$((failed + 1))
  running=$((running - 1))
done
[ "$failed" -eq 0 ] || fail "$failed of ${#sources[@]} sources did not compile for aarch64"
warned=$(find "$build/obj" -name '*.log' -size +0 | wc -l)

# 5. Link, every symbol resolved.
extension=$build/_C.so
"$cxx" -shared -fopenmp "$build"/obj/*.o -o "$extension" \
  -L"$torch_lib" -lc10 -ltorch -ltorch_cpu -ltorch_python -L"$python_lib" -lpython3.11 \
  -Wl,--no-undefined -Wl,-rpath-link,"$torch_lib" ||
  fail "linking _C.so for aarch64"
aarch64-linux-gnu-readelf -h "$extension" | grep 'Machine:.*AArch64' >/dev/null ||
  fail "_C.so is not AArch64"
aarch64-linux-gnu-nm -D --defined-only "$extension" | grep ' PyInit__C$' >/dev/null ||
  fail "_C.so exports no PyInit__C"

# --run: the microkernels' smoke test under qemu-user.
smoke=""
if [ "$run_smoke" = 1 ]; then
  command -v qemu-aarch64 >/dev/null || apt_install qemu-user
  # The test, with the objects of the sources it tests as compiled above.
  smoke_objects=()
  for source in microkernels_baseline microkernels_avx2 microkernels_avx512 isa cache_sizes; do
    smoke_objects+=("$build/obj/csrc__cpu__$source.cpp.o")
  done
  "$cxx" "${flags[@]}" "$root/tests/cpp/microkernels_smoke.cpp" "${smoke_objects[@]}" \
    -o "$build/microkernels_smoke" -L"$torch_lib" -lc10 -Wl,-rpath-link,"$torch_lib" ||
    fail "building the smoke test"
  say "running tests/cpp/microkernels_smoke.cpp under qemu-aarch64"
  qemu-aarch64 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH="$torch_lib" \
    "$build/microkernels_smoke" || fail "the smoke test under qemu-aarch64"
  smoke=", NEON smoke test passed under qemu-aarch64"
fi

echo "cross_build_aarch64: OK: ${#sources[@]} sources compiled ($warned with warnings) and" \
  "linked into an AArch64 _C.so against torch $torch_version's aarch64 wheel$smoke" \
  "in $(($(date +%s) - start)) s"
