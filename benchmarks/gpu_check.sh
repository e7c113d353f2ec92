#!/usr/bin/env bash
# The GPU check of lstm_ext, for a machine with an NVIDIA GPU, torch, nvcc and ninja (no network
# needed): builds the extension in place, runs the CUDA tests (tests/test_cuda.py and the
# device-parametrised tests' CUDA cases), profiles lstm_ext against cuDNN
# (benchmarks/gpu_profile.py), runs benchmarks/bench_lstm.py on the GPU, and prints a summary
# table last. Logs and benchmark JSON go to benchmarks/results/gpu_check; when $OUT is set (the
# device tool's return folder, which takes few files) they are also packed into
# $OUT/gpu_check.tar.gz beside a copy of the summary.
#
#   benchmarks/gpu_check.sh
# Environment: PYTHON (default python), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# TEST_TIMEOUT_S (default 300), BENCH_TIMEOUT_S (per benchmark run, default 90), PYTEST_ARGS
# (added to pytest's, e.g. "-n 8 --timeout 120" where pytest-xdist and pytest-timeout exist),
# BENCH_ARGS (added to each benchmark run's, e.g. "--min-run-time 0.25 --compile-max-steps 0"),
# BENCH_DEADLINE_S (no benchmark run starts after this many seconds of the script; default none).
set -u -o pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
LOG_DIR=benchmarks/results/gpu_check
mkdir -p "$LOG_DIR"
SUMMARY=()
FAILURES=0

record() {  # record STEP STATUS DETAIL
  SUMMARY+=("$(printf '%-28s %-8s %s' "$1" "$2" "$3")")
  if [ "$2" = FAIL ]; then FAILURES=$((FAILURES + 1)); fi
}

print_summary() {
  {
    printf '%-28s %-8s %s\n' step status detail
    printf '%s\n' "${SUMMARY[@]}"
  } | tee "$LOG_DIR/summary.txt"
  if [ -n "${OUT:-}" ]; then
    cp "$LOG_DIR/summary.txt" "$OUT/summary.txt"
    tar czf "$OUT/gpu_check.tar.gz" -C "$LOG_DIR" .
  fi
}

last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-100; }

nvidia-smi > "$LOG_DIR/nvidia-smi.txt" 2>&1 || true

# 1. Build in place.
start=$(date +%s)
if TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16} \
    "$PYTHON" setup.py build_ext --inplace > "$LOG_DIR/build.log" 2>&1; then
  record build ok "$(($(date +%s) - start)) s"
else
  record build FAIL "$(grep -m1 -i 'error' "$LOG_DIR/build.log" | cut -c1-100)"
  grep -i -B2 -A6 'error' "$LOG_DIR/build.log" | cut -c1-300 | head -n 60
  print_summary
  exit 1
fi

if PYTHONPATH=. "$PYTHON" -c "
import torch, lstm_ext
assert torch.cuda.is_available(), 'torch sees no GPU'
assert lstm_ext.cuda_available(), 'the extension was built without CUDA kernels'
print(torch.cuda.get_device_name(), 'cuda', torch.version.cuda, 'torch', torch.__version__)
" > "$LOG_DIR/device.log" 2>&1; then
  record device ok "$(last_line "$LOG_DIR/device.log")"
else
  record device FAIL "$(last_line "$LOG_DIR/device.log")"
fi

# 2. CUDA tests: every test of tests/test_cuda.py and every test or parameter id naming cuda.
PYTHONPATH=. timeout "${TEST_TIMEOUT_S:-300}" "$PYTHON" -m pytest -q -rfEs -p no:cacheprovider \
  ${PYTEST_ARGS:-} tests -k cuda --junitxml="$LOG_DIR/pytest_cuda.xml" > "$LOG_DIR/pytest_cuda.log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  record "pytest -k cuda" ok "$(last_line "$LOG_DIR/pytest_cuda.log")"
else
  record "pytest -k cuda" FAIL "rc $status: $(last_line "$LOG_DIR/pytest_cuda.log")"
  # The failures' short summary, so that the reply's tail shows what broke.
  grep -E '^(FAILED|ERROR)' "$LOG_DIR/pytest_cuda.log" | cut -c1-300 | head -n 40
fi

# 3. Where the GPU time goes: busy time, launches and CUDA-graph replay against cuDNN.
PYTHONPATH=. timeout 120 "$PYTHON" benchmarks/gpu_profile.py > "$LOG_DIR/gpu_profile.log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  record gpu_profile ok "$(last_line "$LOG_DIR/gpu_profile.log")"
else
  record gpu_profile FAIL "rc $status: $(last_line "$LOG_DIR/gpu_profile.log")"
fi

# 4. Benchmarks on the GPU, when the benchmark script exists.
if [ -f benchmarks/bench_lstm.py ]; then
  for preset in fastrnns proj small-batch packed; do
    for dtype in float32 bfloat16; do
      log="$LOG_DIR/bench_${preset}_${dtype}.log"
      if [ -n "${BENCH_DEADLINE_S:-}" ] && [ "$SECONDS" -ge "$BENCH_DEADLINE_S" ]; then
        record "bench $preset $dtype" skipped "past BENCH_DEADLINE_S=$BENCH_DEADLINE_S"
        continue
      fi
      PYTHONPATH=. timeout "${BENCH_TIMEOUT_S:-90}" "$PYTHON" benchmarks/bench_lstm.py \
        --device cuda --preset "$preset" --dtype "$dtype" --out "$LOG_DIR" ${BENCH_ARGS:-} \
        > "$log" 2>&1
      status=$?
      if [ $status -eq 0 ]; then
        record "bench $preset $dtype" ok "$(last_line "$log")"
      else
        record "bench $preset $dtype" FAIL "rc $status: $(last_line "$log")"
      fi
    done
  done
else
  record bench skipped "benchmarks/bench_lstm.py absent"
fi

print_summary
[ "$FAILURES" -eq 0 ]
