# Forestry Exchange Hub — the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
#: The transport and pipeline integration tests, run a second time by `make test` (beside the main pass) with
#: HUB_AMQP_FAST=0 (aiormq's own code paths only: hub/transport/_aiormq_fast.py switched off).
TEST_WORKERS ?= 3
FAST_OFF_TESTS := tests/integration/test_transport.py tests/integration/test_pipeline.py tests/integration/test_crash.py

.PHONY: demo demo-stop test check install lock services clean bench faults

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Every dependency at the version in the lock file, then the project itself without resolving anything again.
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -r $(LOCK)
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

## make lock: resolve pyproject.toml's dependencies (with dev) afresh in a throw-away venv and write the lock file.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q '.[dev]'
	{ sed -n '/^#/p' $(LOCK); .venv-lock/bin/pip freeze --exclude-editable | grep -iv '^forestry.exchange.hub'; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)
	rm -rf .venv-lock build

services:
	bash scripts/ensure-services.sh

## make demo: environment, install, services, migrations, demo PKI and directory, hub + adapters, a scenario.
demo: install services
	$(BIN)/python -m hub.demo

## make test: the whole suite (unit, integration against the real RabbitMQ and PostgreSQL, e2e) and, beside it, the
## transport and pipeline integration tests again with the AMQP fast paths off (one more worker; its output follows the
## main pass's, from var/test-fast-off.log). Three pytest-xdist workers on the two cores (the suite waits on the
## broker, the store and subprocesses: two left them a quarter idle, and the fast-off pass run after the main one
## added its minute; side by side the two cores are about 80 % busy; TEST_WORKERS=N to change, 0 runs in this
## process): each has its own database, RabbitMQ namespace and temporary directories and takes whole test files (a
## module's tests share its fixtures and run in their order), the longest files first (tests/conftest.py LONG_FIRST;
## --no-loadscope-reorder keeps that order). The main pass ends with its 15 slowest tests, so that every CI log says
## where the time went. Fails if either pass fails.
test: install services
	@mkdir -p var
	@HUB_AMQP_FAST=0 $(BIN)/python -m pytest -q -p no:cacheprovider -n 1 --dist loadfile $(FAST_OFF_TESTS) \
		> var/test-fast-off.log 2>&1 & fast_off=$$!; trap 'kill $$fast_off 2>/dev/null' INT TERM; \
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder \
		--durations=15; main=$$?; \
	wait $$fast_off; off=$$?; \
	echo "--- HUB_AMQP_FAST=0: $(FAST_OFF_TESTS) (beside the main pass; var/test-fast-off.log)"; \
	cat var/test-fast-off.log; \
	echo "make test: main pass exit $$main, HUB_AMQP_FAST=0 pass exit $$off"; \
	test $$main -eq 0 && test $$off -eq 0

## make check: lint, format and types.
check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make demo-stop: stop the hub that make demo left running.
demo-stop:
	-$(BIN)/python -m hub.demo --stop-only

## make bench: every benchmark, each printing the hub beside its raw baseline (bench/sdk.py's FastStream baseline is
## installed here, never by make install or make test).
bench: install services
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/trust.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/e2e.py
	$(BIN)/pip install -q --no-deps faststream==0.7.8 fast-depends==3.0.9 anyio==4.16.0 pydantic==2.14.4 \
		pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
	$(BIN)/python bench/sdk.py

## make faults: every fault test of issue 16 in full (worker SIGKILL ×10, broker stop and SIGKILL, PostgreSQL restart
## and disk full, a recipient offline, a slow/stalled/cut sender link), then the core faults with HUB_AMQP_FAST=0, on a
## PostgreSQL instance and RabbitMQ node of their own (never the shared services); prints the table, last line
## faults_lost=<n> faults_rows=<n>. Needs root (a tmpfs for the full disk, postgres' initdb).
faults: install
	$(BIN)/python scripts/faults/run.py

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
