# The README's two commands. Both build the virtual environment from nothing.
#   make demo   set up, then run the quickstart (active learning on 1,000 real digit images)
#   make test   set up, then run the whole test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/quickstart/run.sh

test: $(STAMP)
	$(BIN)/python -m pytest
