# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv if it is missing, install
# torch==2.13.0 first (so that pip never resolves a torch of its own), then medssl with its dev extras.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.medssl-installed
DEMO_DIR ?= demo_output
PYTEST_WORKERS ?= 2

.PHONY: all setup demo test test-all bench lint format clean

all: test

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "medssl needs Python >= 3.11, found " + sys.version'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/medssl demo --out $(DEMO_DIR)

test: $(STAMP)
	$(PY) -m pytest -m "not slow" -n $(PYTEST_WORKERS) --durations=15

test-all: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --durations=25

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --out bench_output

lint: $(STAMP)
	$(VENV)/bin/ruff check medssl tests benchmarks
	$(VENV)/bin/black --check medssl tests benchmarks

format: $(STAMP)
	$(VENV)/bin/ruff check --fix medssl tests benchmarks
	$(VENV)/bin/black medssl tests benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) bench_output .pytest_cache
