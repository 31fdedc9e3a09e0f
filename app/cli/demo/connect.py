"""`ledger demo`: a simulated Atlassian host drives the service through tenants' lives,
then every read model is printed, read back through the admin API.

Without ``--url`` it starts everything itself (a key server, the service on a
throw-away SQLite file) so it works on a fresh clone. With ``--url`` it drives a
running service, which must fetch install keys from this demo's key server
(LEDGER_INSTALL_KEYS_URL=http://127.0.0.1:<key-port>) and share LEDGER_ADMIN_TOKEN
with it for the read-back.

Every read of a read model passes ``min_position`` (the last position the demo's own
calls wrote), so the admin API answers only once the projections have folded it: the
demo never prints a read model that has not caught up. Output follows the CLI's
conventions (``app.cli_output``): tables on a terminal, TSV under a ``## section``
line when redirected.
"""

from __future__ import annotations

import base64
import os
import secrets
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from rich.console import Console

from app.cli.demo.common import AdminReader, section
from app.cli.demo.forge import ForgeDemo
from app.cli.output import print_record, print_records
from app.queries.evidence import HISTORY_COLUMNS, evidence_rows
from app.serve.embedded import embedded_service
from app.settings import Settings
from app.sim.connect import KeyServer, SimulatedHost, make_install_payload
from eventstore.clock import parse_timestamp, utcnow

# A tenant silent since a version first seen this long ago is presumed gone. The
# default is 24 h; the demo cannot wait a day, so it asks with a one-second grace.
DEMO_GRACE_SECONDS = 1.0
TENANT_COLUMNS = ("client_key", "base_url", "state", "enabled", "descriptor_version", "version")


class DemoHost:
    """A simulated host plus the HTTP client that delivers its calls."""

    def __init__(self, url: str, app_base_url: str, key_server: KeyServer) -> None:
        self.client = httpx.Client(base_url=url, timeout=30)
        self.app_base_url = app_base_url
        self.host = SimulatedHost(key_server=key_server)
        self.results: list[dict[str, Any]] = []

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
            alg=alg,  # type: ignore[arg-type]  # the demo sends a refused alg on purpose
            descriptor_version=version,
        )
        response = self.client.post(
            call.url_path_with_query, content=call.body, headers=call.headers
        )
        answer = str(response.status_code)
        if response.status_code != 204:
            answer += " " + response.json().get("error", "")
        self.results.append(
            {"step": step, "call": f"{event}?v={version}", "alg": alg, "answer": answer}
        )
        return response.status_code


def drive(host: DemoHost) -> list[str]:
    """The story: install, enable, rotate, rename, upgrade, reimport, go silent, uninstall,
    and a forged install. Returns the client keys it created, acme's first."""
    acme = make_install_payload(base_url="https://acme.atlassian.net")
    initech = make_install_payload(base_url="https://initech.atlassian.net")
    globex = make_install_payload(base_url="https://globex.atlassian.net", productType="confluence")
    host.send("acme installs the app", "installed", acme)
    host.send("initech installs the app (and is never heard of again)", "installed", initech)
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
    return [acme["clientKey"], initech["clientKey"], globex["clientKey"], reimported["clientKey"]]


