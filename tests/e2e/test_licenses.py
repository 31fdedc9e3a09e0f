"""License and presence checks (SPEC §11) and erasure due (SPEC §6), on both stores.

A real service, a simulated site that verifies the ledger's HS256 token with the
tenant's secret, the `ledger` command line; the periodic checker of the runner's leader.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.ingest.shell import Append, Skip
from app.licenses import periodic
from app.licenses.check import Limits, RoundReport, run_round
from app.licenses.decider import (
    Check,
    CheckState,
    SiteAnswered,
    SiteRefusedCheck,
    decide,
    license_of,
)
from app.licenses.sign import sign_site_request
from app.queries import reads
from app.sim.connect import SimulatedSite
from eventstore.crypto import KeyRing
from eventstore.events import LicenseChanged, Metadata, SiteRefused
from eventstore.store import EventStore
from projections.backends import storage_for
from projections.model import TenantRow
from projections.runner import wait_for_position
from tests.harness import ADMIN_TOKEN, RunningService, running_service

runner = CliRunner()
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def service(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    monkeypatch.setenv("LEDGER_MASTER_KEY", MASTER_KEY)
    monkeypatch.setenv("LEDGER_ERASURE_AFTER_DAYS", "0")
    with running_service(
        store_url, master_key=MASTER_KEY, license_check_hours=0, erasure_after_days=0
    ) as running:
        yield running


@pytest.fixture
def site() -> Iterator[SimulatedSite]:
    with SimulatedSite(slow_seconds=30) as serving:
        serving.set_license(active=True, type="COMMERCIAL", evaluation=True, sen="SEN-42")
        yield serving


def ledger(*args: str, code: int = 0) -> str:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def check_now(*client_keys: str) -> dict[str, Any]:
    """`ledger licenses check [CLIENT_KEY] --json`: the round's counts."""
    answer: dict[str, Any] = json.loads(ledger("licenses", "check", *client_keys, "--json"))
    return answer


def folded(service: RunningService) -> None:
    storage = storage_for(service.store)
    assert wait_for_position(storage, service.store.head().position, 10)


def installed_at(service: RunningService, site: SimulatedSite) -> str:
    payload = site.install_payload()
    service.install(payload)
    return str(payload["clientKey"])


# ------------------------------------------------------------------ pure parts


def test_the_signed_request_is_what_the_site_verifies() -> None:
    token = sign_site_request(
        "s" * 48, app_key="my-app", method="GET", path="/rest/x", now=int(time.time())
    )
    with SimulatedSite(app_key="my-app") as site:
        site.shared_secret = "s" * 48
        assert site._verified("/rest/x", f"JWT {token}")
        assert not site._verified("/rest/y", f"JWT {token}")  # qsh of another request
        site.shared_secret = "t" * 48
        assert not site._verified("/rest/x", f"JWT {token}")


@pytest.mark.parametrize(
    "answer",
    [None, 1, "x", [], {}, {"license": 3}, {"license": {"active": "yes", "type": 7}}],
)
def test_license_of_is_total(answer: Any) -> None:
    found = license_of(answer)
    assert found is None or found["active"] is None


def _row(**fields: Any) -> TenantRow:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    base: dict[str, Any] = {
        "client_key": "k", "base_url": "https://a.atlassian.net", "display_url": None,
        "product_type": None, "state": "installed", "enabled": True,
        "descriptor_version": "1", "installed_at": at, "updated_at": at, "last_seen_at": at,
        "version": 1,
    }  # fmt: skip
    return TenantRow(**(base | fields))


