# fnn: `make train` trains the digits model, `make test` runs the test suite.
# Both create .venv and install fnn with what they need on a fresh machine.
# `make docs` builds the documentation site into site/ (warnings are errors).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
OUT    ?= runs/digits

.PHONY: install test test-all train lint docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev,plot]"
	touch $(STAMP)

install: $(STAMP)

# PyTorch for the tests that compare fnn.interop with real torch.nn modules, only
# where pip finds a CPU build in its local wheels (--no-index: never the
# registry's CUDA build); elsewhere those tests skip. Its dependencies come next.
TORCH_STAMP := $(VENV)/.torch-stamp

$(TORCH_STAMP): $(STAMP)
	@if $(BIN)/python -m pip install --quiet --no-deps --no-index "torch==2.13.0" \
	    2>/dev/null; then \
	  $(BIN)/python -m pip install --quiet "torch==2.13.0"; \
	else \
	  echo "No local PyTorch CPU wheel: the comparisons with torch.nn are skipped."; \
	fi
	touch $(TORCH_STAMP)

test: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP) $(TORCH_STAMP)
	$(BIN)/python -m pytest -q -n 2 -m ""

train: $(STAMP)
	$(BIN)/python scripts/train.py --dataset digits --out $(OUT)

# The docs extra goes into the same .venv, once (its own stamp); the notebooks are
# executed in their quick form (FNN_QUICK=1) while the site is built.
DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev,plot,docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	FNN_QUICK=1 $(BIN)/mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check fnn tests scripts benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache site .cache
