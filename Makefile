# The README's two commands: `make run` and `make test`. Each sets up .venv on first use
# from the hash-locked requirements.lock, so a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint schema bench soak

# GraphiQL's browser files (React, GraphiQL, its explorer plugin), served by the gateway
# itself: installed by `npm ci` from app/web/package-lock.json (exact versions, each
# tarball checked against its integrity hash), never committed. Without npm, or when the
# install fails (no registry reachable), the gateway starts all the same and its GraphiQL
# page says how to install them (README: "GraphiQL without internet").
WEB := app/web
WEB_STAMP := $(WEB)/node_modules/.package-lock.json

run: $(STAMP) $(WEB_STAMP)
	$(VENV)/bin/lumi serve

# Three pytest workers (pytest-xdist): most tests wait on servers, sockets and
# subprocesses, so three share two cores well (the whole suite: 532 s, against 630 s with
# two, on 2 cores). TEST_WORKERS=0 runs in one process. Each test file runs
# whole in one worker: its module-scoped servers start once, and a module whose tests
# share state (the fuzz counts what its tests sent) sees all of it.
TEST_WORKERS ?= 3

# The npm clients the suite runs against a live gateway (Apollo, urql, graphql-ws,
# graphql-sse, graphql-http), installed by `npm ci` from tests/clients/package-lock.json:
# exact versions, each tarball checked against its integrity hash. npm ci rewrites
# node_modules/.package-lock.json, so a changed lock installs again.
CLIENTS := tests/clients
CLIENTS_STAMP := $(CLIENTS)/node_modules/.package-lock.json

test: $(STAMP) $(CLIENTS_STAMP) $(WEB_STAMP)
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# Benchmarks with production backends (MariaDB, Redis), outside `make test`; see
# tests/bench/README.md. BENCH_ARGS="--quick" for a ~10x smaller smoke run.
bench: $(STAMP)
	$(VENV)/bin/python -m tests.bench $(BENCH_ARGS)

# The soak: 1,000 live subscriptions and a steady operation mix for 10 minutes at 50 and
# at 100 operations/s (about 30 minutes); exits non-zero on an error or a lost event.
# SOAK_ARGS="--minutes 3 --rates 50" for a shorter run.
soak: $(STAMP)
	$(VENV)/bin/python -m tests.bench.soak $(SOAK_ARGS)

schema: $(STAMP)
	$(VENV)/bin/lumi schema > schema.graphql

$(CLIENTS_STAMP): $(CLIENTS)/package-lock.json $(CLIENTS)/package.json
	npm ci --prefix $(CLIENTS) --ignore-scripts --no-audit --no-fund

$(WEB_STAMP): $(WEB)/package-lock.json $(WEB)/package.json
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "warning: npm is not installed, so neither are GraphiQL's files: see README, GraphiQL without internet" >&2; \
	elif ! npm ci --prefix $(WEB) --ignore-scripts --no-audit --no-fund; then \
	  echo "warning: npm ci failed in $(WEB), GraphiQL's files are not installed: see README, GraphiQL without internet" >&2; \
	fi

# uv installs the lock in seconds where pip takes most of a minute; uv itself comes from
# requirements.uv.lock, hash-checked. uv reads no pip configuration: where only a mirror
# set up for pip is reachable, its install fails and pip installs the same lock. Both
# compile the bytecode up front (about 10 s): else the suite's first few hundred `lumi`
# processes, started side by side, would each compile the same libraries again.
PIP := $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check
UV := $(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python

$(STAMP): requirements.lock requirements.uv.lock pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r requirements.uv.lock
	$(UV) --compile-bytecode --require-hashes -r requirements.lock \
	  || $(PIP) --require-hashes -r requirements.lock
	$(UV) --no-deps --no-build-isolation -e . || $(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)
