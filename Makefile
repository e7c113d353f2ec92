# Quick start:  make bench   (build, then run the benchmark: GPU when present, else the CPU)
#               make test    (build, then run the test suite)
# Both create .venv with torch and build lstm_ext into it on first use.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1
PRESET ?= quick
export TORCH_CUDA_ARCH_LIST ?= 9.0
export MAX_JOBS ?= 2

SOURCES := setup.py pyproject.toml $(wildcard csrc/*/*.h csrc/*/*.cpp csrc/cuda/*.cu) $(wildcard lstm_ext/*.py)

.PHONY: setup bench test clean

setup: $(VENV)/.lstm_ext-installed

$(VENV)/.torch-installed:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH_SPEC)" numpy ninja pytest hypothesis expecttest matplotlib tqdm setuptools wheel \
		onnx onnxscript onnxruntime
	touch $@

$(VENV)/.lstm_ext-installed: $(VENV)/.torch-installed $(SOURCES)
	$(VENV)/bin/pip install -q --no-build-isolation --no-deps .
	touch $@

bench: setup
	$(VENV)/bin/python benchmarks/bench_lstm.py --preset $(PRESET)

test: setup
	$(VENV)/bin/pytest -q tests

clean:
	rm -rf build $(VENV) *.egg-info lstm_ext/*.so
