# Quick start:  make bench   (build, then run the benchmark: GPU when present, else the CPU)
#               make test    (build, then run the test suite)
#               make lint    (ruff and clang-format check the sources; make format fixes them)
# They create .venv (bench and test with torch, lstm_ext built into it) on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1
PRESET ?= quick
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2

# The formatters are pinned: another version formats differently and would fail `make lint`.
LINT_TOOLS := ruff==0.17.6 clang-format==23.1.5
CXX_SOURCES := $(wildcard csrc/*/*.h csrc/*/*.cpp csrc/*/*.cu) \
	$(wildcard tests/cpp/*.cpp examples/aoti_cpp/*.cpp)

SOURCES := setup.py pyproject.toml $(wildcard csrc/*/*.h csrc/*/*.cpp csrc/cuda/*.cu) $(wildcard lstm_ext/*.py)

.PHONY: setup bench test lint format clean

setup: $(VENV)/.lstm_ext-installed

$(VENV)/.torch-installed:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" numpy ninja pytest hypothesis expecttest matplotlib tqdm setuptools wheel \
		onnx onnxscript onnxruntime $(LINT_TOOLS)
	touch $@

# The lint tools alone (no torch needed), also for a .venv made before they joined the line above.
$(VENV)/.lint-installed:
	test -x $(VENV)/bin/pip || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q $(LINT_TOOLS)
	touch $@

$(VENV)/.lstm_ext-installed: $(VENV)/.torch-installed $(SOURCES)
	$(VENV)/bin/pip install -q --no-build-isolation --no-deps .
	touch $@

bench: setup
	$(VENV)/bin/python benchmarks/bench_lstm.py --preset $(PRESET)

test: setup
	$(VENV)/bin/pytest -q tests

# Every check runs, so that one run lists all that is wrong; any failure fails the target.
lint: $(VENV)/.lint-installed
	@status=0; \
	$(VENV)/bin/ruff check . || status=1; \
	$(VENV)/bin/ruff format --check . || status=1; \
	$(VENV)/bin/clang-format --dry-run --Werror $(CXX_SOURCES) || status=1; \
	exit $$status

# Fixes what the tools can fix; `make lint` lists what is left to fix by hand.
format: $(VENV)/.lint-installed
	$(VENV)/bin/ruff check --fix --exit-zero .
	$(VENV)/bin/ruff format .
	$(VENV)/bin/clang-format -i $(CXX_SOURCES)

clean:
	rm -rf build $(VENV) *.egg-info lstm_ext/*.so
