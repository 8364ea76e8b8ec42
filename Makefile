# The README's commands. Each builds the virtual environment from nothing.
#   make demo   set up, then run the quickstart (active learning on 1,000 real digit images)
#   make test   set up, then run the whole test suite
#   make test-fast   the tests that need no TensorFlow, Dask, root or X and take under ~3 s each (< 1 min)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/quickstart/run.sh

# one worker per core (pytest-xdist); every test is independent of the others' order and process
test: $(STAMP)
	$(BIN)/python -m pytest -n auto

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not tensorflow and not dask and not root and not xvfb"
