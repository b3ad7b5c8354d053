# Quick start:  make train   (set up, then train the default experiment on the CPU in a few minutes)
#               make test    (set up, then run the fast test suite)
# Set-up is idempotent: libsndfile1 is installed only when missing, the virtual environment only
# when absent, and the package only when pyproject.toml changed since the last install.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tenfold-installed

# The default experiment and its CPU-sized setting (see README, "Running experiments").
EXPERIMENT ?= samplers/gmm25_tb_expl_ls
TRAIN_ARGS ?= trainer=cpu trainer.max_epochs=6 trainer.check_val_every_n_epoch=2 callbacks.sample_plots.every_n_epochs=2

.PHONY: help setup system-deps train test test-slow lint clean-logs

help:
	@echo "make train      set up, then: python train.py experiment=$(EXPERIMENT) $(TRAIN_ARGS)"
	@echo "make test       set up, then: $(PY) -m pytest   (fast suite)"
	@echo "make test-slow  set up, then: $(PY) -m pytest -m slow   (long training runs)"
	@echo "make lint       set up, then: pyflakes over the code, tests and benchmarks"
	@echo "make setup      system library, virtual environment and package only"

setup: system-deps $(STAMP)

# fairseq2 loads libsndfile at import; Debian's package libsndfile1 provides it.
system-deps:
	@if ! /sbin/ldconfig -p 2>/dev/null | grep -q 'libsndfile\.so\.1'; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "Installing libsndfile1 (apt-get)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsndfile1 >/dev/null; \
	  else \
	    echo "WARNING: libsndfile1 is missing; fairseq2 needs it: sudo apt-get install libsndfile1" >&2; \
	  fi; \
	fi

# keyed on pip, not python: a venv creation that failed for want of ensurepip (Debian's
# python3-venv) leaves a python without pip, which --clear replaces on the next call
$(VENV)/bin/pip:
	$(PYTHON) -m venv --clear $(VENV) || { echo "creating $(VENV) failed: on Debian/Ubuntu, apt-get install python3-venv" >&2; exit 1; }

$(STAMP): pyproject.toml | $(VENV)/bin/pip
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

train: setup
	$(PY) train.py experiment=$(EXPERIMENT) $(TRAIN_ARGS)

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

lint: setup
	$(PY) -m pyflakes train.py tenfold tests benchmarks

clean-logs:
	rm -rf logs
