"""The Forge part of `ledger demo`: tenants' move from Connect to Forge.

``ForgeDemo`` starts a JWKS server and a simulated Forge platform before the service
(its settings need the app id and the JWKS URL: ``settings()``); the story's Forge
steps (``app.cli.demo.story``) send their calls through ``send``; ``show`` prints the
calls and, read back through the admin API once the read models hold the last one,
the installations, the identity links and the migration report. Printed like every
read (``app.cli.output``): tables on a terminal, TSV under ``## section`` lines when
redirected.
"""

from __future__ import annotations

from typing import Any

import httpx
from rich.console import Console

from app.cli.demo.common import AdminReader, DemoHost, section
from app.cli.forge import INSTALLATION_COLUMNS, LINK_COLUMNS, MIGRATION_COLUMNS
from app.cli.output import print_records
from app.sim.forge import ForgeCall, ForgeInstallation, ForgePlatform, JwksServer
from eventstore.clock import utcnow

CALL_COLUMNS = ("date", "step", "call", "signed_with", "answer")


class ForgeDemo:
    """The simulated Forge platform and its JWKS; ``send`` delivers one of its calls
    (through ``client``, set once the service runs) and keeps the answer for the table."""

    def __init__(self) -> None:
        self.jwks = JwksServer().start()
        self.platform = ForgePlatform(jwks=self.jwks)
        self.results: list[dict[str, str]] = []
        self.client: httpx.Client | None = None
        self._last: ForgeCall | None = None

    def settings(self) -> dict[str, Any]:
        """What the service needs to accept this platform's calls."""
        return {"forge_app_id": self.platform.app_ari, "forge_jwks_urls": self.jwks.url}

    def stop(self) -> None:
        self.jwks.stop()

    def connect(self, host: DemoHost, say: str, payload: dict[str, Any], **options: Any) -> int:
        """A Connect ``installed`` call of the story (sent by the Connect host)."""
        status = host.send(say, "installed", payload, **options)
        self._record(say, "Connect installed", "(Connect JWT)", str(status))
        return status

    def _record(self, step: str, call: str, signed_with: str, answer: str) -> None:
        self.results.append(
            {
                "date": utcnow().date().isoformat(),
                "step": step,
                "call": call,
                "signed_with": signed_with,
                "answer": answer,
            }
        )

    def _call(self, route: str, installation: ForgeInstallation) -> ForgeCall:
        if route == "retry" and self._last is not None:
            return self.platform.retry(self._last)
        if route == "upgraded":
            return self.platform.upgraded(installation)
        if route == "pre-uninstall":
            return self.platform.pre_uninstall(installation)
        return self.platform.installed(installation)

    def send(self, say: str, route: str, installation: ForgeInstallation) -> int:
        assert self.client is not None  # set by the demo once the service runs
        call = self._last = self._call(route, installation)
        response = self.client.post(call.path, content=call.body, headers=call.headers)
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        which = "rotated key" if self.platform.current else "first key"
        self._record(say, call.route, which, answer)
        return response.status_code

    def show(self, console: Console, token: str | None, last: str) -> None:
        """The platform's calls, then (with the admin token) the Forge read models."""
        assert self.client is not None
        section(console, "a tenant moves to Forge: calls sent by the simulated platform")
        print_records(self.results, CALL_COLUMNS, console=console)
        if token:
            show_forge(console, self.client, token, last)


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
