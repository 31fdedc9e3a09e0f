"""The console's views (SPEC §7, issue 21): every page in a real browser (Debian's
chromium driven by Playwright) on both stores, following the links both ways, with
the downloads a person would take; the pure parts (burn-down, CSV cells) on their own.

One browser for the module, one scenario per store (built once): a Connect tenant on
Forge (`acme`, three forged installs refused), a site reinstalled on Forge, a
Forge-only installation, a Connect-only tenant, a reimport, a tenant uninstalling on
Forge, a forgotten one, and refusals of several kinds.

Screenshots of the main pages for ``docs/`` (one command, not every run):
``make screenshots`` (``LEDGER_CONSOLE_SCREENSHOTS=docs pytest tests/test_console_views.py -k "browser and sqlite"``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from app.cli.forget import forget_tenant
from app.http.console.burn_down_svg import burn_down_chart
from app.http.console.export import csv_lines, json_lines, safe_cell
from app.http.console.views import PAGE_SIZE
from app.queries.burn_down import CONNECT_END_OF_SUPPORT, burn_down
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation
from eventstore.clock import utcnow
from eventstore.events import ForgeInstalled, Metadata, installation_stream_id
from eventstore.ids import installation_ari
from eventstore.rejections import Rejection
from eventstore.store import EventStore
from eventstore.testing.synthetic import DUMMY_HASH, T0, Log, installed_data
from eventstore.values import RecordedEvent
from tests.conftest import PostgresDatabases
from tests.e2e.test_console import chromium, log_in  # noqa: F401  # the module's one browser
from tests.e2e.test_forge_e2e import Forge, forge_service
from tests.harness import ADMIN_TOKEN, running_service

SHOTS = os.environ.get("LEDGER_CONSOLE_SCREENSHOTS")


# ------------------------------------------------------------------ the scenario


@dataclass
class Scenario:
    forge: Forge
    acme: dict[str, Any]  # Connect on Forge: site A (reinstalled as A2)
    globex: dict[str, Any]  # Connect only
    old: dict[str, Any]  # replaced by `new` at its base URL (a reimport)
    new: dict[str, Any]
    umbrella: dict[str, Any]  # its Forge installation sent pre-uninstall
    hooli: dict[str, Any]  # forgotten
    site_a: ForgeInstallation
    site_a2: ForgeInstallation
    lonely: ForgeInstallation  # Forge only
    secrets: list[str]

    @property
    def url(self) -> str:
        return self.forge.service.url

    def admin(self, path: str, **params: Any) -> Any:
        answer = self.forge.service.admin(path, **params)
        assert answer.status_code == 200, answer.text
        return answer.json()


def _ok(response: httpx.Response) -> None:
    assert response.status_code == 204, response.text


def build(forge: Forge) -> Scenario:
    service, platform = forge.service, forge.platform
    site_a, lonely, site_u = ForgeInstallation(), ForgeInstallation(), ForgeInstallation()
    acme = service.install(
        make_install_payload(installationId=installation_ari(site_a.installation_id))
    )
    _ok(forge.send(platform.installed(site_a)))
    site_a.app_version = "2.0.0"
    _ok(forge.send(platform.upgraded(site_a)))
    site_a2 = ForgeInstallation(cloud_id=site_a.cloud_id)  # the site reinstalled the app
    _ok(forge.send(platform.installed(site_a2)))
    _ok(forge.send(platform.installed(lonely)))
    globex = service.install(
        make_install_payload(productType="confluence", description="Confluence at globex")
    )
    url = f"https://initech-{uuid.uuid4().hex[:6]}.atlassian.net"
    old = service.install(make_install_payload(base_url=url))
    new = service.install(make_install_payload(base_url=url))
    umbrella = service.install(
        make_install_payload(installationId=installation_ari(site_u.installation_id))
    )
    _ok(forge.send(platform.installed(site_u)))
    _ok(forge.send(platform.pre_uninstall(site_u)))
    hooli = service.install()
    gone = service.install()
    _ok(service.send(service.call("uninstalled", gone)))
    forget_tenant(service.store, hooli["clientKey"], "erasure request 17", "alice", "box")
    # Refusals: three forged installs for acme (one row, count 3), a Forge call with a
    # wrong alg naming the Forge-only installation, an uninstall for a stranger.
    forged = dict(acme, sharedSecret="attacker-secret-0123456789abcdef0123456789")
    for _ in range(3):
        assert service.send(service.call("installed", forged, alg="HS256")).status_code == 401
    assert forge.send(platform.installed(lonely, alg="HS256")).status_code == 401
    stranger = make_install_payload()
    service.send(service.call("uninstalled", stranger))
    head = service.store.head().position
    assert service.admin("/admin/links", min_position=head).status_code == 200
    secrets = [p["sharedSecret"] for p in (acme, globex, old, new, umbrella, hooli, gone, forged)]
    return Scenario(
        forge, acme, globex, old, new, umbrella, hooli, site_a, site_a2, lonely, secrets
    )


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def scenario(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Scenario]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('views') / 'ledger.db'}"
    else:
        databases: PostgresDatabases = request.getfixturevalue("postgres_databases")
        url = databases.create()
    with forge_service(url) as forge:
        yield build(forge)


def tenant_path(key: str) -> str:
    return "/console/tenants/" + quote(key, safe="")


# ------------------------------------------------------------------ over HTTP


@pytest.fixture(scope="module")
def client(scenario: Scenario) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scenario.url, timeout=30) as session:
        assert log_in(session).status_code == 303
        yield session


def rows_of(response: httpx.Response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.text
    assert "attachment" in response.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(response.text)))


def test_downloads_hold_every_row_of_the_pages_query_and_no_secret(
    scenario: Scenario, client: httpx.Client
) -> None:
    tenants = scenario.admin("/admin/tenants", limit=1000)["tenants"]
    everyone = rows_of(client.get("/console", params={"format": "csv", "after": "zzz"}))
    assert sorted(r["client_key"] for r in everyone) == sorted(t["client_key"] for t in tenants)
    as_json = client.get("/console", params={"format": "json", "state": "uninstalled"}).json()
    assert as_json == [t for t in tenants if t["state"] == "uninstalled"]
    searched = rows_of(client.get("/console", params={"format": "csv", "q": "initech"}))
    assert {r["client_key"] for r in searched} == {
        scenario.old["clientKey"],
        scenario.new["clientKey"],
    }
    refused = scenario.admin("/admin/rejections", limit=1000)["rejections"]
    mine = client.get(
        "/console/rejections", params={"format": "json", "client_key": scenario.acme["clientKey"]}
    ).json()
    assert len(mine) == 1 and mine[0]["count"] == 3  # three refused calls, one row
    assert sum(r["count"] for r in client.get(
        "/console/rejections", params={"format": "json"}).json()) == sum(
        r["count"] for r in refused
    )
    migration = scenario.admin("/admin/migration")
    stragglers = rows_of(client.get("/console/migration", params={"format": "csv"}))
    assert [r["client_key"] for r in stragglers] == [
        t["client_key"] for t in migration["connect_only"]
    ]
    forge_only = client.get(
        "/console/migration", params={"format": "json", "part": "forge_only"}
    ).json()
    assert [r["installation_id"] for r in forge_only] == [
        r["installation_id"] for r in migration["forge_only"]
    ]
    events = client.get("/console/events", params={"format": "json"}).json()
    head = scenario.forge.service.store.head().position
    assert [e["position"] for e in events] == list(range(1, head + 1))
    early = client.get("/console/events", params={"format": "json", "before": "3"}).json()
    assert [e["position"] for e in early] == [1, 2]
    for path, params in [
        ("/console/links", {"kind": "reinstall"}),
        ("/console/reimports", {}),
        ("/console/installations", {"state": "uninstalling"}),
        ("/console/presumed-gone", {}),
        ("/console/descriptors", {}),
        ("/console/events", {}),
    ]:
        for fmt in ("csv", "json"):
            answer = client.get(path, params={**params, "format": fmt})
            assert answer.status_code == 200, (path, fmt)
            for secret in [*scenario.secrets, ADMIN_TOKEN]:
                assert secret not in answer.text, (path, fmt)
    links = rows_of(client.get("/console/links", params={"format": "csv", "kind": "reinstall"}))
    assert [r["installation_id"] for r in links] == [scenario.site_a2.installation_id]
    assert links[0]["previous_installation_id"] == scenario.site_a.installation_id
    # Not logged in: a download is the login redirect, never data.
    fresh = httpx.get(scenario.url + "/console?format=csv", follow_redirects=False)
    assert fresh.status_code == 303 and "/console/login" in fresh.headers["location"]


def test_verification_runs_only_on_a_same_origin_post(
    scenario: Scenario, client: httpx.Client
) -> None:
    host = urlsplit(scenario.url).netloc
    for headers in ({}, {"Origin": "https://evil.example"}, {"Origin": "null"}):
        refused = client.post("/console/integrity", headers=headers)
        assert refused.status_code == 403, headers
    done = client.post("/console/integrity", headers={"Origin": f"http://{host}"})
    assert done.status_code == 303
    page = client.get("/console/integrity").text
    head = scenario.forge.service.store.head()
    assert 'id="verified-at"' in page and head.hash in page
    assert f'<dd id="verify-events">{head.position}</dd>' in page
    anonymous = httpx.post(scenario.url + "/console/integrity", headers={"Origin": scenario.url})
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/console/login"


def test_docs_load_nothing_from_the_internet(scenario: Scenario) -> None:
    page = httpx.get(scenario.url + "/docs")
    assert page.status_code == 200
    assert not re.search(r"(src|href)=['\"]https?://", page.text), page.text
    assets = re.findall(r"(?:src|href)=['\"](/docs/assets/[^'\"]+)", page.text)
    assert len(assets) == 3, assets
    for asset in assets:
        assert httpx.get(scenario.url + asset).status_code == 200, asset
    redoc = httpx.get(scenario.url + "/redoc")
    assert redoc.status_code == 200 and "/docs/assets/redoc.standalone.js" in redoc.text
    assert not re.search(r"(src|href)=['\"]https?://", redoc.text), redoc.text


def test_hostile_parameters_on_the_new_pages_never_500(client: httpx.Client) -> None:
    for path, params in [
        ("/console/installations/not-a-uuid", {}),
        ("/console/installations/" + str(uuid.uuid4()), {"as_of": "x"}),
        ("/console/links", {"installation_id": "\x00", "kind": "zzz", "offset": "-1"}),
        ("/console/reimports", {"offset": "99999999999999999999999", "client_key": "\x00"}),
        ("/console/rejections", {"since": "yesterday"}),
        ("/console/rejections", {"since": "2026-13-45", "offset": "1e9"}),
        ("/console/rejections", {"reason": "\x00" * 300, "client_key": "%"}),
        ("/console/events", {"before": "-5"}),
        ("/console/events", {"before": "9" * 30, "format": "xml"}),
        ("/console/migration", {"part": "x", "offset": "abc"}),
    ]:
        answer = client.get(path, params=params)
        assert answer.status_code in (200, 400, 404), (path, params, answer.status_code)
        assert "Traceback" not in answer.text


def test_the_rejection_log_pages_in_order(tmp_path: Path) -> None:
    """Rows beyond a page follow on the next; together they are every row, once."""
    with running_service(f"sqlite:///{tmp_path / 'l.db'}") as service:
        for n in range(PAGE_SIZE + 7):
            refused = Rejection(
                at=utcnow(), path="/installed", reason="bad_signature", status=401,
                client_key=f"key-{n:03}",
            )  # fmt: skip
            service.store.record_rejection(refused)
        client = service.client
        log_in(client)
        first = client.get("/console/rejections", params={"reason": "bad_signature"})
        keys = re.findall(r"<td class=\"mono\">(key-\d+)</td>", first.text)
        following = re.search(r'rel="next" href="([^"]+)"', first.text)
        assert len(keys) == PAGE_SIZE and following
        second = client.get(html.unescape(following.group(1)))
        more = re.findall(r"<td class=\"mono\">(key-\d+)</td>", second.text)
        assert sorted(keys + more) == [f"key-{n:03}" for n in range(PAGE_SIZE + 7)]
        assert 'rel="next"' not in second.text
        assert f'<b id="refused-calls">{PAGE_SIZE + 7}</b>' in second.text


def test_the_rejection_log_lists_from_an_offset(store: EventStore) -> None:
    """``offset`` skips rows in the listing's own order (newest first), on both stores."""
    for n in range(7):
        store.record_rejection(
            Rejection(at=utcnow(), path="/installed", reason="r", status=401, client_key=f"k{n}")
        )
    every = [r.client_key for r in store.list_rejections(100)]
    assert len(every) == 7
    assert [r.client_key for r in store.list_rejections(3, offset=2)] == every[2:5]
    assert [r.client_key for r in store.list_rejections(3, reason="r", offset=6)] == every[6:]
    assert store.list_rejections(3, offset=7) == []