TRIAL = {"active": True, "type": "COMMERCIAL", "evaluation": True, "sen": "SEN-1"}
PAID = TRIAL | {"evaluation": False}
AT = datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "seen", "decided"),
    [
        (CheckState(), SiteAnswered(TRIAL), "not_installed"),
        (CheckState(_row(state="uninstalled")), SiteRefusedCheck(404), "not_installed"),
        (CheckState(_row(forgotten_at=AT)), SiteAnswered(TRIAL), "forgotten"),
        (CheckState(_row()), SiteAnswered(None), "same"),  # no license then, none now
        (CheckState(_row()), SiteAnswered(TRIAL), LicenseChanged(from_=None, to=TRIAL)),
        (CheckState(_row(), TRIAL, True), SiteAnswered(TRIAL), "same"),
        (CheckState(_row(), TRIAL, True), SiteAnswered(PAID), LicenseChanged(TRIAL, PAID)),
        (CheckState(_row(), TRIAL, True), SiteAnswered(None), LicenseChanged(TRIAL, None)),
        (CheckState(_row(), TRIAL, True), SiteRefusedCheck(401), SiteRefused(401)),
        (CheckState(_row(site_refused_at=AT), TRIAL, True, 401), SiteRefusedCheck(401), "same"),
        (CheckState(_row(site_refused_at=AT), None, False, 401), SiteRefusedCheck(404), SiteRefused(404)),
        # A site that refused answers again: it is back, even with the same license.
        (CheckState(_row(site_refused_at=AT), TRIAL, True, 404), SiteAnswered(TRIAL), LicenseChanged(TRIAL, TRIAL)),
    ],
)  # fmt: skip
def test_the_decider_records_changes_only(state: CheckState, seen: Any, decided: Any) -> None:
    meta = Metadata(source="license_check")
    decision = decide(state, Check(seen, meta))
    if isinstance(decided, str):
        assert isinstance(decision, Skip) and decision.code == decided
    else:
        assert isinstance(decision, Append) and list(decision.events) == [decided]
        assert decision.metadata.source == "license_check"


# ------------------------------------------------------------------ end to end


def test_a_license_lapsing_and_a_trial_converting(
    service: RunningService, site: SimulatedSite
) -> None:
    key = installed_at(service, site)
    assert check_now()["changed"] == 1
    first = service.stream(key)[-1]
    assert first.type == "LicenseChanged" and first.metadata.source == "license_check"
    assert first.data == LicenseChanged(
        from_=None, to={"active": True, "type": "COMMERCIAL", "evaluation": True, "sen": "SEN-42"}
    )
    assert site.requests == 1 and site.refused_tokens == 0  # signed with the tenant's secret

    versions = len(service.stream(key))
    assert check_now(key)["same"] == 1
    assert len(service.stream(key)) == versions  # the same answer: nothing recorded

    site.set_license(active=True, type="COMMERCIAL", evaluation=False, sen="SEN-42")
    assert check_now(key)["changed"] == 1
    converted = service.stream(key)[-1].data
    assert isinstance(converted, LicenseChanged)
    assert converted.from_ is not None and converted.from_["evaluation"] is True
    assert converted.to is not None and converted.to["evaluation"] is False

    site.set_license(active=False, type="COMMERCIAL", evaluation=False, sen="SEN-42")
    assert check_now()["changed"] == 1
    folded(service)
    tenant = service.admin(f"/admin/tenants/{key}").json()
    assert tenant["license_active"] is False and tenant["site_refused_at"] is None
    listed = service.admin("/admin/tenants").json()["tenants"]
    assert [t["license_active"] for t in listed] == [False]
    # A license check is not a call from the tenant: last_seen_at is the last call's.
    assert tenant["last_seen_at"] < tenant["updated_at"]


