# The two commands in the README do every set-up step; both are idempotent.
#   make run    set up what running needs, link `edge` into ~/.local/bin, then run the
#               recorder (a demo when there is no microphone)
#   make test   set up that plus the test tooling, then lint, type-check and run the tests
# Either may come first; `make test` adds the dev extra to the venv `make run` made, and
# `make run` after `make test` installs nothing.
SHELL := /bin/bash
# The distribution's Python (Debian's and Raspberry Pi OS's, built with PGO and LTO: the
# interpreter a device runs), whose venv module and headers scripts/apt-deps.sh installs;
# python3 on the PATH where there is none. `make PYTHON=...` picks another.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edge-installed
RUN_STAMP := $(VENV)/.edge-run-installed
SOURCES_STAMP := pyproject.toml
# Where `make run` links the `edge` command (on Debian's default PATH once it exists).
LINK_DIR ?= $(HOME)/.local/bin

.PHONY: setup setup-run apt apt-run venv venv-run models link run test test-slow test-systemd
.PHONY: test-ha
.PHONY: lint bench
.PHONY: clean install uninstall purge fuzz soak
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

setup: apt venv models
setup-run: apt-run venv-run models link

apt-run:
	@bash scripts/apt-deps.sh

apt:
	@bash scripts/apt-deps.sh --test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip

# openwakeword 0.6.0 is the reference for the parity tests and benchmarks only. On Linux its
# metadata demands tflite-runtime, which we never import (we run its onnx path), so it is
# installed without dependencies and its real run-time dependencies come with the dev extra.
$(STAMP): $(BIN)/python $(SOURCES_STAMP)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-deps 'openwakeword==0.6.0'
	touch $(STAMP) $(RUN_STAMP)

# Running needs only the base dependencies (no extra): numpy, onnxruntime, PyAudio, ...
# When the dev install is already there, it holds all of them.
$(RUN_STAMP): $(BIN)/python $(SOURCES_STAMP)
	if [ $(STAMP) -nt $(SOURCES_STAMP) ]; then :; else \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -e .; fi
	touch $(RUN_STAMP)

venv: $(STAMP)
venv-run: $(RUN_STAMP)

# Needs only the base install (the dev install includes it).
models: $(RUN_STAMP)
	$(BIN)/edge models fetch

# `edge` on the PATH: a link ~/.local/bin/edge -> this checkout's .venv/bin/edge. A file
# there that is not such a link (another program) is left alone.
link: $(RUN_STAMP)
	@bash scripts/link-edge.sh "$(abspath $(BIN))/edge" "$(LINK_DIR)"

run: setup-run
	$(BIN)/edge run --demo-if-no-device $(ARGS)

# lint-imports checks the package layers ([tool.importlinter] in pyproject.toml).
lint: venv
	$(BIN)/ruff check edge tests bench
	$(BIN)/mypy edge
	$(BIN)/lint-imports
	shellcheck install.sh scripts/*.sh

test: setup lint
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

# Tests marked slow (e.g. a full install.sh with every dependency): kept out of `make test`.
test-slow: setup
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

# install.sh and the service under a booted systemd (systemd-nspawn, as root): about 2 min,
# plus about 2 min the first time on a machine to debootstrap the Debian root it caches.
test-systemd: setup
	$(BIN)/python -m pytest -q tests/test_systemd_boot.py $(PYTEST_ARGS)

# A real Home Assistant (2026.x, in a Debian trixie root under systemd-nspawn, as root) adds
# the device through its ESPHome config flow and answers a spoken request: a few minutes, plus
# about 10 min the first time on a machine to build and cache the root (tests/ha_root.py).
test-ha: setup
	$(BIN)/python -m pytest -q tests/test_assist_ha_e2e.py $(PYTEST_ARGS)

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

# Also the ~/.local/bin/edge link, when it points into this checkout's venv.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
	if [ "$$(readlink "$(LINK_DIR)/edge")" = "$(abspath $(BIN))/edge" ]; then \
	  rm "$(LINK_DIR)/edge"; fi

# The Pi service (install.sh): install or upgrade in place, remove (keeps the data), remove all.
install:
	$(SUDO) ./install.sh $(ARGS)

uninstall:
	$(SUDO) ./install.sh --uninstall

purge:
	$(SUDO) ./install.sh --purge