# ------------------------------------------------------------------ pure parts


def test_the_burn_down_counts_connect_only_tenants_at_each_day_end() -> None:
    log = Log()
    day = timedelta(days=1)
    site = str(uuid.uuid4())
    for key in ("a", "b", "c"):
        log.installed(key, f"https://{key}.atlassian.net", at=T0)
    log.add("b", installed_data("b", "https://b.atlassian.net"), at=T0)  # no change: noise
    forge_installed = RecordedEvent(
        len(log.events) + 1,
        installation_stream_id(site),
        1,
        "ForgeInstalled",
        1,
        ForgeInstalled(site, "cloud", None, "jira", "app", "1", None, None, None, None),
        Metadata(),
        T0 + day,
        DUMMY_HASH,
    )
    log.events.append(forge_installed)
    log.details_changed("a", {"installationId": installation_ari(site)}, at=T0 + day)
    log.uninstalled("c", at=T0 + 2 * day)
    today = (T0 + 4 * day).date()
    assert burn_down(log.events, today) == [
        (T0.date(), 3),
        ((T0 + day).date(), 2),
        ((T0 + 2 * day).date(), 1),
        ((T0 + 3 * day).date(), 1),
        (today, 1),
    ]


def test_the_burn_down_chart_runs_to_the_deadline() -> None:
    today = date(2026, 12, 8)
    days = [(today - timedelta(days=2 - i), n) for i, n in enumerate((5, 4, 4))]
    chart = str(burn_down_chart(days, CONNECT_END_OF_SUPPORT, today))
    assert chart.count('class="bar"') == 3 and 'data-value="5"' in chart
    assert 'class="deadline"' in chart and "2027-01-31" in chart and 'class="pace"' in chart
    assert str(burn_down_chart([], CONNECT_END_OF_SUPPORT, today)).count('class="bar"') == 0


