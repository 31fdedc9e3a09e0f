# The two commands: `make run` starts the service on the embedded SQLite default,
# `make test` installs what it needs and runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint bench demo migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/ledger serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	@for b in bench/store.py bench/ingest.py bench/rebuild.py; do \
		echo "== $$b"; $(BIN)/python $$b || exit $$?; done

demo: $(STAMP)
	$(BIN)/ledger demo

migrate: $(STAMP)
	$(BIN)/ledger migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
