# neuroreg: two commands.
#   make demo   create .venv, install neuroreg, run the quickstart reproduction (5 arms x 3 seeds + report)
#   make test   install the test extras, lint (ruff) and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint test-install install

demo: install
	$(BIN)/neuroreg repro quickstart

test: test-install lint
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

lint: test-install
	$(BIN)/python -m ruff check .

test-install: install
	$(BIN)/python -m pip install --quiet -e '.[test,nwb,netcdf-tests]'

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@
