# fnn: `make train` trains the digits model, `make test` runs the test suite.
# Both create .venv and install fnn with what they need on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/digits

.PHONY: install test test-all train lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,plot]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m ""

train: $(STAMP)
	$(BIN)/python scripts/train.py --dataset digits --out $(OUT)

lint: $(STAMP)
	$(BIN)/ruff check fnn tests scripts benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