def test_a_site_deleted_without_uninstalled(service: RunningService, site: SimulatedSite) -> None:
    key = installed_at(service, site)
    check_now()
    site.set_mode("deleted")
    assert check_now()["refused"] == 1
    refused = service.stream(key)[-1]
    assert refused.data == SiteRefused(status=404)
    assert refused.metadata.source == "license_check"
    assert check_now()["same"] == 1 and service.stream(key)[-1] == refused  # said once

    folded(service)
    tenant = service.admin(f"/admin/tenants/{key}").json()
    assert tenant["state"] == "installed" and tenant["site_refused_at"] is not None
    gone = service.admin("/admin/presumed-gone").json()["tenants"]
    assert [(t["client_key"], t["presumed"]) for t in gone] == [(key, ["site_refused"])]
    store, storage = service.store, storage_for(service.store)
    assert reads.presumed_gone_totals(storage, 24) == {
        "all": 1, "silent": 0, "uninstalling": 0, "site_refused": 1
    }
    assert reads.presumed_gone_totals(storage, 24, search="no-such-site")["all"] == 0

    # Erasure due: after N days, with the clock given.
    since = refused.recorded_at
    early = reads.erasure_due_answer(store, storage, 30, now=since + timedelta(days=29))
    assert early["tenants"] == []
    (due,) = reads.erasure_due_answer(store, storage, 30, now=since + timedelta(days=31))["tenants"]
    assert due["reason"] == "site_refused" and due["client_key"] == key
    assert due["evidence"] == {
        "stream_id": refused.stream_id,
        "position": refused.position,
        "recorded_at": due["gone_since"],
    }
    assert due["due_at"] > due["gone_since"]
    # The route and the command line (LEDGER_ERASURE_AFTER_DAYS=0 here).
    (routed,) = service.admin("/admin/erasure-due").json()["tenants"]
    assert routed["client_key"] == key and routed["evidence"]["position"] == refused.position
    (listed,) = json.loads(ledger("erasure-due", "--json"))["tenants"]
    assert listed["client_key"] == key
    client = service.client
    client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console"})
    page = client.get("/console/erasure-due")
    assert page.status_code == 200 and key in page.text and "site_refused" in page.text
    assert f"{refused.stream_id} @ {refused.position}" in page.text
    gone_page = client.get("/console/presumed-gone").text
    assert "<b>1</b> presumed gone: 0 silent, 0 uninstalling, 1 site refused." in gone_page

    # `ledger forget` takes it off the list.
    ledger("forget", key, "--reason", "erasure due", "--yes")
    assert json.loads(ledger("erasure-due", "--json"))["tenants"] == []
    folded(service)
    assert service.admin("/admin/erasure-due").json()["tenants"] == []


def test_an_uninstalled_tenant_becomes_due_and_leaves_when_it_comes_back(
    service: RunningService, site: SimulatedSite
) -> None:
    payload = site.install_payload()
    service.install(payload)
    key = payload["clientKey"]
    assert service.send(service.call("uninstalled", payload)).status_code == 204
    (due,) = json.loads(ledger("erasure-due", "--json"))["tenants"]
    assert due["reason"] == "uninstalled"
    assert due["evidence"]["position"] == service.stream(key)[-1].position
    # An uninstalled tenant is not asked.
    assert check_now()["sites"] == 0
    ledger("licenses", "check", key, code=1)
    service.install(payload)  # installed again
    assert json.loads(ledger("erasure-due", "--json"))["tenants"] == []


def test_a_tenant_back_after_a_refusal_is_not_refused(
    service: RunningService, site: SimulatedSite
) -> None:
    key = installed_at(service, site)
    site.set_mode("app_removed")
    assert check_now()["refused"] == 1
    site.set_mode("up")
    assert check_now()["changed"] == 1  # it answers again: recorded, the refusal cleared
    folded(service)
    assert service.admin(f"/admin/tenants/{key}").json()["site_refused_at"] is None
    assert service.admin("/admin/presumed-gone").json()["tenants"] == []
    assert json.loads(ledger("erasure-due", "--json"))["tenants"] == []
    # Refused again, then a lifecycle call from the site: it is there after all.
    site.set_mode("forbidden")
    assert check_now()["refused"] == 1
    payload = {**service.stream(key)[0].data.details, "key": site.app_key}  # type: ignore[union-attr]  # Installed
    payload |= {"clientKey": key, "baseUrl": site.base_url, "sharedSecret": site.shared_secret}
    service.install(payload)
    folded(service)
    assert service.admin(f"/admin/tenants/{key}").json()["site_refused_at"] is None
    assert json.loads(ledger("erasure-due", "--json"))["tenants"] == []


@pytest.mark.parametrize("mode", ["stopped", "error", "redirect", "huge"])
def test_an_unreachable_site_is_never_recorded(
    service: RunningService, site: SimulatedSite, mode: str
) -> None:
    key = installed_at(service, site)
    versions = len(service.stream(key))
    if mode == "stopped":
        site.stop()
    else:
        site.set_mode(mode)  # type: ignore[arg-type]  # one of SiteMode
    answer = check_now()
    assert answer["unreachable"] == 1 and answer["refused"] == 0
    assert len(service.stream(key)) == versions
    assert service.admin("/admin/presumed-gone").json()["tenants"] == []


