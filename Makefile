# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs what it needs on first use: the demo only the runtime and the
# export (PyTorch CPU, transformers, ONNX), the tests everything (serving, Ray, ModelOpt, TensorRT lean).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO := $(VENV)/.installed-demo
FULL := $(VENV)/.installed

.PHONY: demo test bench gpu-bench serve clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(DEMO): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[export]"
	touch $@

$(FULL): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[export,calibration,dev,serve,ray]"
	touch $@ $(DEMO)

demo: $(DEMO)
	$(PY) scripts/demo.py

test: $(FULL)
	$(PY) -m pytest

# OpenAI-compatible server on the default model (exported on first use), media folder out/
serve: $(FULL)
	mkdir -p out
	$(PY) scripts/serve.py --media-dir out

bench: $(DEMO)
	$(PY) scripts/bench_core.py

# The GPU suite (one NVIDIA GPU, no network): parity, rates, 7B + 3B at 32 and 96 frames -> docs/gpu/.
# Installs nothing: the .venv's python if there is one, else the host's (a GPU image with torch).
gpu-bench:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_bench.py

clean:
	rm -rf $(VENV) out
