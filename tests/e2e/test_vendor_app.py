"""SPEC §11 "Proven end to end": the example vendor app (examples/vendor_app) over real
HTTP against a real ledger and a simulated site. The site installs a tenant through the
ledger; a page load to the example app is verified through /auth/connect/verify; the app
calls the site's REST API with a token from /auth/connect/sign and the site verifies it
with the tenant's secret; a rotation reaches both ends; an app that signs for another host
is refused (foreign_url) and the site never sees the call."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from app.serve.embedded import serving
from app.sim.site import SimulatedSite
from examples.vendor_app.app import create_app
from tests.harness import RunningService, running_service

SERVICE_TOKEN = "vendor-app-service-token-0123456789abcdef"


@pytest.fixture
def site() -> Iterator[SimulatedSite]:
    with SimulatedSite() as running:
        yield running


@pytest.fixture
def ledger(store_url: str) -> Iterator[RunningService]:
    with running_service(store_url, service_tokens=f"vendor-app={SERVICE_TOKEN}") as running:
        yield running


def page_load(
    ledger: RunningService, site: SimulatedSite, app_url: str, secret: str | None = None
) -> httpx.Response:
    """What a browser fetches when the site shows the app's panel: the site signs it."""
    query = [("lic", "active"), ("xdm_e", site.url)]
    token = ledger.host.page_token(
        site.client_key,
        secret or site.shared_secret,
        path="/panel",
        query=query,
        account_id=site.account_id,
    )
    return httpx.get(f"{app_url}/panel", params=[*query, ("jwt", token)], timeout=10)


def install(ledger: RunningService, site: SimulatedSite) -> None:
    response = ledger.send(ledger.call("installed", site.install_payload()))
    assert response.status_code == 204, response.text


def eventually_ok(load: Callable[[], httpx.Response]) -> httpx.Response:
    """The answer once it is 200 (the ledger's processes follow the log), or the last one."""
    deadline = time.monotonic() + 5
    while True:
        response = load()
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.02)


def test_page_load_verified_and_signed_call_accepted(
    ledger: RunningService, site: SimulatedSite
) -> None:
    install(ledger, site)
    with serving(create_app(ledger.url, SERVICE_TOKEN)) as app_url:
        response = eventually_ok(lambda: page_load(ledger, site, app_url))
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["client_key"] == site.client_key and body["account_id"] == site.account_id
        assert body["license"] == "active"
        assert body["site_status"] == 200 and body["site_user"]["accountId"] == site.account_id
        assert site.accepted == 1 and site.refused == []

        context_token = ledger.host.page_token(
            site.client_key, site.shared_secret, context=True, account_id=site.account_id
        )
        front_end = httpx.get(
            f"{app_url}/context", headers={"Authorization": f"JWT {context_token}"}
        )
        assert front_end.json() == {"client_key": site.client_key, "account_id": site.account_id}
        lifecycle = httpx.get(f"{app_url}/atlassian-connect.json").json()["lifecycle"]
        assert lifecycle["installed"] == "/installed?v=1"

        forged = page_load(ledger, site, app_url, secret="a-guess-" + "z" * 40)
        assert forged.status_code == 401 and forged.json()["error"] == "bad_signature"

        # The site rotates its secret: the ledger hears installed, and both ends move on.
        old = site.shared_secret
        site.rotate()
        install(ledger, site)
        rotated = eventually_ok(lambda: page_load(ledger, site, app_url))
        assert rotated.json()["site_status"] == 200 and site.accepted == 2
        assert page_load(ledger, site, app_url, secret=old).status_code == 401


def test_a_call_signed_for_another_host_is_refused(
    ledger: RunningService, site: SimulatedSite
) -> None:
    install(ledger, site)
    with serving(
        create_app(ledger.url, SERVICE_TOKEN, site_base="https://attacker.example")
    ) as app_url:
        response = eventually_ok(lambda: page_load(ledger, site, app_url))
        assert response.status_code == 502 and response.json()["error"] == "foreign_url"
        assert site.accepted == 0


def test_the_site_refuses_a_token_of_another_tenant(
    ledger: RunningService, site: SimulatedSite
) -> None:
    """A token the ledger signed for one tenant does not open another tenant's site."""
    install(ledger, site)
    with SimulatedSite() as other:
        install(ledger, other)
        signed = eventually_ok(
            lambda: ledger.client.post(
                "/auth/connect/sign",
                json={"client_key": other.client_key, "method": "GET", "url": "/rest/api/3/myself"},
                headers={"Authorization": f"Bearer {SERVICE_TOKEN}"},
            )
        ).json()
        assert signed["url"].startswith(other.url)
        stolen = httpx.get(
            site.url + "/rest/api/3/myself", headers={"Authorization": signed["authorization"]}
        )
        assert stolen.status_code == 401 and site.refused == ["bad_signature"]


WEBHOOK_SECRET = "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="


def test_the_app_hears_every_change_as_signed_webhooks(
    store_url: str, site: SimulatedSite
) -> None:
    """The example app, as the ledger's webhook receiver: it gets tenant.installed,
    tenant.secret_rotated and tenant.uninstalled in order, each verified with the
    Standard Webhooks secret, and never a secret in a body."""
    vendor = create_app("http://127.0.0.1:1", SERVICE_TOKEN, webhook_secret=WEBHOOK_SECRET)
    with serving(vendor) as app_url, running_service(
        store_url,
        service_tokens=f"vendor-app={SERVICE_TOKEN}",
        webhook_urls=f"{app_url}/webhooks/ledger",
        webhook_secret=WEBHOOK_SECRET,
    ) as ledger:
        install(ledger, site)
        old = site.shared_secret
        site.rotate()
        install(ledger, site)
        gone = ledger.call("uninstalled", site.install_payload(), alg="HS256")
        assert ledger.send(gone).status_code == 204
        inbox = vendor.state.inbox
        wanted = ["tenant.installed", "tenant.secret_rotated", "tenant.uninstalled"]
        deadline = time.monotonic() + 30
        while [t for t in inbox.types() if t in wanted] != wanted:
            assert time.monotonic() < deadline, inbox.types()
            time.sleep(0.05)
        assert inbox.refused == 0
        bodies = b"".join(m.body for m in inbox.messages)
        assert old.encode() not in bodies and site.shared_secret.encode() not in bodies
        rotated = next(m for m in inbox.messages if m.type == "tenant.secret_rotated")
        assert rotated.payload["data"]["stream_id"] == f"tenant:{site.client_key}"
