"""The Forge part of `ledger demo`: one tenant's move from Connect to Forge.

``ForgeDemo`` starts a JWKS server and a simulated Forge platform before the service
(its settings need the app id and the JWKS URL: ``settings()``), then ``drive`` sends
the story through the service and prints the installations, the links and the
migration report read back through the admin API.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.hostsim import make_install_payload
from app.hostsim_forge import ForgeCall, ForgeInstallation, ForgePlatform, JwksServer
from projections.forge_ids import installation_ari

ConnectSender = Callable[..., int]  # DemoHost.send(step, event, payload, ...)


class ForgeDemo:
    def __init__(self) -> None:
        self.jwks = JwksServer().start()
        self.platform = ForgePlatform(jwks=self.jwks)
        self.results = Table(title="a tenant moves to Forge: calls sent")
        for column in ("step", "call", "signed with", "answer"):
            self.results.add_column(column, overflow="fold")

    def settings(self) -> dict[str, Any]:
        """What the service needs to accept this platform's calls."""
        return {"forge_app_id": self.platform.app_ari, "forge_jwks_urls": self.jwks.url}

    def stop(self) -> None:
        self.jwks.stop()

    def _connect(
        self, connect: ConnectSender, step: str, payload: dict[str, Any], **options: Any
    ) -> None:
        status = connect(step, "installed", payload, **options)
        self.results.add_row(step, "Connect installed", "(Connect JWT)", str(status))

    def _send(self, client: httpx.Client, step: str, call: ForgeCall) -> int:
        response = client.post(call.path, content=call.body, headers=call.headers)
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        which = "rotated key" if self.platform.current else "first key"
        self.results.add_row(step, call.route, which, answer)
        return response.status_code

    def drive(
        self, console: Console, client: httpx.Client, connect: ConnectSender, token: str | None
    ) -> None:
        """The move: Connect install naming the installation, Forge installed (and a
        retry), a major upgrade, a license change, a key rotation, a reinstall with a
        new installationId, and pre-uninstall."""
        platform = self.platform
        site = ForgeInstallation(app_version="1.4.0")
        tenant = make_install_payload(
            base_url="https://initech.atlassian.net",
            installationId=installation_ari(site.installation_id),
        )
        self._connect(connect, "initech installs the Connect app (names its installation)", tenant)
        first = platform.installed(site)
        self._send(client, "Forge: installed", first)
        self._send(client, "Forge retries it (new token, same delivery)", platform.retry(first))
        site.app_version = "2.0.0"
        self._send(client, "a major version reaches initech", platform.upgraded(site))
        site.license = {"isActive": True, "type": "commercial", "isEvaluation": True}
        self._send(client, "initech's license becomes an evaluation", platform.upgraded(site))
        platform.rotate()
        self._send(client, "Forge signs with its rotated key", platform.installed(site))
        again = ForgeInstallation(cloud_id=site.cloud_id, app_version="2.0.0")
        self._send(client, "initech reinstalls (new installationId)", platform.installed(again))
        renamed = dict(tenant, installationId=installation_ari(again.installation_id))
        self._connect(
            connect, "its Connect payload names the new installation", renamed, version="2"
        )
        self._send(client, "initech starts uninstalling", platform.pre_uninstall(again))
        console.print(self.results)
        if token:
            show_forge(console, client, token, again.installation_id)


def _table(title: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> Table:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(escape(str(row.get(c))) for c in columns))
    return table


def show_forge(console: Console, client: httpx.Client, token: str, last: str) -> None:
    """Read back through the admin API, once the read models hold ``last``'s events."""
    headers = {"Authorization": f"Bearer {token}"}
    events = client.get(f"/admin/installations/{last}/events", headers=headers)
    wait = {"min_position": events.json()["events"][-1]["position"]} if events.is_success else {}

    def get(path: str) -> Any:
        return client.get(path, headers=headers, params=wait).json()

    console.print(
        _table(
            "Forge installations",
            get("/admin/installations")["installations"],
            ("installation_id", "cloud_id", "app_version", "state", "license_active", "client_key"),
        )
    )
    links = get("/admin/links")["links"]
    for link in links:
        link["evidence"] = f"{link['evidence']['stream']}@{link['evidence']['position']}"
    console.print(
        _table(
            "identity links (evidence, never an automatic migration)",
            links,
            ("kind", "client_key", "installation_id", "previous_installation_id", "evidence"),
        )
    )
    report = get("/admin/migration")
    console.print(f"migration: {report['linked']} Connect tenant(s) linked to Forge")
    console.print(
        _table(
            "Connect only", report["connect_only"], ("client_key", "base_url", "installation_id")
        )
    )
    console.print(
        _table("Forge only", report["forge_only"], ("installation_id", "cloud_id", "state"))
    )
