#!/usr/bin/env bash
# The GPU check of lstm_ext, for a machine with an NVIDIA GPU, torch, nvcc and ninja (no network
# needed): builds the extension in place, runs the CUDA tests (tests/test_cuda.py, the
# persistent kernel's tests/test_cuda_persistent.py and tests/test_cuda_plan.py, and the
# device-parametrised tests' CUDA cases), then the CUDA tests again with
# LSTM_EXT_CUDA_PERSISTENT=1 (every float32 layer that fits on chip through the persistent
# kernel), profiles lstm_ext against cuDNN (benchmarks/gpu_profile.py) without and with the
# persistent kernel, runs benchmarks/bench_lstm.py on the GPU without and with it (float32; other
# dtypes never take it), and prints a summary table last. Logs and benchmark JSON go to
# benchmarks/results/gpu_check (bench_default/ and bench_persistent/); when $OUT is set (the
# device tool's return folder, which takes few files) they are also packed into
# $OUT/gpu_check.tar.gz beside a copy of the summary.
#
#   benchmarks/gpu_check.sh
# Environment: PYTHON (default python), TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 16),
# TEST_TIMEOUT_S (per pytest run, default 300), BENCH_TIMEOUT_S (per benchmark run, default 90),
# PYTEST_ARGS (added to pytest's, e.g. "-n 8 --timeout 120" where pytest-xdist and
# pytest-timeout exist), BENCH_ARGS (added to each benchmark run's, e.g. "--min-run-time 0.25
# --compile-max-steps 0"), BENCH_PRESETS (default "fastrnns proj small-batch packed"),
# BENCH_DTYPES (default float32; bfloat16 adds runs without the persistent kernel),
# BENCH_DEADLINE_S (no benchmark or profile run starts after this many seconds of the script;
# default none).
set -u -o pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
LOG_DIR=benchmarks/results/gpu_check
mkdir -p "$LOG_DIR"
SUMMARY=()
FAILURES=0

record() {  # record STEP STATUS DETAIL
  SUMMARY+=("$(printf '%-36s %-8s %s' "$1" "$2" "$3")")
  if [ "$2" = FAIL ]; then FAILURES=$((FAILURES + 1)); fi
}

print_summary() {
  {
    printf '%-36s %-8s %s\n' step status detail
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

# 2. CUDA tests: every test of tests/test_cuda*.py and every test or parameter id naming cuda
# (the persistent kernel's tests turn it on themselves).
PYTHONPATH=. timeout "${TEST_TIMEOUT_S:-300}" "$PYTHON" -m pytest -q -rfEs -p no:cacheprovider \
  ${PYTEST_ARGS:-} tests -k cuda --junitxml="$LOG_DIR/pytest_cuda.xml" \
  > "$LOG_DIR/pytest_cuda.log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  record "pytest -k cuda" ok "$(last_line "$LOG_DIR/pytest_cuda.log")"
else
  record "pytest -k cuda" FAIL "rc $status: $(last_line "$LOG_DIR/pytest_cuda.log")"
  # The failures' short summary, so that the reply's tail shows what broke.
  grep -E '^(FAILED|ERROR)' "$LOG_DIR/pytest_cuda.log" | cut -c1-300 | head -n 40
fi

# 3. The CUDA tests again with the persistent kernel on: every float32 layer that fits on chip
# runs through it (tests/test_cuda_persistent.py checks that it does; it ran in step 2).
PYTHONPATH=. LSTM_EXT_CUDA_PERSISTENT=1 timeout "${TEST_TIMEOUT_S:-300}" "$PYTHON" -m pytest -q \
  -rfEs -p no:cacheprovider ${PYTEST_ARGS:-} tests/test_cuda.py tests/test_forward.py \
  tests/test_module.py -k cuda --junitxml="$LOG_DIR/pytest_cuda_persistent.xml" \
  > "$LOG_DIR/pytest_cuda_persistent.log" 2>&1
status=$?
if [ $status -eq 0 ]; then
  record "pytest -k cuda persistent=1" ok "$(last_line "$LOG_DIR/pytest_cuda_persistent.log")"
else
  record "pytest -k cuda persistent=1" FAIL \
    "rc $status: $(last_line "$LOG_DIR/pytest_cuda_persistent.log")"
  grep -E '^(FAILED|ERROR)' "$LOG_DIR/pytest_cuda_persistent.log" | cut -c1-300 | head -n 40
fi

past_deadline() {  # past_deadline STEP: records STEP as skipped when past BENCH_DEADLINE_S
  if [ -n "${BENCH_DEADLINE_S:-}" ] && [ "$SECONDS" -ge "$BENCH_DEADLINE_S" ]; then
    record "$1" skipped "past BENCH_DEADLINE_S=$BENCH_DEADLINE_S"
    return 0
  fi
  return 1
}

# run_step STEP LOG TIMEOUT PERSISTENT COMMAND...: runs COMMAND with LSTM_EXT_CUDA_PERSISTENT
# set to PERSISTENT (0 or 1), its output in LOG, and records it.
run_step() {
  local step=$1 log=$2 limit=$3 persistent=$4
  shift 4
  past_deadline "$step" && return
  PYTHONPATH=. LSTM_EXT_CUDA_PERSISTENT=$persistent timeout "$limit" "$@" > "$log" 2>&1
  local status=$?
  if [ $status -eq 0 ]; then
    record "$step" ok "$(last_line "$log")"
  else
    record "$step" FAIL "rc $status: $(last_line "$log")"
  fi
}

# 4. Where the GPU time goes: busy time, launches and CUDA-graph replay against cuDNN, without
# and with the persistent kernel.
for persistent in 0 1; do
  run_step "gpu_profile persistent=$persistent" "$LOG_DIR/gpu_profile_persistent$persistent.log" \
    120 "$persistent" "$PYTHON" benchmarks/gpu_profile.py
done

# 5. Benchmarks on the GPU, each preset without then with the persistent kernel, so that a
# deadline leaves pairs.
for preset in ${BENCH_PRESETS:-fastrnns proj small-batch packed}; do
  for dtype in ${BENCH_DTYPES:-float32}; do
    modes="default persistent"
    [ "$dtype" = float32 ] || modes=default
    for mode in $modes; do
      persistent=0
      [ "$mode" = persistent ] && persistent=1
      run_step "bench $preset $dtype $mode" "$LOG_DIR/bench_${preset}_${dtype}_${mode}.log" \
        "${BENCH_TIMEOUT_S:-90}" "$persistent" "$PYTHON" benchmarks/bench_lstm.py \
        --device cuda --preset "$preset" --dtype "$dtype" --out "$LOG_DIR/bench_$mode" \
        ${BENCH_ARGS:-}
    done
  done
done

print_summary
[ "$FAILURES" -eq 0 ]
