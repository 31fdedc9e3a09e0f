"""The Forge part of `ledger demo`: one tenant's move from Connect to Forge.

``ForgeDemo`` starts a JWKS server and a simulated Forge platform before the service
(its settings need the app id and the JWKS URL: ``settings()``), then ``drive`` sends
the story through the service and prints, read back through the admin API once the
read models hold its last event: the installations, the identity links, the
migration report and the presumed-gone tenants with their reasons. Printed like every
read (``app.cli_output``): tables on a terminal, TSV under ``## section`` lines when
redirected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from rich.console import Console

from app.cli.demo.common import AdminReader, section
from app.cli.forge import INSTALLATION_COLUMNS, LINK_COLUMNS, MIGRATION_COLUMNS
from app.cli.output import print_records
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeCall, ForgeInstallation, ForgePlatform, JwksServer, license_2026
from eventstore.ids import installation_ari

ConnectSender = Callable[..., int]  # DemoHost.send(step, event, payload, ...)
SITE = "https://umbrella.atlassian.net"
CALL_COLUMNS = ("step", "call", "signed_with", "answer")


class ForgeDemo:
    def __init__(self) -> None:
        self.jwks = JwksServer().start()
        self.platform = ForgePlatform(jwks=self.jwks)
        self.results: list[dict[str, str]] = []

    def settings(self) -> dict[str, Any]:
        """What the service needs to accept this platform's calls."""
        return {"forge_app_id": self.platform.app_ari, "forge_jwks_urls": self.jwks.url}

    def stop(self) -> None:
        self.jwks.stop()

    def _connect(
        self, connect: ConnectSender, step: str, payload: dict[str, Any], **options: Any
    ) -> None:
        status = connect(step, "installed", payload, **options)
        self._record(step, "Connect installed", "(Connect JWT)", str(status))

    def _record(self, step: str, call: str, signed_with: str, answer: str) -> None:
        self.results.append(
            {"step": step, "call": call, "signed_with": signed_with, "answer": answer}
        )

    def _send(self, client: httpx.Client, step: str, call: ForgeCall) -> int:
        response = client.post(call.path, content=call.body, headers=call.headers)
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        which = "rotated key" if self.platform.current else "first key"
        self._record(step, call.route, which, answer)
        return response.status_code

    def drive(
        self, console: Console, client: httpx.Client, connect: ConnectSender, token: str | None
    ) -> None:
        """The move: Connect install naming the installation, Forge installed (and a
        retry), a major upgrade, a license change, a key rotation, a reinstall with a
        new installationId, pre-uninstall; and a site that came to Forge directly."""
        platform = self.platform
        site = ForgeInstallation(app_version="1.4.0")
        tenant = make_install_payload(
            base_url=SITE, installationId=installation_ari(site.installation_id)
        )
        self._connect(connect, "umbrella installs the Connect app (names its installation)", tenant)
        first = platform.installed(site)
        self._send(client, "Forge: installed", first)
        self._send(client, "Forge retries it (new token, same delivery)", platform.retry(first))
        site.app_version = "2.0.0"
        self._send(client, "a major version reaches umbrella", platform.upgraded(site))
        site.license = license_2026(isEvaluation=True)
        self._send(client, "umbrella's license becomes an evaluation", platform.upgraded(site))
        platform.rotate()
        self._send(client, "Forge signs with its rotated key", platform.installed(site))
        again = ForgeInstallation(cloud_id=site.cloud_id, app_version="2.0.0")
        self._send(client, "umbrella reinstalls (new installationId)", platform.installed(again))
        renamed = dict(tenant, installationId=installation_ari(again.installation_id))
        self._connect(
            connect, "its Connect payload names the new installation", renamed, version="2"
        )
        self._send(client, "umbrella starts uninstalling", platform.pre_uninstall(again))
        newcomer = ForgeInstallation(app_version="2.0.0")
        self._send(client, "a new site installs on Forge only", platform.installed(newcomer))
        section(console, "a tenant moves to Forge: calls sent by the simulated platform")
        print_records(self.results, CALL_COLUMNS, console=console)
        if token:
            show_forge(console, client, token, newcomer.installation_id)


def show_forge(console: Console, client: httpx.Client, token: str, last: str) -> None:
    """Read back through the admin API, once the read models hold ``last``'s events."""
    reader = AdminReader(client, token)
    events = reader.get(f"/admin/installations/{last}/events")["events"]
    caught_up = events[-1]["position"]
    section(console, "Forge installations")
    installations = reader.get("/admin/installations", min_position=caught_up)
    print_records(installations["installations"], INSTALLATION_COLUMNS, console=console)
    section(console, "identity links (evidence, never an automatic migration)")
    links = reader.get("/admin/links", min_position=caught_up)["links"]
    for link in links:
        link["evidence"] = f"{link['evidence']['stream']}@{link['evidence']['position']}"
    print_records(links, LINK_COLUMNS, console=console)
    report = reader.get("/admin/migration", min_position=caught_up)
    section(console, f"migration report ({report['linked']} Connect tenant(s) linked to Forge)")
    rows = [{"list": "connect_only", **r} for r in report["connect_only"]]
    rows += [{"list": "forge_only", **r} for r in report["forge_only"]]
    print_records(rows, MIGRATION_COLUMNS, console=console)
    section(console, "after the move: presumed gone (silent / uninstalling)")
    gone = reader.get("/admin/presumed-gone", min_position=caught_up, grace_hours=1 / 3600)
    shown = [dict(t, presumed=",".join(t["presumed"])) for t in gone["tenants"]]
    print_records(shown, ("client_key", "presumed", "base_url", "state"), console=console)
