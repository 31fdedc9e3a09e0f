"""Whatever a caller holding a service token sends to /auth/* (generated from the OpenAPI
document): never a 5xx, every refusal in the one error shape, never the secret."""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis

from app.http.app import create_app
from app.settings import Settings
from tests.harness import RunningService, running_service

SERVICE_TOKEN = "fuzz-service-token-0123456789abcdefgh"
schema = schemathesis.openapi.from_dict(create_app(Settings()).openapi()).include(
    path_regex="^/auth/"
)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('authority-fuzz') / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    with running_service(url, service_tokens=f"fuzz={SERVICE_TOKEN}") as running:
        running.install()
        yield running


STATUSES: list[int] = []


@schema.parametrize()
@hypothesis.settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    derandomize=True,
)
def test_no_server_error(case: schemathesis.Case, service: RunningService) -> None:
    # The generated headers may hold an Authorization of their own: ours is the one sent,
    # so that the generated bodies get past the door.
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {SERVICE_TOKEN}"}
    response = case.call(base_url=service.url, timeout=30)
    STATUSES.append(response.status_code)
    assert response.status_code < 500, (response.status_code, response.text, case.as_curl_command())
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("detail"), str), body


def test_generated_calls_got_past_the_door() -> None:
    """The run above is only worth something if its calls reached the decisions."""
    if STATUSES:
        assert any(status != 401 for status in STATUSES), STATUSES
