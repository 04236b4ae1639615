# The two commands in the README do every set-up step; both are idempotent.
#   make run    set up, then run the recorder (a demo when there is no microphone)
#   make test   set up, then lint, type-check and run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edge-installed
SOURCES_STAMP := pyproject.toml

.PHONY: setup apt venv models run test test-slow lint bench clean install uninstall purge
.PHONY: fuzz soak
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

# lint-imports checks the package layers ([tool.importlinter] in pyproject.toml).
lint: venv
	$(BIN)/ruff check edge tests bench
	$(BIN)/mypy edge
	$(BIN)/lint-imports
	shellcheck install.sh

test: setup lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Tests marked slow (e.g. a full install.sh with every dependency): kept out of `make test`.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/run_all.py

# Every fuzz target with 10,000 cases each (make test runs a fast subset of the same tests).
FUZZ_TESTS := tests/test_fuzz_config.py tests/test_fuzz_cli.py tests/test_fuzz_audio.py \
	tests/test_fuzz_mqtt.py
fuzz: setup
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q --hypothesis-show-statistics $(FUZZ_TESTS)

# 24 hours of audio through the live daemon (about half an hour here); HOURS=0.5 for less.
HOURS ?= 24
soak: setup
	nice $(BIN)/python bench/soak.py --hours $(HOURS) --out bench/results/soak.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

# The Pi service (install.sh): install or upgrade in place, remove (keeps the data), remove all.
install:
	$(SUDO) ./install.sh $(ARGS)

uninstall:
	$(SUDO) ./install.sh --uninstall

purge:
	$(SUDO) ./install.sh --purge
