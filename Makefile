# Works on a fresh machine with only Python 3 (>= 3.10): creates .venv, installs, runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test demo bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps 'trackeval>=1.3,<2' 'tabulate>=0.9,<1'
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed
	$(BIN)/python tools/bench_detector.py --config configs/sam3.toml

clean:
	rm -rf $(VENV) build *.egg-info