def test_downloaded_cells_never_start_a_spreadsheet_formula() -> None:
    assert safe_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and safe_cell("-1") == "'-1"
    assert safe_cell(-1) == "-1" and safe_cell(None) == "" and safe_cell({"a": 1}) == '{"a":1}'
    rows = [{"a": "=1+1", "b": True}, {"a": "x,\"y\"", "b": None}]
    text = b"".join(csv_lines(rows, ("a", "b"))).decode()
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"a": "'=1+1", "b": "true"},
        {"a": 'x,"y"', "b": ""},
    ]
    assert json.loads(b"".join(json_lines(rows))) == rows
    assert json.loads(b"".join(json_lines([]))) == []


# ------------------------------------------------------------------ in a browser


class Walk:
    """A logged-in page that remembers every page's HTML (checked for secrets)."""

    def __init__(self, page: Any, base: str) -> None:
        self.page, self.base, self.seen = page, base, []
        self.off_host: list[str] = []
        page.on("request", self._request)

    def _request(self, request: Any) -> None:
        if not request.url.startswith(self.base):
            self.off_host.append(request.url)

    def keep(self, name: str | None = None) -> None:
        self.seen.append(self.page.content())
        if SHOTS and name:
            self.page.screenshot(path=str(Path(SHOTS) / f"console-{name}.png"), full_page=True)

    def nav(self, label: str) -> None:
        self.page.click(f"nav >> text={label}")

    def download(self, fmt: str, selector: str = "") -> str:
        with self.page.expect_download() as info:
            self.page.click(f"{selector} a.download[data-format={fmt}]".strip())
        return Path(info.value.path()).read_text()


