# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Every pip call gets constraints.txt, so torch stays the CPU wheel and no CUDA packages are pulled.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
STAMP := $(VENV)/.installed
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_NO_ADVISORY_WARNINGS=1

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --constraint constraints.txt --upgrade pip
	$(PIP) install --quiet --constraint constraints.txt --editable '.[all]'
	touch $(STAMP)

demo: setup
	$(OFFLINE) $(BIN)/nearid demo --out runs/demo

LINTED := src tests benchmarks scripts examples

test: setup lint
	$(OFFLINE) $(BIN)/python -m pytest -q

# the suite without the tests marked slow (several processes, kill/resume, diffusers, many subprocesses)
test-fast: setup lint
	$(OFFLINE) $(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

bench: setup
	$(OFFLINE) $(BIN)/python benchmarks/embed_throughput.py

clean:
	rm -rf $(VENV) runs .pytest_cache
