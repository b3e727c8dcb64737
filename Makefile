# `make test` and `make demo` are the two commands a new user types: each
# creates .venv and installs the package on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q tests --doctest-modules bagnet_keras data_tools

demo: $(STAMP)
	$(BIN)/bagnet-keras demo

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/forward.py
	$(BIN)/python bench/evidence.py
	$(BIN)/python bench/clean.py
	$(BIN)/python bench/compare.py

clean:
	rm -rf $(VENV) build *.egg-info