def test_a_person_follows_every_view_in_a_browser(chromium: Any, scenario: Scenario) -> None:  # noqa: F811
    context = chromium.new_context(
        base_url=scenario.url, viewport={"width": 1360, "height": 900}, accept_downloads=True
    )
    try:
        walk = Walk(context.new_page(), scenario.url)
        page = walk.page
        page.goto("/console")
        page.fill("input[name=token]", ADMIN_TOKEN)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        _tenants(walk, scenario)
        _tenant_and_installation(walk, scenario)
        _links_reimports_migration(walk, scenario)
        _presumed_rejections_events(walk, scenario)
        _integrity_and_docs(walk, scenario)
        for html in walk.seen:
            for secret in [*scenario.secrets, ADMIN_TOKEN]:
                assert secret not in html
            assert "<script" not in html
        assert walk.off_host == []
    finally:
        context.close()


def _tenants(walk: Walk, s: Scenario) -> None:
    page = walk.page
    totals = s.admin("/admin/tenants", limit=1000)["tenants"]
    assert page.locator("#totals li b").all_inner_texts() == [
        str(n)
        for n in (
            len(totals),
            sum(t["state"] == "installed" for t in totals),
            sum(bool(t["enabled"]) for t in totals),
            sum(t["state"] == "uninstalled" for t in totals),
            sum(t.get("forgotten_at") is not None for t in totals),
        )
    ]
    assert page.locator("#totals li b").all_inner_texts()[3:] == ["1", "1"]  # gone; hooli
    walk.keep("tenants")
    page.fill("input[name=q]", "initech")
    page.click("button:has-text('Show')")
    page.wait_for_url("**q=initech**")
    assert page.locator("tr.tenant-row").count() == 2
    rows = list(csv.DictReader(io.StringIO(walk.download("csv"))))
    assert {r["client_key"] for r in rows} == {s.old["clientKey"], s.new["clientKey"]}
    page.goto("/console")
    everyone = json.loads(walk.download("json"))
    assert len(everyone) == len(totals)
    page.goto(tenant_path(s.hooli["clientKey"]))
    assert "alice@box" in page.locator(".forgotten-marker").inner_text()
    walk.keep()


