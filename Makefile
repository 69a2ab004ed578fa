# Forestry Exchange Hub — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo demo-stop test check install services clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

services:
	bash scripts/ensure-services.sh

## make demo: environment, install, services, migrations, demo PKI and directory, hub + adapters, a scenario.
demo: install services
	$(BIN)/python -m hub.demo

## make test: the whole suite (unit, integration against the real RabbitMQ and PostgreSQL, e2e).
test: install services
	$(BIN)/python -m pytest -q -p no:cacheprovider

## make check: lint, format and types.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make demo-stop: stop the hub that make demo left running.
demo-stop:
	-$(BIN)/python -m hub.demo --stop-only

## make bench: every benchmark, each printing the hub beside its raw baseline.
bench: install services
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/trust.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/e2e.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
