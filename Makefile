# Two commands do all the set-up: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_STAMP := $(VENV)/.demo-stamp

.PHONY: run run-ejabberd demo test lint unit soak bench bench-full prosody ejabberd postgres fonts zbar promtool clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@touch $(STAMP)

prosody:
	@.ci/ensure-prosody

## ejabberd (Debian's 23.01) for the scale-out tests; the system service stays off.
ejabberd:
	@.ci/ensure-ejabberd

postgres:
	@.ci/ensure-postgres

## The CJK font of invite posters; the QR and PDF readers of their tests.
fonts:
	@.ci/ensure-fonts

zbar:
	@.ci/ensure-zbar

## Prometheus' promtool, to check deploy/prometheus/; the system Prometheus stays off.
promtool:
	@.ci/ensure-promtool

## Start the whole service: private Prosody on loopback, migrated SQLite, region data.
run: $(STAMP) prosody fonts
	$(BIN)/imserver dev

## A private ejabberd on config.toml's ports instead of Prosody (var/ejabberd); then
## start `imserver run` as many times as wanted (on PostgreSQL) against it.
run-ejabberd: $(STAMP) ejabberd
	$(BIN)/python -m imserver.devserver.ejabberd

$(DEMO_STAMP): $(STAMP)
	$(BIN)/pip install -q -e '.[demo]'
	@touch $(DEMO_STAMP)

## The demo: a small city seeded through Prosody, a day of payments, a summary from the
## database and a picture of the network (SVG and PNG, drawn with the [demo] extra's
## matplotlib). Uses the Prosody and component of a running `make run`, or starts them.
demo: $(DEMO_STAMP) prosody
	$(BIN)/imserver demo

lint: $(STAMP)
	$(BIN)/ruff check imserver plugins tests bench migrations examples
	$(BIN)/mypy
	$(BIN)/lint-imports

## Lint, type-check, layer contracts and the whole suite on SQLite and PostgreSQL.
test: $(STAMP) prosody ejabberd postgres fonts zbar promtool lint
	$(BIN)/pytest -q -p no:cacheprovider -m "not soak" --durations=15

## The long fault runs.
soak: $(STAMP) prosody ejabberd postgres
	$(BIN)/pytest -q -m soak

## Every benchmark once (the end-to-end one: SQLite, one payer); JSON in bench/results/.
bench: $(STAMP) prosody postgres
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b; done

## The end-to-end matrix of issue 9: SQLite and PostgreSQL, one payer, 10,000 and
## 1,000,000 members (bulk-loaded); about an hour on 2 cores.
bench-full: $(STAMP) prosody postgres
	@for db in sqlite postgresql; do \
	  $(BIN)/python bench/bench_e2e.py --db $$db --wait-idle 600 && \
	  for n in 10000 1000000; do \
	    $(BIN)/python bench/bench_e2e.py --db $$db --population realistic --members $$n \
	      --part payments --wait-idle 600 && \
	    $(BIN)/python bench/bench_e2e.py --db $$db --population realistic --members $$n \
	      --part registrations --wait-idle 600 || exit 1; \
	  done || exit 1; \
	done

clean:
	rm -rf var $(VENV)
