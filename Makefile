# The two commands in the README do every set-up step; both are idempotent.
#   make run    set up, then run the recorder (a demo when there is no microphone)
#   make test   set up, then lint, type-check and run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edge-installed
SOURCES_STAMP := pyproject.toml

.PHONY: setup apt venv models run test lint bench clean install uninstall purge
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

setup: apt venv models

apt:
	@bash scripts/apt-deps.sh

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip

# openwakeword 0.6.0 is the reference for the parity tests and benchmarks only. On Linux its
# metadata demands tflite-runtime, which we never import (we run its onnx path), so it is
# installed without dependencies and its real run-time dependencies come with the dev extra.
$(STAMP): $(BIN)/python $(SOURCES_STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps 'openwakeword==0.6.0'
	touch $(STAMP)

venv: $(STAMP)

models: venv
	$(BIN)/edge models fetch

run: setup
	$(BIN)/edge run --demo-if-no-device $(ARGS)

lint: venv
	$(BIN)/ruff check edge tests bench
	$(BIN)/mypy edge
	shellcheck install.sh

test: setup lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The Pi service (install.sh): install or upgrade in place, remove (keeps the data), remove all.
install:
	$(SUDO) ./install.sh $(ARGS)

uninstall:
	$(SUDO) ./install.sh --uninstall

purge:
	$(SUDO) ./install.sh --purge
