# The two commands: `make run` starts the service on the embedded SQLite default,
# `make test` installs what it needs and runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint browser bench demo migrate clean

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

# The console's browser tests drive Debian's chromium (Playwright's own browser download
# cannot work here). Installed when missing and we are root (CI); otherwise the tests skip
# with the reason, except under CI, where a missing browser fails them.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; \
	else echo "make browser: /usr/bin/chromium is missing; as root: apt-get install chromium"; fi

test: lint browser
	$(BIN)/pytest -q

bench: $(STAMP)
	@for b in bench/store.py bench/ingest.py bench/forge_ingest.py bench/rebuild.py bench/verify.py; do \
		echo "== $$b"; $(BIN)/python $$b || exit $$?; done

demo: $(STAMP)
	$(BIN)/ledger demo

migrate: $(STAMP)
	$(BIN)/ledger migrate

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# The console's screenshots in docs/ (console-*.png), taken by its browser test on SQLite.
.PHONY: screenshots
screenshots: $(STAMP) browser
	LEDGER_CONSOLE_SCREENSHOTS=docs $(BIN)/pytest -q tests/test_console_views.py -k "browser and sqlite"