def base_url_rows(histories: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The events that gave a tenant its base URL: where each site was, from when."""
    rows: list[dict[str, Any]] = []
    for client_key, events in histories.items():
        for event in events:
            url = {"Installed": "baseUrl", "BaseUrlChanged": "to"}.get(event["type"])
            if url is not None:
                rows.append(
                    {
                        "client_key": client_key,
                        "base_url": event["data"][url],
                        "since": event["recorded_at"],
                        "position": event["position"],
                        "type": event["type"],
                    }
                )
    return sorted(rows, key=lambda r: r["position"])


def _wait_for_grace(descriptors: dict[str, Any]) -> None:
    """Sleep until the latest version has been seen for longer than the demo's grace."""
    latest = next(
        (v for v in descriptors["versions"] if v["version"] == descriptors["latest"]), None
    )
    if latest is not None:
        age = (utcnow() - parse_timestamp(latest["first_seen_at"])).total_seconds()
        time.sleep(min(max(DEMO_GRACE_SECONDS - age + 0.05, 0.0), 5.0))


def show_read_models(console: Console, reader: AdminReader, client_keys: list[str]) -> None:
    histories = {k: reader.get(f"/admin/tenants/{k}/events")["events"] for k in client_keys}
    caught_up = max(e["position"] for events in histories.values() for e in events)
    section(console, f"tenants (read models caught up with position {caught_up})")
    tenants = reader.get("/admin/tenants", min_position=caught_up, limit=100)["tenants"]
    print_records(tenants, TENANT_COLUMNS, console=console)
    section(console, f"history of {client_keys[0]}")
    print_records(evidence_rows(histories[client_keys[0]]), HISTORY_COLUMNS, console=console)
    section(console, "base URL history")
    print_records(
        base_url_rows(histories),
        ("client_key", "base_url", "since", "position", "type"),
        console=console,
    )
    section(console, "reimport links (evidence, never migrated automatically)")
    links = reader.get("/admin/reimports", min_position=caught_up)["links"]
    print_records(links, ("base_url", "previous_client_key", "client_key", "kind"), console=console)
    descriptors = reader.get("/admin/descriptors", min_position=caught_up)
    section(console, f"descriptor adoption (latest: {descriptors['latest']})")
    print_records(descriptors["versions"], ("version", "first_seen_at", "tenants"), console=console)
    section(console, "stragglers (installed, not on the latest version)")
    print_records(descriptors["stragglers"], TENANT_COLUMNS, console=console)
    _wait_for_grace(descriptors)
    section(console, f"presumed gone (grace {DEMO_GRACE_SECONDS:g} s instead of 24 h)")
    gone = reader.get(
        "/admin/tenants",
        presumed_gone="true",
        grace_hours=DEMO_GRACE_SECONDS / 3600,
        min_position=caught_up,
    )["tenants"]
    print_records(gone, (*TENANT_COLUMNS, "last_seen_at"), console=console)
    section(console, "rejections (refused calls)")
    refused = reader.get("/admin/rejections", limit=10)["rejections"]
    print_records(
        refused, ("at", "status", "reason", "path", "client_key", "token_sha256"), console=console
    )


def show_integrity(console: Console, reader: AdminReader, database_url: str) -> None:
    """The chain verified by the service, and a digest to keep where the database is not."""
    from app.cli.stores import existing_store
    from eventstore.digest import make_digest
    from eventstore.errors import StoreError

    section(console, "verify (the hash chain recomputed)")
    verified = reader.get("/admin/verify")
    print_record(verified, console=console)
    section(console, "digest (keep it outside the database; `ledger verify --digest FILE`)")
    try:
        with existing_store(Settings(database_url=database_url)) as store:
            digest = make_digest(store)
    except StoreError:
        console.print("no digest: LEDGER_DATABASE_URL cannot be opened from here")
        return
    print_record(digest, console=console)
    if digest["head"] != verified["head"]:
        console.print(
            f"note: the digest is of {digest['store']} at LEDGER_DATABASE_URL,"
            " which is not the log the service verified"
        )


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


def play(console: Console, host: DemoHost, token: str, database_url: str) -> None:
    """Drive the story, then print every read model and the integrity evidence."""
    keys = drive(host)
    section(console, "calls sent by the simulated host")
    print_records(host.results, ("step", "call", "alg", "answer"), console=console)
    reader = AdminReader(host.client, token)
    show_read_models(console, reader, keys)
    show_integrity(console, reader, database_url)


def _hold(console: Console) -> None:
    """On a terminal, keep the service up for the console until Ctrl-C."""
    if not console.is_terminal:
        return
    console.print("the service stays up for the console; press Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopped")


def run_demo(console: Console, *, url: str | None, key_port: int) -> None:
    key_server = KeyServer(port=key_port if url else 0).start()
    forge = ForgeDemo()
    try:
        if url is None:
            token = secrets.token_urlsafe(24)
            with _own_service(key_server, token, forge.settings()) as (own_url, settings):
                console.print(f"started a throw-away service at {own_url} (SQLite, temporary)")
                host = DemoHost(own_url, settings.app_base_url, key_server)
                play(console, host, token, settings.database_url)
                forge.drive(console, host.client, host.send, token)
                section(console, "console")
                # A throw-away service's throw-away token: showing it is the point.
                console.file.write(
                    f"open {own_url}/console and log in with the admin token {token}\n"
                )
                _hold(console)
        else:
            _drive_running(console, url, key_server)
    finally:
        key_server.stop()
        forge.stop()


def _drive_running(console: Console, url: str, key_server: KeyServer) -> None:
    console.print(f"driving {url}; install keys are served at {key_server.url}")
    # The service's own idea of its base URL (the tokens' audience), which need not
    # be the address this demo reaches it by.
    with httpx.Client(base_url=url, timeout=10) as probe:
        app_base_url = probe.get("/atlassian-connect.json").json()["baseUrl"]
    settings = Settings()
    host = DemoHost(url, app_base_url, key_server)
    if settings.admin_token is None:
        drive(host)
        print_records(host.results, ("step", "call", "alg", "answer"), console=console)
        console.print("LEDGER_ADMIN_TOKEN is not set: cannot read the ledger back.")
        return
    play(console, host, settings.admin_token.get_secret_value(), settings.database_url)
    section(console, "console")
    # Never print an operator's real token: they know it.
    console.file.write(f"open {url.rstrip('/')}/console and log in with LEDGER_ADMIN_TOKEN\n")