def _tenant_and_installation(walk: Walk, s: Scenario) -> None:
    page = walk.page
    key, site = s.acme["clientKey"], s.site_a.installation_id
    page.goto("/console")
    page.click(f"a:text('{key}')")
    page.wait_for_selector("ol.timeline")
    assert page.locator(".refused-total").inner_text() == "3"
    assert page.locator("tr.refused").first.get_attribute("data-count") == "3"
    assert "this tenant" in page.locator("#installations").inner_text()
    walk.keep("tenant-on-forge")
    # Evidence of a link is a link to the event, on the timeline that holds it.
    page.click("#forge-links a.evidence-link >> nth=0")
    page.wait_for_url(re.compile(r".*#p\d+$"))
    anchor = page.url.rsplit("#", 1)[1]
    assert page.locator(f"li#{anchor}").count() == 1
    # Tenant → installation → tenant.
    page.click(f"#installations a:text('{site}')")
    page.wait_for_url(f"**/console/installations/{site}")
    events = s.forge.events(s.site_a)
    assert page.locator("ol.timeline li.event").count() == len(events)
    assert [page.locator("ol.timeline li.event").nth(i).get_attribute("data-type")
            for i in range(len(events))] == [e.type for e in events]  # fmt: skip
    assert page.locator("#now .app-version").inner_text() == "2.0.0"
    assert "Forge invocation token" in page.locator("ol.timeline li.event").first.inner_text()
    walk.keep("installation")
    page.click(f"#now a.tenant-link:text('{key}')")
    page.wait_for_url(f"**{tenant_path(key)}")
    # The same page by ARI; its links; the reinstall's previous installation.
    page.goto("/console/installations/" + quote(installation_ari(s.site_a2.installation_id), safe=""))
    assert page.locator("h1").inner_text().endswith(s.site_a2.installation_id)
    page.click("text=its links")
    page.wait_for_url("**/console/links?installation_id=**")
    assert page.locator("tr.link-row[data-kind=reinstall]").count() == 1
    page.click(f"tr.link-row[data-kind=reinstall] a:text('{site}')")
    page.wait_for_url(f"**/console/installations/{site}")
    # Refused calls naming the Forge-only installation, on its page.
    page.goto(f"/console/installations/{s.lonely.installation_id}")
    assert page.locator("tr.refused").count() >= 1
    walk.keep()