def test_a_hostile_slow_site_does_not_hold_up_the_round(
    service: RunningService, site: SimulatedSite
) -> None:
    slow = installed_at(service, site)
    with SimulatedSite() as good:
        good.set_license()
        fine = installed_at(service, good)
        site.set_mode("slow")  # holds each answer 30 s
        keyring = KeyRing(service.store, service.settings.master_keys())
        report = asyncio.run(
            run_round(
                service.settings,
                service.store,
                keyring,
                client_keys=[slow, fine],
                limits=Limits(rate=100, site_seconds=0.5),
            )
        )
    assert report.counts["unreachable"] == 1 and report.reasons == {"timeout": 1}
    assert report.counts["changed"] == 1 and service.stream(fine)[-1].type == "LicenseChanged"
    assert service.stream(slow)[-1].type == "Installed"


def test_the_leaders_periodic_check(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner's leader runs rounds by itself; /readyz and /metrics show them."""
    monkeypatch.setattr(periodic, "FIRST_ROUND_SECONDS", 0.0)
    every = 0.0005  # hours: a round every 1.8 s
    with SimulatedSite() as site, running_service(store_url, license_check_hours=every) as service:
        site.set_license()
        key = installed_at(service, site)
        deadline = time.monotonic() + 30
        while service.stream(key)[-1].type != "LicenseChanged":
            assert time.monotonic() < deadline, "no round ran"
            time.sleep(0.1)
        while not (checks := service.client.get("/readyz").json()["runner"]["license_checks"])[
            "last_round"
        ]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert checks["every_hours"] == every and checks["rate_per_second"] == 5
        metrics = service.client.get("/metrics").text
        assert 'ledger_license_checks_total{reason="",result="changed"} 1.0' in metrics
        assert "ledger_license_check_rounds_total" in metrics
        assert "ledger_license_check_sites_per_second" in metrics


def test_a_standby_asks_no_site(store: EventStore) -> None:
    """Only the leader asks: a checker whose runner does not lead runs no round."""
    from app.settings import Settings

    settings = Settings(master_key=MASTER_KEY, license_check_hours=1)
    checks = periodic.LicenseChecks(
        settings, store, KeyRing(store, settings.master_keys()), lambda: False, None, 0.0
    ).start()
    try:
        time.sleep(1.5)
        assert checks.status()["rounds"] == 0 and checks.status()["running"] is None
    finally:
        checks.stop()


def test_a_round_report_counts_every_site() -> None:
    report = RoundReport()
    report.count("unreachable", "timeout")
    report.count("same")
    shown = report.as_dict()
    assert report.done == 2 and shown["reasons"] == {"timeout": 1}
    assert shown["unreachable"] == 1 and shown["same"] == 1 and shown["finished_at"] is None


def test_erasure_due_is_off_unless_set(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    monkeypatch.delenv("LEDGER_ERASURE_AFTER_DAYS", raising=False)
    with running_service(store_url, license_check_hours=0) as service:
        payload = service.install()
        assert service.send(service.call("uninstalled", payload)).status_code == 204
        answer = service.admin("/admin/erasure-due").json()
        assert answer == {"after_days": None, "tenants": [], "next": None}
        result = runner.invoke(cli, ["erasure-due", "--json"], catch_exceptions=False)
        assert result.exit_code == 0 and "not set" in result.stderr
        assert json.loads(result.stdout)["tenants"] == []


def test_the_demo_story(service: RunningService) -> None:
    """What `ledger demo` can call: a lapse, a deleted site, and erasure due."""
    from rich.console import Console

    from app.cli.demo.licenses import license_story

    out = io.StringIO()
    license_story(Console(file=out, width=200), service.settings, service.install)
    text = out.getvalue()
    assert "## license check: a trial lapsed, a site was deleted" in text
    assert "SiteRefused" in text and "LicenseChanged" in text
    assert "site_refused" in text and "## erasure due 31 days later" in text
