"""Generated requests against the app's own OpenAPI document find no 5xx (issue 8 §3)."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis

from app.http.app import create_app
from app.settings import Settings
from tests.harness import ADMIN_TOKEN, RunningService, running_service

# The document is the app's own: built without starting anything (no store is opened).
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('schemathesis') / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    with running_service(url) as running:
        running.install()
        yield running


@schema.parametrize()
@hypothesis.settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_no_server_error(case: schemathesis.Case, service: RunningService) -> None:
    """Whatever is generated: never a 5xx, and every refusal in the one error shape."""
    response = case.call(
        base_url=service.url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    assert response.status_code < 500, (response.status_code, response.text, case.as_curl_command())
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), body
