"""`ledger demo`: a simulated Atlassian host drives the service through tenants' lives,
then every read model is printed, read back through the admin API.

The story (``app.cli.demo.story.STEPS``) spans eight weeks: on a service of its own the
demo moves the service's clock from day to day (``eventstore.clock.simulated_clock``),
so the read models and the console have history. It ends just before the real now.

Without ``--url`` it starts everything itself (a key server, the service on a
throw-away SQLite file) so it works on a fresh clone. With ``--url`` it drives a
running service, which must fetch install keys from this demo's key server
(LEDGER_INSTALL_KEYS_URL=http://127.0.0.1:<key-port>) and share LEDGER_ADMIN_TOKEN
with it for the read-back.

Every read of a read model passes ``min_position`` (the last position the demo's own
calls wrote), so the admin API answers only once the projections have folded it: the
demo never prints a read model that has not caught up. Output follows the CLI's
conventions (``app.cli.output``): tables on a terminal, TSV under a ``## section``
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
from rich.text import Text

from app.cli.demo.common import AdminReader, DemoHost, section
from app.cli.demo.forge import ForgeDemo
from app.cli.demo.story import STEPS, Cast, DemoClock, play_steps, story_days
from app.cli.output import print_record, print_records
from app.queries.evidence import HISTORY_COLUMNS, evidence_rows
from app.serve.embedded import embedded_service
from app.settings import Settings
from app.sim.connect import KeyServer
from eventstore.clock import simulated_clock

TENANT_COLUMNS = ("client_key", "base_url", "state", "enabled", "descriptor_version", "version")


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


def last_written(
    histories: dict[str, list[dict[str, Any]]], reader: AdminReader, cast: Cast
) -> int:
    """The last position the story wrote: its tenants' events and, when the Forge
    platform played, its installations' too (a ``pre-uninstall`` late in the story is
    in an installation's stream, and the presumed-gone list must have folded it)."""
    positions = [e["position"] for events in histories.values() for e in events]
    if cast.forge is not None:
        for installation in cast.installations.values():
            path = f"/admin/installations/{installation.installation_id}/events"
            positions += [e["position"] for e in reader.get(path)["events"]]
    return max(positions)


def show_read_models(console: Console, reader: AdminReader, cast: Cast) -> None:
    client_keys = [site["clientKey"] for site in cast.sites.values()]
    histories = {k: reader.get(f"/admin/tenants/{k}/events")["events"] for k in client_keys}
    caught_up = last_written(histories, reader, cast)
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
    section(
        console,
        "presumed gone (silent for over 24 h since a newer descriptor; uninstalling on Forge)",
    )
    gone = reader.get("/admin/presumed-gone", min_position=caught_up)["tenants"]
    shown = [dict(t, presumed=",".join(t["presumed"])) for t in gone]
    print_records(
        shown, ("client_key", "presumed", *TENANT_COLUMNS[1:], "last_seen_at"), console=console
    )
    section(console, "rejections (refused calls)")
    refused = reader.get("/admin/rejections", limit=10)["rejections"]
    columns = ("at", "status", "reason", "count", "path", "client_key", "token_sha256")
    print_records(refused, columns, console=console)


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


CALL_COLUMNS = ("date", "step", "call", "alg", "answer")


def play(
    console: Console, cast: Cast, token: str | None, database_url: str, simulated: bool
) -> None:
    """Tell the story (on the simulated calendar when ``simulated``), then print every
    read model and the integrity evidence."""
    if simulated:
        clock = DemoClock(story_days(STEPS))
        with simulated_clock(clock):
            skipped = play_steps(cast, STEPS, clock)
    else:
        skipped = play_steps(cast, STEPS, DemoClock(0))
    if skipped:
        note(
            f"skipped {len(skipped)} Forge step(s) ({'; '.join(step.say for step in skipped)}):"
            " a Forge call is verified against the"
            " service's LEDGER_FORGE_JWKS_URLS, and the platform's keys are served only by"
            " the JWKS this demo starts for a service of its own (run `ledger demo` without"
            " --url to see them)",
            console,
        )
    section(console, "calls sent by the simulated host")
    print_records(cast.connect.results, CALL_COLUMNS, console=console)
    if token is None:
        note("LEDGER_ADMIN_TOKEN is not set: cannot read the ledger back", console)
        return
    reader = AdminReader(cast.connect.client, token)
    show_read_models(console, reader, cast)
    show_integrity(console, reader, database_url)
    if cast.forge is not None:
        last = list(cast.installations.values())[-1].installation_id
        cast.forge.show(console, token, last)


def note(message: str, console: Console) -> None:
    """A line for people; in a pipe or a file, under the section it belongs to."""
    console.print(Text(message), soft_wrap=True)


def _hold(console: Console, url: str) -> None:
    """On a terminal, keep the service up for the console until Ctrl-C."""
    console.print("the service stays up for the console; press Ctrl-C to stop it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print(f"stopped: the service at {url} is gone")


def run_demo(console: Console, *, url: str | None, key_port: int) -> None:
    key_server = KeyServer(port=key_port if url else 0).start()
    forge = ForgeDemo()
    try:
        if url is None:
            _run_own(console, key_server, forge)
        else:
            _drive_running(console, url, key_server)
    finally:
        key_server.stop()
        forge.stop()


def _run_own(console: Console, key_server: KeyServer, forge: ForgeDemo) -> None:
    """A throw-away service of the demo's own, on the story's simulated calendar."""
    token = secrets.token_urlsafe(24)
    with _own_service(key_server, token, forge.settings()) as (own_url, settings):
        console.print(f"started a throw-away service at {own_url} (SQLite, temporary)")
        host = DemoHost(own_url, settings.app_base_url, key_server)
        forge.client = host.client
        play(console, Cast(host, forge), token, settings.database_url, simulated=True)
        section(console, "console")
        if console.is_terminal:
            # A throw-away service's throw-away token: showing it is the point.
            console.print(f"open {own_url}/console and log in with the admin token {token}")
            _hold(console, own_url)
    if not console.is_terminal:
        note(
            "the throw-away service has stopped and its database is deleted: run"
            " `ledger demo` on a terminal to keep it up and browse it in the console",
            console,
        )


def _drive_running(console: Console, url: str, key_server: KeyServer) -> None:
    console.print(f"driving {url}; install keys are served at {key_server.url}")
    note(
        "the service's own clock stamps every event: the story's weeks pass in seconds"
        " there (only a service the demo starts itself runs on the simulated calendar)",
        console,
    )
    # The service's own idea of its base URL (the tokens' audience), which need not
    # be the address this demo reaches it by.
    with httpx.Client(base_url=url, timeout=10) as probe:
        app_base_url = probe.get("/atlassian-connect.json").json()["baseUrl"]
    settings = Settings()
    token = settings.admin_token.get_secret_value() if settings.admin_token else None
    cast = Cast(DemoHost(url, app_base_url, key_server), None)
    play(console, cast, token, settings.database_url, simulated=False)
    if token is not None:
        section(console, "console")
        # Never print an operator's real token: they know it.
        console.print(f"open {url.rstrip('/')}/console and log in with LEDGER_ADMIN_TOKEN")
