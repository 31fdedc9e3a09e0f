# The two commands: `make run` starts the service on the embedded SQLite default,
# `make test` installs what it needs and runs every check.
#
# Every dependency is pinned, with its hashes, in uv.lock (README, "Install and upgrades").
# uv itself is bootstrapped with pip into .uv/ (a tool of the build, not of the service);
# the service's environment stays .venv. `make run` installs the service's dependencies
# only; `make test` adds the test tools: the `dev` extra and the `bench` extra (the suite
# runs every benchmark at tiny sizes, against the eventsourcing peer).
# `make lock` regenerates uv.lock after pyproject.toml's dependencies change.
PYTHON ?= python3
UV_VERSION := 0.13.10
VENV := .venv
BIN := $(VENV)/bin
UV := .uv/bin/uv
# uv syncs .venv with the interpreter that made it; it never downloads a Python.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
# --locked: a uv.lock that no longer matches pyproject.toml stops the install with
# uv's message ("run `make lock`") instead of installing something else.
SYNC := $(UV) sync --locked --python $(PYTHON) --inexact
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint browser bench demo migrate lock clean

$(UV):
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet 'uv==$(UV_VERSION)'

$(RUN_STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC) --quiet
	touch $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml uv.lock | $(UV)
	$(SYNC) --quiet --extra dev --extra bench
	touch $(RUN_STAMP) $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/ledger serve

lock: | $(UV)
	$(UV) lock --python $(PYTHON)

lint: $(TEST_STAMP)
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

bench: $(TEST_STAMP)
	@for b in bench/store.py bench/ingest.py bench/forge_ingest.py bench/rebuild.py bench/verify.py; do \
		echo "== $$b"; $(BIN)/python $$b || exit $$?; done

demo: $(RUN_STAMP)
	$(BIN)/ledger demo

migrate: $(RUN_STAMP)
	$(BIN)/ledger migrate

clean:
	rm -rf $(VENV) .uv .pytest_cache .mypy_cache .ruff_cache

# The console's screenshots in docs/ (console-*.png), taken by its browser test on SQLite.
.PHONY: screenshots
screenshots: $(TEST_STAMP) browser
	LEDGER_CONSOLE_SCREENSHOTS=docs $(BIN)/pytest -q tests/e2e/test_console_views.py -k "browser and sqlite"
