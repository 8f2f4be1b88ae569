# The two commands of the README's quick start: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## up: set up .venv and run central + sidecar on the embedded default (data in ./.reg)
up: $(STAMP)
	$(BIN)/reg up $(ARGS)

## test: set up .venv, lint, type-check and run the test suite
test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check central sidecar cli tests benchmarks examples
	$(BIN)/ruff format --check central sidecar cli tests benchmarks examples
	$(BIN)/mypy

## bench: run the benchmarks (see benchmarks/RESULTS.md)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .reg
