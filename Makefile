# neuroreg: two commands.
#   make demo   create .venv, install neuroreg, run the quickstart reproduction (3 arms x 3 seeds + report)
#   make test   install the test extras and run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test install

demo: install
	$(BIN)/neuroreg repro quickstart

test: install
	$(BIN)/python -m pip install --quiet -e '.[test,nwb,netcdf-tests]'
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $@