def _links_reimports_migration(walk: Walk, s: Scenario) -> None:
    page = walk.page
    walk.nav("Installations")
    every = s.admin("/admin/installations", limit=1000)["installations"]
    assert page.locator("#totals li b").all_inner_texts() == [
        str(len(every)),
        str(sum(i["state"] == "installed" for i in every)),
        str(sum(i["state"] == "uninstalling" for i in every)),
    ]
    page.select_option("select[name=state]", "uninstalling")
    page.click("button:has-text('Show')")
    page.wait_for_url("**state=uninstalling**")
    rows = json.loads(walk.download("json"))
    assert [r["state"] for r in rows] == ["uninstalling"]
    page.click(f"#installations a:text('{rows[0]['installation_id']}')")
    page.wait_for_selector("li[data-type=ForgeUninstalling]")
    page.click(f"#now a.tenant-link:text('{s.umbrella['clientKey']}')")
    page.wait_for_url(f"**{tenant_path(s.umbrella['clientKey'])}")
    walk.nav("Descriptors")
    versions = list(csv.DictReader(io.StringIO(walk.download("csv"))))
    assert versions == [
        {k: str(v) for k, v in row.items()}
        for row in s.admin("/admin/descriptors")["versions"]
    ]
    walk.nav("Links")
    links = s.admin("/admin/links")["links"]
    assert page.locator("tr.link-row").count() == len(links)
    walk.keep("links")
    walk.nav("Reimports")
    page.click(f"#reimport-links a:text('{s.new['clientKey']}')")
    page.wait_for_url(f"**{tenant_path(s.new['clientKey'])}")
    page.click(f"#reimports a:text('{s.old['clientKey']}')")
    page.click("text=its reimport links")
    page.wait_for_url("**/console/reimports?client_key=**")
    assert page.locator("tr.reimport-row").count() == 1
    walk.keep()
    walk.nav("Migration")
    migration = s.admin("/admin/migration")
    assert page.locator("#linked").inner_text() == str(migration["linked"])
    assert page.locator("#connect-only-total").inner_text() == str(len(migration["connect_only"]))
    assert page.locator("svg.burn-down rect.bar").count() >= 1
    assert page.locator("svg.burn-down line.deadline").count() == 1
    stragglers = list(csv.DictReader(io.StringIO(walk.download("csv", "#connect-only + p.downloads"))))
    assert {r["client_key"] for r in stragglers} == {t["client_key"] for t in migration["connect_only"]}
    assert s.globex["clientKey"] in {r["client_key"] for r in stragglers}
    walk.keep("migration")
    page.click(f"#installations a:text('{s.lonely.installation_id}')")
    page.wait_for_url(f"**/console/installations/{s.lonely.installation_id}")


def _presumed_rejections_events(walk: Walk, s: Scenario) -> None:
    page = walk.page
    walk.nav("Presumed gone")
    row = page.locator("tr.tenant-row[data-presumed=uninstalling]")
    assert s.umbrella["clientKey"] in row.inner_text()
    row.locator("a").first.click()
    page.wait_for_selector("#presumed")
    assert page.locator("#presumed").get_attribute("data-presumed") == "uninstalling"
    walk.keep()
    walk.nav("Rejections")
    refused = s.admin("/admin/rejections", limit=1000)["rejections"]
    assert page.locator("#refused-calls").inner_text() == str(sum(r["count"] for r in refused))
    walk.keep("rejections")
    page.select_option("select[name=reason]", "unknown_tenant")
    page.click("button:has-text('Show')")
    page.wait_for_url("**reason=unknown_tenant**")
    reasons = page.locator("tr.rejection").evaluate_all("rows => rows.map(r => r.dataset.reason)")
    assert reasons and set(reasons) == {"unknown_tenant"}
    downloaded = json.loads(walk.download("json"))
    assert {r["reason"] for r in downloaded} == {"unknown_tenant"}
    page.goto("/console/rejections?client_key=" + quote(s.acme["clientKey"]))
    assert page.locator("#refused-calls").inner_text() == "3"
    page.click(f"tr.rejection a:text('{s.acme['clientKey']}')")
    page.wait_for_url(f"**{tenant_path(s.acme['clientKey'])}")
    # Events: newest first; a row opens the stream's timeline at the event, and the
    # timeline's "in the log" comes back to it.
    walk.nav("Events")
    head = s.forge.service.store.head().position
    first = page.locator("tr.event-row").first
    assert first.get_attribute("id") == f"p{head}"
    walk.keep("events")
    page.locator("tr.event-row[data-type=Installed] a").first.click()
    page.wait_for_url(re.compile(r".*/console/tenants/.*#p\d+$"))
    position = page.url.rsplit("#p", 1)[1]
    page.click(f"li#p{position} >> text=in the log")
    page.wait_for_url(f"**/console/events?before={int(position) + 1}#p{position}")
    assert page.locator(f"tr#p{position}").count() == 1


def _integrity_and_docs(walk: Walk, s: Scenario) -> None:
    page = walk.page
    walk.nav("Integrity")
    page.click("#verify-now")
    page.wait_for_selector("#verified-at")
    assert page.locator("#verify-result").inner_text() == "ok"
    head = s.forge.service.store.head()
    assert page.locator("#verify-events").inner_text() == str(head.position)
    walk.keep("integrity")
    page.goto("/docs")
    page.wait_for_selector(".swagger-ui .info")
    assert "Tenant ledger" in page.locator(".swagger-ui .info").inner_text()
