# The README's two commands: `make demo` and `make test`. Both create .venv from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# This machine type keeps the CPU build of torch on disk; point pip at it so the exact torch pin
# is satisfied locally instead of by multi-GB CUDA wheels from the index.
export PIP_FIND_LINKS ?= $(wildcard /opt/wheels)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo install test test-all test-fast bench lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)  # the venv alone; cluster/node_setup.sh installs every cluster node this way

demo: $(STAMP)
	$(BIN)/python jobs/pipeline.py

# CI's suite (goal: well under 20 min on 2 cores). The `extended` tier (multi-node, cluster head services,
# a live Prometheus, pipeline via CLI and SDK, multirun grid, S3 job, failing sweep trial) adds ~12 min:
# `make test-all`.
test: $(STAMP)
	$(BIN)/ruff check mlinfra_ray jobs tests
	$(BIN)/python -m pytest -m "not extended"

test-all: $(STAMP)
	$(BIN)/ruff check mlinfra_ray jobs tests
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

lint: $(STAMP)
	$(BIN)/ruff check mlinfra_ray jobs tests

clean:
	rm -rf .mlinfra outputs multirun
