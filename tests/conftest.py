"""Fixtures shared by the whole suite: a throw-away PostgreSQL database per session and
one parametrised ``store_url``/``store`` fixture, so that every contract test runs
against every store (no copy of a test per store)."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from eventstore import open_store
from eventstore.store import EventStore

ADMIN_URL = os.environ.get(
    "LEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = bool(os.environ.get("CI"))
DROP_CONNECTIONS = 16


def _postgres_problem() -> str | None:
    try:
        with psycopg.connect(ADMIN_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {ADMIN_URL} does not answer ({exc.__class__.__name__})"
    return None


_PG_PROBLEM = _postgres_problem()


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL of the test server; fails in CI, skips (with the reason) elsewhere."""
    if _PG_PROBLEM:
        if IN_CI:
            pytest.fail(f"{_PG_PROBLEM}; CI requires PostgreSQL", pytrace=False)
        pytest.skip(_PG_PROBLEM)
    yield ADMIN_URL


class PostgresDatabases:
    """Creates uniquely named databases and drops them all at the end of the session."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"ledger_test_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []

    def create(self) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return _with_database(self.admin_url, name)

    def drop_all(self) -> None:
        """Sixteen connections drop them. Each DROP DATABASE waits for a checkpoint, and
        the server serves the checkpoint requests pending at once with one: four
        connections took ~0.6 s a database (73 s for the end-to-end tests' ~400), sixteen
        take a small fraction of that, within a server's 100 connections."""
        names = iter(list(self.created))
        lock = threading.Lock()

        def drop() -> None:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                while True:
                    with lock:
                        name = next(names, None)
                    if name is None:
                        return
                    conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

        width = min(DROP_CONNECTIONS, len(self.created))
        with concurrent.futures.ThreadPoolExecutor(max(width, 1)) as pool:
            for done in [pool.submit(drop) for _ in range(width)]:
                done.result()


@pytest.fixture(scope="session")
def postgres_databases(postgres_server: str) -> Iterator[PostgresDatabases]:
    databases = PostgresDatabases(postgres_server)
    yield databases
    databases.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL for each store kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
    return databases.create()


@pytest.fixture
def store(store_url: str) -> Iterator[EventStore]:
    with open_store(store_url) as opened:
        yield opened


# Under CI, Hypothesis runs derandomized: the same examples every run, so a suite that
# passed once passes again (a flaky test is a failing test); locally it keeps exploring.
def _hypothesis_profile() -> None:
    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, print_blob=True)
    if IN_CI:
        settings.load_profile("ci")


_hypothesis_profile()
