"""Fixtures of the end-to-end tests: one ``service`` (a real service on uvicorn over
real HTTP, on every store; the CLI in the same test reads the same store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness import RunningService, running_service


@pytest.fixture
def service(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with running_service(store_url) as running:
        yield running
