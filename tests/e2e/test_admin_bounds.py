"""Admin parameters have bounds and a clear 400 (issue 8 §3), on both stores, over HTTP;
and the error boundary's last resort (a JSON 500 with a call id) and store answers."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.http.app import create_app
from app.http.routes.tenants import MAX_GRACE_HOURS, MAX_POSITION
from app.settings import Settings
from app.sim.connect import make_install_payload
from eventstore.errors import ConcurrencyConflict, StoreUnavailable
from tests.harness import RunningService, running_service

KEY = "jira:bounds-0000-4000-8000-000000000001"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('bounds') / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    with running_service(url) as running:
        running.install(make_install_payload(client_key=KEY))
        yield running


def bad(response: Any, parameter: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "bad_parameter"
    assert parameter in body["detail"]


@pytest.mark.parametrize(
    "as_of",
    [
        "²",  # str.isdigit says yes
        "١٢",  # Arabic-Indic digits: int() reads them
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59-01:00",  # after year 9999 once in UTC
        str(MAX_POSITION + 1),
        "1" * 20,
        "2026-13-01T00:00:00Z",
        "2026-W01",  # ISO 8601 week date, not RFC 3339
        "yesterday",
        "1\x00",
    ],
)
def test_as_of_out_of_bounds_is_400(service: RunningService, as_of: str) -> None:
    key = KEY
    bad(service.admin(f"/admin/tenants/{key}", as_of=as_of), "as_of")


@pytest.mark.parametrize(
    "as_of", [str(MAX_POSITION), "1", "2999-01-01T00:00:00Z", "2999-01-01T00:00:00.123456789+02:00"]
)
def test_as_of_in_bounds_folds(service: RunningService, as_of: str) -> None:
    key = KEY
    response = service.admin(f"/admin/tenants/{key}", as_of=as_of)
    assert response.status_code == 200, response.text
    assert response.json()["client_key"] == key


def test_as_of_before_the_tenant_is_404_not_400(service: RunningService) -> None:
    key = KEY
    for as_of in ("0", "0001-01-01T00:00:00Z"):
        response = service.admin(f"/admin/tenants/{key}", as_of=as_of)
        assert response.status_code == 404
        assert response.json()["error"] == "not_yet_installed"


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/admin/events", {"after": 10**20}, "after"),
        ("/admin/events", {"after": MAX_POSITION + 1}, "after"),
        ("/admin/events", {"after": -1}, "after"),
        ("/admin/events", {"limit": 0}, "limit"),
        ("/admin/events", {"limit": 1001}, "limit"),
        ("/admin/rejections", {"limit": 10**6}, "limit"),
        ("/admin/tenants", {"limit": 1001}, "limit"),
        ("/admin/tenants", {"presumed_gone": "true", "grace_hours": "inf"}, "grace_hours"),
        ("/admin/tenants", {"presumed_gone": "true", "grace_hours": "nan"}, "grace_hours"),
        ("/admin/tenants", {"grace_hours": -1}, "grace_hours"),
        ("/admin/tenants", {"grace_hours": MAX_GRACE_HOURS + 1}, "grace_hours"),
        ("/admin/tenants", {"after": "a\x00b"}, "after"),
        ("/admin/tenants", {"after": "k" * 256}, "after"),
        ("/admin/tenants", {"state": "gone"}, "state"),
        ("/admin/tenants", {"min_position": MAX_POSITION + 1}, "min_position"),
        ("/admin/descriptors", {"min_position": 10**20}, "min_position"),
        ("/admin/reimports", {"min_position": -1}, "min_position"),
    ],
)
def test_parameters_out_of_bounds_are_400(
    service: RunningService, path: str, params: dict[str, Any], parameter: str
) -> None:
    bad(service.admin(path, **params), parameter)


@pytest.mark.parametrize("path", ["/admin/tenants", "/admin/descriptors", "/admin/reimports"])
def test_a_position_past_the_head_is_400_at_once(service: RunningService, path: str) -> None:
    head = service.store.head().position
    bad(service.admin(path, min_position=head + 1), "min_position")
    assert service.admin(path, min_position=head).status_code == 200


@pytest.mark.parametrize("key", ["a%00b", "a%1Fb", "a%C2%85b", "k" * 256])
def test_client_key_paths_out_of_bounds_are_400(service: RunningService, key: str) -> None:
    for suffix in ("", "/events"):
        bad(
            service.client.get(f"/admin/tenants/{key}{suffix}", headers=service.admin_headers),
            "client_key",
        )


def test_bounds_at_their_edges_are_accepted(service: RunningService) -> None:
    assert service.admin("/admin/events", after=MAX_POSITION, limit=1000).json()["events"] == []
    for grace in (0, MAX_GRACE_HOURS):
        response = service.admin("/admin/tenants", presumed_gone="true", grace_hours=grace)
        assert response.status_code == 200, response.text


ADMIN_QUERIES = {
    "/admin/events": ("after", "limit"),
    "/admin/rejections": ("limit",),
    "/admin/tenants": ("after", "limit", "state", "grace_hours", "min_position"),
    "/admin/descriptors": ("min_position",),
    "/admin/reimports": ("min_position",),
    "/admin/tenants/{key}": ("as_of",),
}
anything = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["", "-0", "1e400", "0x10", "9" * 30, "\x00", "²", "Infinity"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_query_value_gets_a_clear_answer(service: RunningService, data: st.DataObject) -> None:
    """Ignore the document: whatever the value, the answer is 200, 400 or 404, in JSON."""
    path = data.draw(st.sampled_from(sorted(ADMIN_QUERIES)))
    name = data.draw(st.sampled_from(ADMIN_QUERIES[path]))
    value = data.draw(anything)
    path = path.replace("{key}", KEY)
    params = {name: value, "presumed_gone": "true"} if name == "grace_hours" else {name: value}
    response = service.admin(path, **params)
    assert response.status_code in (200, 400, 404), (path, params, response.text)
    if response.status_code == 400:
        assert response.json()["error"] == "bad_parameter", response.text


def test_the_document_declares_the_bounds() -> None:
    document = create_app(Settings()).openapi()

    def query(path: str, name: str) -> dict[str, Any]:
        parameters = document["paths"][path]["get"]["parameters"]
        found = next(p for p in parameters if p["name"] == name)
        schema: dict[str, Any] = found["schema"]
        return schema.get("anyOf", [schema])[0]

    after = query("/admin/events", "after")
    assert (after["type"], after["minimum"], after["maximum"]) == ("integer", 0, MAX_POSITION)
    assert (
        query("/admin/events", "limit")["minimum"],
        query("/admin/events", "limit")["maximum"],
    ) == (1, 1000)
    grace = query("/admin/tenants", "grace_hours")
    assert (grace["minimum"], grace["maximum"]) == (0, MAX_GRACE_HOURS)
    assert query("/admin/tenants", "min_position")["maximum"] == MAX_POSITION
    assert "pattern" in query("/admin/tenants/{client_key}", "as_of")
    for path, operations in document["paths"].items():
        if path.startswith("/admin"):
            assert {"400", "401", "503"} <= set(operations["get"]["responses"]), path


# ---------------------------------------------------------------- the error boundary


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[tuple[TestClient, io.StringIO]]:
    """The real app with three extra routes that fail the three ways a route can."""
    logs = io.StringIO()
    app = create_app(
        Settings(database_url=f"sqlite:///{tmp_path / 'l.db'}", var_dir=tmp_path),
        log_stream=logs,
    )

    def unexpected() -> None:
        raise RuntimeError("token=eyJsecret-looking-words")

    def unavailable() -> None:
        raise StoreUnavailable("connection refused")

    def conflict() -> None:
        raise ConcurrencyConflict("tenant:x", 1, 2)

    app.add_api_route("/test/unexpected", unexpected)
    app.add_api_route("/test/unavailable", unavailable)
    app.add_api_route("/test/conflict", conflict)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, logs


def test_an_unexpected_exception_is_a_json_500_with_a_call_id_and_one_log_line(
    app_client: tuple[TestClient, io.StringIO],
) -> None:
    client, logs = app_client
    for path in ("/test/unexpected", "/test/conflict"):
        response = client.get(path, params={"jwt": "eyJsecret-token"})
        assert response.status_code == 500
        body = response.json()
        assert body["error"] == "internal" and body["detail"]
        lines = [json.loads(line) for line in logs.getvalue().splitlines()]
        errors = [line for line in lines if line.get("call_id") == body["call_id"]]
        assert len(errors) == 1
        assert errors[0]["level"] == "error"
        assert errors[0]["endpoint"] == path
        assert errors[0]["error"] in ("RuntimeError", "ConcurrencyConflict")
    assert "secret" not in logs.getvalue()


def test_store_unavailable_anywhere_is_503_with_retry_after(
    app_client: tuple[TestClient, io.StringIO],
) -> None:
    client, _ = app_client
    response = client.get("/test/unavailable")
    assert response.status_code == 503
    assert response.json()["error"] == "store_unavailable"
    assert int(response.headers["Retry-After"]) > 0
