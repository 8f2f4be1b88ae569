# The two commands of the README's quick start: `make up` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint floors bench clean

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
	$(BIN)/ruff check modelreg central sidecar cli tests benchmarks examples
	$(BIN)/ruff format --check modelreg central sidecar cli tests benchmarks examples
	$(BIN)/mypy

## floors: the lowest dependency versions pyproject.toml accepts pass the smoke test
## (FLOORS_TESTS=tests runs the whole suite on them)
floors: $(STAMP)
	bash .ci/floors

## bench: run the benchmarks (see benchmarks/RESULTS.md)
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) .reg
