"""`ledger demo`: a simulated Atlassian host drives the service through tenants' lives.

Without ``--url`` it starts everything itself (a key server, the service on a
throw-away SQLite file) so it works on a fresh clone. With ``--url`` it drives a
running service, which must fetch install keys from this demo's key server
(LEDGER_INSTALL_KEYS_URL=http://127.0.0.1:<key-port>) and share LEDGER_ADMIN_TOKEN
with it for the final read-back.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.demo_forge import ForgeDemo
from app.embedded import embedded_service
from app.hostsim import KeyServer, SimulatedHost, make_install_payload
from app.settings import Settings


class DemoHost:
    """A simulated host plus the HTTP client that delivers its calls."""

    def __init__(
        self, console: Console, url: str, app_base_url: str, key_server: KeyServer
    ) -> None:
        self.console = console
        self.client = httpx.Client(base_url=url, timeout=30)
        self.app_base_url = app_base_url
        self.host = SimulatedHost(key_server=key_server)
        self.results = Table(title="calls sent by the simulated host")
        for column in ("step", "call", "alg", "answer"):
            self.results.add_column(column)

    def send(
        self,
        step: str,
        event: str,
        payload: dict[str, Any],
        *,
        alg: str = "RS256",
        version: str = "1",
    ) -> int:
        call = self.host.lifecycle_call(
            event,
            payload,
            app_base_url=self.app_base_url,
            alg=alg,  # type: ignore[arg-type]
            descriptor_version=version,
        )
        response = self.client.post(
            call.url_path_with_query, content=call.body, headers=call.headers
        )
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        self.results.add_row(step, f"{event}?v={version}", alg, answer)
        return response.status_code


def drive(host: DemoHost) -> list[str]:
    """The story: install, enable, rotate, rename, upgrade, reimport, disable, enable, uninstall."""
    acme = make_install_payload(base_url="https://acme.atlassian.net")
    globex = make_install_payload(base_url="https://globex.atlassian.net", productType="confluence")
    host.send("acme installs the app", "installed", acme)
    host.send("acme's host enables it", "enabled", acme, alg="HS256")
    acme = dict(acme, sharedSecret=secrets.token_urlsafe(48))
    host.send("Atlassian rotates acme's secret", "installed", acme)
    acme = dict(
        acme,
        baseUrl="https://acme-corp.atlassian.net",
        displayUrl="https://acme-corp.atlassian.net",
    )
    host.send("acme renames its site", "installed", acme)
    host.send("descriptor v2 reaches acme", "installed", acme, version="2")
    host.send("globex installs the app", "installed", globex)
    reimported = make_install_payload(base_url=globex["baseUrl"], productType="confluence")
    host.send("globex's site is reimported (new clientKey)", "installed", reimported, version="2")
    host.send("acme disables the app", "disabled", acme, alg="HS256", version="2")
    host.send("acme enables it again", "enabled", acme, alg="HS256", version="2")
    host.send("globex uninstalls", "uninstalled", globex)
    host.send(
        "a forged install for acme (HS256, own secret)",
        "installed",
        dict(acme, sharedSecret="attacker"),
        alg="HS256",
        version="2",
    )
    return [acme["clientKey"], globex["clientKey"], reimported["clientKey"]]


def show_tenants(
    console: Console, client: httpx.Client, token: str | None, client_keys: list[str]
) -> None:
    if not token:
        console.print(
            "LEDGER_ADMIN_TOKEN is not set: cannot read the tenants back through the admin API."
        )
        return
    headers = {"Authorization": f"Bearer {token}"}
    table = Table(title="tenants")
    columns = ("client_key", "base_url", "state", "enabled", "descriptor_version", "version")
    for column in columns:
        table.add_column(column)
    known: list[str] = []
    for key in client_keys:
        answer = client.get(f"/admin/tenants/{key}", headers=headers)
        if answer.status_code != 200:
            table.add_row(key, f"({answer.status_code} {answer.json().get('error', '')})")
            continue
        known.append(key)
        tenant = answer.json()
        table.add_row(*(str(tenant.get(c)) for c in columns))
    console.print(table)
    for key in known:
        events = client.get(f"/admin/tenants/{key}/events", headers=headers).json()["events"]
        history = Table(title=f"history of {key}")
        for column in ("position", "version", "type", "data", "alg"):
            history.add_column(column)
        for event in events:
            history.add_row(
                str(event["position"]),
                str(event["version"]),
                event["type"],
                escape(
                    ", ".join(
                        f"{k}={v}"
                        for k, v in event["data"].items()
                        if k in ("baseUrl", "from", "to", "sharedSecret", "displayUrl")
                    )
                ),
                str(event["metadata"].get("alg")),
            )
        console.print(history)
    reimports = client.get("/admin/reimports", headers=headers)
    if reimports.status_code == 200:
        links = Table(title="reimport links (evidence, never migrated automatically)")
        for column in ("base_url", "previous_client_key", "client_key", "kind"):
            links.add_column(column)
        for link in reimports.json()["links"]:
            links.add_row(
                *(str(link[c]) for c in ("base_url", "previous_client_key", "client_key", "kind"))
            )
        console.print(links)


@contextmanager
def _own_service(
    key_server: KeyServer, token: str, forge: dict[str, Any]
) -> Iterator[tuple[str, Settings]]:
    with tempfile.TemporaryDirectory(prefix="ledger-demo-") as folder:

        def settings_for(url: str) -> Settings:
            return Settings(
                database_url=f"sqlite:///{Path(folder) / 'demo.db'}",
                app_base_url=url,
                install_keys_url=key_server.url,
                master_key=SecretStr(base64.b64encode(os.urandom(32)).decode()),
                admin_token=SecretStr(token),
                **forge,
            )

        with (
            open(os.devnull, "w") as quiet,
            embedded_service(settings_for, log_stream=quiet) as running,
        ):
            yield running


def run_demo(console: Console, *, url: str | None, key_port: int) -> None:
    key_server = KeyServer(port=key_port if url else 0).start()
    forge = ForgeDemo()
    try:
        if url is None:
            token = secrets.token_urlsafe(24)
            with _own_service(key_server, token, forge.settings()) as (own_url, settings):
                console.print(f"started a throw-away service at {own_url} (SQLite, temporary)")
                host = DemoHost(console, own_url, settings.app_base_url, key_server)
                keys = drive(host)
                console.print(host.results)
                show_tenants(console, host.client, token, keys)
                forge.drive(console, host.client, host.send, token)
        else:
            console.print(f"driving {url}; install keys are served at {key_server.url}")
            # The service's own idea of its base URL (the tokens' audience), which
            # need not be the address this demo reaches it by.
            with httpx.Client(base_url=url, timeout=10) as probe:
                app_base_url = probe.get("/atlassian-connect.json").json()["baseUrl"]
            host = DemoHost(console, url, app_base_url, key_server)
            keys = drive(host)
            console.print(host.results)
            admin_token = Settings().admin_token
            show_tenants(
                console, host.client, admin_token.get_secret_value() if admin_token else None, keys
            )
    finally:
        key_server.stop()
        forge.stop()
