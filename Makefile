# Two commands do all the set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint unit soak bench prosody postgres clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

prosody:
	@.ci/ensure-prosody

postgres:
	@.ci/ensure-postgres

## Start the whole service: private Prosody on loopback, migrated SQLite, region data.
run: $(STAMP) prosody
	$(BIN)/imserver dev

lint: $(STAMP)
	$(BIN)/ruff check imserver plugins tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

## Lint, type-check, layer contracts and the whole suite on SQLite and PostgreSQL.
test: $(STAMP) prosody postgres lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not soak"

## The long fault runs.
soak: $(STAMP) prosody postgres
	$(BIN)/pytest -q -m soak

bench: $(STAMP)
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

clean:
	rm -rf var $(VENV)
