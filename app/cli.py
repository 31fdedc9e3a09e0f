"""`ledger`: the command line of the tenant ledger (Typer + Rich).

Every command reads LEDGER_DATABASE_URL (SQLite by default, or PostgreSQL) like the
service does. Read commands print tables for people and JSON with ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app.settings import Settings
from eventstore.events import stream_id_for
from eventstore.store import EventStore, RecordedEvent, format_timestamp, open_store

cli = typer.Typer(
    name="ledger",
    help="The tenant ledger: verified Atlassian Connect lifecycle calls kept as immutable events.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")
]


def _store() -> EventStore:
    return open_store(Settings().database_url)


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(help="Service processes (default: LEDGER_WORKERS).")
    ] = None,
) -> None:
    """Run the HTTP service (lifecycle webhooks, descriptor, admin API) on uvicorn."""
    import uvicorn

    settings = Settings()
    # Create the schema (and, on the embedded default, the master key) once, before
    # the workers start, so they do not race to do it.
    open_store(settings.database_url).close()
    settings.master_keys()
    uvicorn.run(
        "app.service:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers or settings.workers,
        # Access logs would print query strings, and a token may travel as ?jwt=.
        access_log=False,
        log_level="warning",
        proxy_headers=False,
    )


@cli.command()
def migrate() -> None:
    """Create or upgrade the database schema (idempotent)."""
    with _store() as store:
        store.migrate()
        head = store.head()
    console.print(f"schema is current; the log holds {head.position} events")


@cli.command()
def verify(as_json: JsonOption = False) -> None:
    """Recompute the hash chain and name the first event that does not match."""
    with _store() as store:
        report = store.verify()
    if as_json:
        _print_json(dataclasses.asdict(report))
    elif report.ok:
        console.print(f"[green]ok[/green]: {report.events} events, head {report.head}")
    else:
        console.print(
            f"[red]broken[/red] at position {report.first_bad_position}: {report.reason}"
            f" ({report.events} events verify before it)"
        )
    raise typer.Exit(0 if report.ok else 1)


def _describe(event: RecordedEvent) -> str:
    from app.admin import redact_event

    data = redact_event(event)["data"]
    if event.type == "Installed":
        return f"installed at {data.get('baseUrl')}"
    if event.type in ("BaseUrlChanged", "DescriptorUpgraded"):
        return f"{data.get('from')} → {data.get('to')}"
    if event.type == "SecretRotated":
        return "shared secret rotated"
    if event.type == "DetailsChanged":
        return ", ".join(f"{k}={v}" for k, v in data.items())
    return ""


def _how_verified(event: RecordedEvent) -> str:
    meta = event.metadata
    if meta.alg == "RS256":
        return f"RS256 (Atlassian key {meta.kid})"
    if meta.alg == "HS256":
        return "HS256 (tenant's shared secret)"
    return meta.alg or ""


@cli.command()
def history(client_key: str, as_json: JsonOption = False) -> None:
    """A tenant's events: position, time, type, what changed and how the call was verified."""
    from app.admin import redact_event

    with _store() as store:
        events = store.read_stream(stream_id_for(client_key))
    if not events:
        console.print(f"no tenant {client_key!r}")
        raise typer.Exit(1)
    if as_json:
        _print_json({"events": [redact_event(e) for e in events]})
        return
    table = Table(title=f"history of {client_key}")
    for column in (
        "position",
        "version",
        "recorded at",
        "type",
        "what changed",
        "verified by",
        "descriptor",
    ):
        table.add_column(column)
    for e in events:
        table.add_row(
            str(e.position),
            str(e.version),
            format_timestamp(e.recorded_at),
            e.type,
            _describe(e),
            _how_verified(e),
            e.metadata.descriptor_version or "",
        )
    console.print(table)


@cli.command()
def show(
    client_key: str,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="A log position or an RFC 3339 time.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """One tenant folded from its stream, now or as of a position or time."""
    from app.admin import tenant_object
    from projections.tenants import fold

    up_to: int | datetime | None = None
    if as_of:
        up_to = (
            int(as_of) if as_of.isdigit() else datetime.fromisoformat(as_of.replace("Z", "+00:00"))
        )
    with _store() as store:
        row = fold(store.read_stream(stream_id_for(client_key), up_to))
    if row is None:
        console.print(f"no tenant {client_key!r}" + (f" as of {as_of}" if as_of else ""))
        raise typer.Exit(1)
    shown = tenant_object(row)
    if as_json:
        _print_json(shown)
        return
    table = Table(
        title=f"tenant {client_key}" + (f" as of {as_of}" if as_of else ""), show_header=False
    )
    for name, value in shown.items():
        table.add_row(name, "" if value is None else escape(str(value)))
    console.print(table)


@cli.command()
def export(
    after: Annotated[int, typer.Option("--after", help="Start after this position.")] = 0,
) -> None:
    """Every event after a position as JSON lines, secrets redacted."""
    from app.admin import redact_event

    out = sys.stdout
    with _store() as store:
        for event in store.read_all(after_position=after, batch_size=5000):
            out.write(json.dumps(redact_event(event), separators=(",", ":")) + "\n")


@cli.command()
def forget(
    client_key: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Destroy a tenant's data key: its secrets become unreadable, the log still verifies."""
    if not yes:
        typer.confirm(f"Destroy the data key of {client_key}? This cannot be undone.", abort=True)
    with _store() as store:
        destroyed = store.destroy_data_key(stream_id_for(client_key))
    console.print(
        f"data key of {client_key} destroyed" if destroyed else f"no data key for {client_key}"
    )


@cli.command()
def demo(
    url: Annotated[
        str | None,
        typer.Option(
            help="Drive this running service instead of starting one (it must fetch install"
            " keys from this demo: LEDGER_INSTALL_KEYS_URL=http://127.0.0.1:<key-port>)."
        ),
    ] = None,
    key_port: Annotated[int, typer.Option(help="Port of the demo's install-key server.")] = 8765,
) -> None:
    """A simulated Atlassian host drives the service through a tenant's whole life."""
    from app.demo import run_demo

    run_demo(console, url=url, key_port=key_port)


def main() -> None:
    cli()
