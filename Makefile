# Every target sets up what it needs on a fresh machine (Python >= 3.10, root for apt).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: help install demo demo-postgres test lint typecheck pytest pytest-sdk-old bench clean \
	chromium postgresql otlp-servers

help:
	@echo "make demo   - create $(VENV), install, run the demo on the embedded SQLite store, open the UI"
	@echo "make demo-postgres - the same demo and UI on a throwaway PostgreSQL server"
	@echo "make test   - install everything the tests need, then lint, type-check and test"
	@echo "make bench  - run the benchmarks in bench/ (installs the peers)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP)-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(STAMP)-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[fast,pandas,examples,ui,cost]"
	touch $@

$(STAMP)-demo-postgres: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[fast,pandas,examples,ui,cost,postgres]"
	touch $@

$(STAMP)-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $@

install: $(STAMP)-test

# The demo's traces stay in $(DEMO_DB) and the UI serves them until Ctrl+C.
DEMO_DB ?= demo.db
UI_PORT ?= 5000

demo: $(STAMP)-demo
	rm -f $(DEMO_DB) $(DEMO_DB)-wal $(DEMO_DB)-shm
	$(BIN)/python examples/chat_demo.py --db $(DEMO_DB)
	$(BIN)/sessiontrace ui --db $(DEMO_DB) --port $(UI_PORT)

# PostgreSQL's server binaries (Debian keeps them in /usr/lib/postgresql/N/bin, off PATH).
# scripts/pg_throwaway.py runs a server in a temp dir for one command and stops it
# however the command ends: `run --` gives the command $$SESSIONTRACE_TEST_PG_URI and $$PG_URI.
PG_RUN := $(BIN)/python scripts/pg_throwaway.py run --

# make demo on PostgreSQL: the demo's app writes to a throwaway server and the UI reads
# it; Ctrl+C stops the UI, then the server, which is thrown away with its traces.
demo-postgres: $(STAMP)-demo-postgres postgresql
	$(PG_RUN) sh -c '$(BIN)/python examples/chat_demo.py --db "$$PG_URI" \
		&& $(BIN)/sessiontrace ui --db "$$PG_URI" --port $(UI_PORT)'

# ruff reads pyproject.toml and skips what .gitignore ignores (.venv, build output).
lint: $(STAMP)-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)-test
	$(BIN)/mypy

# The browser tests need Debian's Chromium; in CI a missing browser fails them, never skips.
CHROMIUM ?= /usr/bin/chromium

chromium:
	@test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| { echo "could not install chromium (needed by tests/browser)"; exit 1; }

# The PostgreSQL tests need its server binaries; in CI a missing PostgreSQL fails them,
# never skips (the tests' fixture also starts a server by itself when run without make).
postgresql:
	@test -x /usr/lib/postgresql/15/bin/initdb || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql \
			&& ls /usr/lib/postgresql/*/bin/initdb >/dev/null) \
		|| { echo "could not install postgresql (needed by the PostgreSQL tests and demo-postgres)"; exit 1; }

# Real MLflow and Phoenix servers for the OTLP round-trip tests (tests/otlp), each in a venv
# of its own with pinned versions (.venv-mlflow, .venv-phoenix); kept while the pins hold.
# In CI a server that cannot be installed or started fails those tests, never skips them.
otlp-servers:
	$(PYTHON) scripts/otlp_servers.py install mlflow phoenix

# One throwaway PostgreSQL for the whole run; the fixtures find it in $$SESSIONTRACE_TEST_PG_URI.
pytest: $(STAMP)-test chromium postgresql otlp-servers
	$(PG_RUN) $(BIN)/python -m pytest

# tests/llm once more on the previous majors of the SDKs (openai 1.x uses httpx, 3.x
# httpx2; anthropic 0.x vs 2.x), in a venv of their own. A missing or wrong version
# fails the target; nothing is skipped.
SDK_OLD_VENV ?= .venv-sdk-old
SDK_OLD_PINS ?= openai==1.109.1 anthropic==0.69.0

$(SDK_OLD_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(SDK_OLD_VENV)
	$(SDK_OLD_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(SDK_OLD_VENV)/bin/python -m pip install --quiet -e ".[test]" $(SDK_OLD_PINS)
	touch $@

pytest-sdk-old: $(SDK_OLD_VENV)/.installed
	$(SDK_OLD_VENV)/bin/python -c "import openai, anthropic; \
		assert openai.__version__.startswith('1.'), openai.__version__; \
		assert anthropic.__version__.startswith('0.'), anthropic.__version__; \
		print('old SDKs: openai', openai.__version__, 'anthropic', anthropic.__version__)"
	$(SDK_OLD_VENV)/bin/python -m pytest tests/llm

test: lint typecheck pytest pytest-sdk-old

bench: $(STAMP)-bench
	$(BIN)/python bench/trace_overhead.py
	$(BIN)/python bench/llm_overhead.py

clean:
	rm -rf $(VENV) $(SDK_OLD_VENV) .venv-mlflow .venv-phoenix .mypy_cache .ruff_cache .pytest_cache dist build
