"""The read models through the service: the runner in the service process keeps the
admin list endpoints current (SPEC §6, §7), on every store."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from app.settings import Settings
from app.sim.connect import make_install_payload
from eventstore.clock import format_timestamp, utcnow
from tests.harness import RunningService


def eventually(check: Any, seconds: float = 1.0) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.02)


def test_an_accepted_call_reaches_the_list_without_being_asked_to(service: RunningService) -> None:
    """The service's own runner folds new events (no min_position, no CLI catch-up).

    How fast is a figure, not a test: the runner wakes on NOTIFY (PostgreSQL) or polls
    every 0.2 s (SQLite); the bound here only keeps a broken runner from passing.
    """
    payload = service.install()
    listed = eventually(
        lambda: [
            t
            for t in service.admin("/admin/tenants").json()["tenants"]
            if t["client_key"] == payload["clientKey"]
        ],
        seconds=15,
    )
    assert listed, "the runner did not fold the accepted call"
    assert listed[0]["state"] == "installed" and listed[0]["base_url"] == payload["baseUrl"]


def test_min_position_lets_a_caller_read_its_own_write(service: RunningService) -> None:
    payload = service.install()
    position = service.stream(payload["clientKey"])[-1].position
    tenants = service.admin("/admin/tenants", min_position=position).json()["tenants"]
    assert payload["clientKey"] in [t["client_key"] for t in tenants]


def test_tenant_pages_and_state_filter(service: RunningService) -> None:
    keys = sorted(service.install()["clientKey"] for _ in range(5))
    gone = make_install_payload()
    service.install(gone)
    assert service.send(service.call("uninstalled", gone)).status_code == 204
    head = service.store.head().position
    first = service.admin("/admin/tenants", limit=2, state="installed", min_position=head).json()
    assert [t["client_key"] for t in first["tenants"]] == keys[:2]
    assert first["next"] == keys[1]
    second = service.admin("/admin/tenants", limit=2, state="installed", after=first["next"]).json()
    assert [t["client_key"] for t in second["tenants"]] == keys[2:4]
    uninstalled = service.admin("/admin/tenants", state="uninstalled").json()["tenants"]
    assert [t["client_key"] for t in uninstalled] == [gone["clientKey"]]
    assert service.admin("/admin/tenants", state="bogus").status_code == 400


def test_descriptors_and_reimports(service: RunningService) -> None:
    old = service.install(make_install_payload(base_url="https://old-site.atlassian.net"))
    service.install(dict(old), descriptor_version="2")
    reimported = service.install(
        make_install_payload(base_url="https://old-site.atlassian.net"), descriptor_version="2"
    )
    moved = service.install(make_install_payload(base_url="https://moving.atlassian.net"))
    service.install(dict(moved, baseUrl="https://elsewhere.atlassian.net"))
    reused = service.install(make_install_payload(base_url="https://moving.atlassian.net"))
    head = service.store.head().position

    descriptors = service.admin("/admin/descriptors", min_position=head).json()
    assert descriptors["latest"] == "2"
    counts = {v["version"]: v["tenants"] for v in descriptors["versions"]}
    assert counts == {"1": 2, "2": 2}
    assert all(v["first_seen_at"].endswith("Z") for v in descriptors["versions"])

    links = {link["client_key"]: link for link in service.admin("/admin/reimports").json()["links"]}
    assert links[reimported["clientKey"]]["previous_client_key"] == old["clientKey"]
    assert links[reimported["clientKey"]]["kind"] == "reimport"
    assert links[reused["clientKey"]]["previous_client_key"] == moved["clientKey"]
    assert links[reused["clientKey"]]["kind"] == "url_reused"
    # evidence only: the old tenant was not touched
    assert service.admin(f"/admin/tenants/{old['clientKey']}").json()["state"] == "installed"


def test_presumed_gone_is_computed_at_query_time(service: RunningService) -> None:
    silent = service.install()
    service.install()
    head = service.store.head().position
    assert (
        service.admin("/admin/tenants", presumed_gone="true", min_position=head).json()["tenants"]
        == []
    )
    # A version first seen "now" is not older than the grace: nobody is presumed gone yet.
    # With a grace of a few milliseconds, a tenant silent since before version 2 was
    # first seen is presumed gone, and one that called after it is not.
    upgraded = service.install(make_install_payload(), descriptor_version="2")
    time.sleep(0.05)
    head = service.store.head().position
    gone = service.admin(
        "/admin/tenants", presumed_gone="true", grace_hours=0.00001, min_position=head
    ).json()
    keys = [t["client_key"] for t in gone["tenants"]]
    assert silent["clientKey"] in keys and upgraded["clientKey"] not in keys


def test_as_of_by_time_before_the_first_event(service: RunningService) -> None:
    payload = service.install()
    earlier = format_timestamp(utcnow() - timedelta(days=1))
    response = service.admin(f"/admin/tenants/{payload['clientKey']}", as_of=earlier)
    assert response.status_code == 404
    assert response.json()["error"] == "not_yet_installed"
    assert (
        service.admin(f"/admin/tenants/{payload['clientKey']}", as_of="yesterday").status_code
        == 400
    )


def test_openapi_document_lists_the_interfaces(service: RunningService) -> None:
    document = service.client.get("/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/installed",
        "/uninstalled",
        "/enabled",
        "/disabled",
        "/admin/tenants",
        "/admin/tenants/{client_key}",
        "/admin/tenants/{client_key}/events",
        "/admin/events",
        "/admin/descriptors",
        "/admin/reimports",
        "/admin/rejections",
        "/admin/verify",
        "/healthz",
        "/readyz",
        "/metrics",
        "/atlassian-connect.json",
    ):
        assert path in paths, path
    assert set(paths["/installed"]["post"]["responses"]) >= {
        "204",
        "400",
        "401",
        "409",
        "413",
        "503",
    }


def test_admin_answers_follow_their_documented_models(service: RunningService) -> None:
    from app.http import schemas as answers

    payload = service.install()
    key = payload["clientKey"]
    service.install(dict(payload, baseUrl="https://moved-on.atlassian.net"), descriptor_version="2")
    service.install(make_install_payload(base_url=payload["baseUrl"]))
    head = service.store.head().position
    checks = {
        "/admin/tenants": answers.TenantsPage,
        f"/admin/tenants/{key}": answers.TenantAnswer,
        f"/admin/tenants/{key}/events": answers.EventsAnswer,
        "/admin/events": answers.EventsPage,
        "/admin/descriptors": answers.DescriptorsAnswer,
        "/admin/reimports": answers.ReimportsAnswer,
        "/admin/rejections": answers.RejectionsAnswer,
        "/admin/verify": answers.VerifyAnswer,
    }
    for path, model in checks.items():
        params = {"min_position": head} if path in ("/admin/tenants", "/admin/reimports") else {}
        response = service.admin(path, **params)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-type"].startswith("application/json")
        model.model_validate(response.json(), strict=False)
    assert service.admin("/admin/reimports").json()["links"][0]["kind"] == "url_reused"
    document = service.client.get("/openapi.json").json()
    schema = document["paths"]["/admin/tenants"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert schema["$ref"].endswith("/TenantsPage")


def test_lifecycle_routes_are_served_plain_and_documented_once(service: RunningService) -> None:
    """Each lifecycle path: a plain Starlette route first (it serves), the documented
    FastAPI route right after it, with the same endpoint; one entry in the document."""
    from fastapi.routing import APIRoute
    from starlette.routing import Route

    from app.http.app import create_app

    app = create_app(Settings())
    routes = app.router.routes
    hot = [f"/{name}" for name in ("installed", "uninstalled", "enabled", "disabled")]
    hot += [p for p in app.openapi()["paths"] if p.startswith("/forge/")]
    assert len(hot) > 4
    for path in hot:
        at = [i for i, r in enumerate(routes) if isinstance(r, Route) and r.path == path]
        assert len(at) == 2 and at[1] == at[0] + 1, path
        plain, documented = routes[at[0]], routes[at[1]]
        assert type(plain) is Route and isinstance(documented, APIRoute)
        assert plain.endpoint is documented.endpoint and plain.methods == documented.methods
    # Another method still meets the 405 it met before.
    assert service.client.get("/installed").status_code == 405
