# batchyard. A new clone needs two commands: `make run` (start everything) and `make test`.
# Both install first into .venv; installing again is skipped until pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install run test lint format contracts bench clean

help:
	@echo "make run        install if needed, then start batchyard here (Ctrl-C stops it)"
	@echo "make test       install if needed, then run the test suite (PYTEST_ARGS=... to pass options)"
	@echo "make lint       ruff check, ruff format --check, mypy"
	@echo "make format     ruff format and ruff check --fix"
	@echo "make contracts  regenerate the JSON Schemas and the AsyncAPI document in contracts/"
	@echo "make bench      run every benchmark in bench/"
	@echo "make clean      remove .venv and caches (keeps the data in .batchyard/)"

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "batchyard needs Python 3.11 or newer as '$(PYTHON)' (found: $$($(PYTHON) --version 2>&1)); try: make PYTHON=python3.11"; \
		exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		rm -rf $(VENV); \
		echo "could not create a virtual environment; on Debian or Ubuntu: apt-get install python3-venv"; \
		exit 2; }
	$(BIN)/python -m pip install --disable-pip-version-check --no-input -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: install
	$(BIN)/batchyard up

test: install
	@$(BIN)/pytest -ra $(PYTEST_ARGS); status=$$?; \
		if [ $$status -eq 5 ]; then echo "pytest collected no tests: that is a failure, not a pass"; fi; \
		exit $$status

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

contracts: install
	$(BIN)/python -m contracts.generate

bench: install
	@found=0; for script in bench/*.py; do \
		[ -e "$$script" ] || continue; found=1; \
		echo "== $$script"; $(BIN)/python "$$script" || exit $$?; \
	done; \
	[ $$found -eq 1 ] || echo "no benchmarks in bench/ yet"

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.batchyard -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	@echo "kept the data in .batchyard/; remove that directory to start from nothing"
