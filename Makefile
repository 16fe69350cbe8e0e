.PHONY: help install test test-pg15 lint typecheck demo bench pgqueuer-sql

PY ?= python

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: ## install ue-resync with the test and dev tools, editable
	$(PY) -m pip install -e '.[dev]'

test: ## the test suite, on an embedded PostgreSQL (or UE_RESYNC_TEST_DSN)
	$(PY) -m pytest

test-pg15: ## the test suite on the local PostgreSQL 15
	UE_RESYNC_TEST_DSN=postgresql://postgres@127.0.0.1:5432/postgres $(PY) -m pytest

lint: ## ruff: lint and format check
	ruff check .
	ruff format --check .

typecheck: ## mypy, strict on untyped defs
	mypy

demo: ## the whole system on an embedded PostgreSQL
	ue-resync demo

bench: ## every benchmark (bench/README.md)
	$(PY) -m bench.run_all

pgqueuer-sql: ## print what the installed pgqueuer would emit (compare with sql/migrations/0014_baseline.sql)
	$(PY) -c "from pgqueuer.adapters.persistence.schema_ddl import render_install; \
	from pgqueuer.domain.settings import DBSettings; \
	print(render_install(DBSettings(db_schema='resync', channel='ue_resync'), create_schema=False))"
