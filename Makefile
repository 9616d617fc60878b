# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs the project on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[export,calibration,dev,serve,ray]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

test: $(STAMP)
	$(PY) -m pytest

# OpenAI-compatible server on the default model (exported on first use), media folder out/
serve: $(STAMP)
	mkdir -p out
	$(PY) scripts/serve.py --export-missing --media-dir out

bench: $(STAMP)
	$(PY) scripts/bench_core.py

clean:
	rm -rf $(VENV) out
