"""`ledger`: the command line of the tenant ledger (Typer + Rich).

Every command reads LEDGER_DATABASE_URL (SQLite by default, or PostgreSQL) like the
service does. Read commands print tables for people and JSON with ``--json``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app import cli_forge
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
    from projections.storage import storage_for

    with open_store(settings.database_url) as store:
        storage_for(store).ensure()
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


def _catch_up(store: EventStore, storage: Any) -> None:
    """Bring the read models up to the log's head before reading them.

    Folds here only when no service's runner holds the leadership (never two
    writers); otherwise waits a little for that runner.
    """
    from projections.runner import Leadership, ProjectionRunner, wait_for_position

    leadership = Leadership(store)
    try:
        if leadership.acquire():
            ProjectionRunner(store, storage).run_once()
            return
    finally:
        leadership.release()
    head = store.head().position
    if not wait_for_position(storage, head, 5.0):
        console.print("[yellow]the read models are still catching up with the log[/yellow]")


@cli.command()
def tenants(
    state: Annotated[str | None, typer.Option(help="installed or uninstalled")] = None,
    presumed_gone: Annotated[
        bool,
        typer.Option(
            "--presumed-gone", help="Installed tenants silent since a version older than the grace."
        ),
    ] = False,
    grace_hours: Annotated[float, typer.Option(help="The grace for --presumed-gone.")] = 24.0,
    limit: Annotated[int, typer.Option(help="At most this many rows.")] = 1000,
    after: Annotated[str | None, typer.Option(help="Start after this client key.")] = None,
    catch_up: Annotated[
        bool,
        typer.Option(
            "--catch-up/--no-catch-up", help="Fold new events into the read models first."
        ),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Tenants from the tenants read model."""
    from datetime import timedelta

    from app.admin import tenant_object
    from eventstore.store import utcnow
    from projections.presumed_gone import silence_threshold
    from projections.storage import storage_for

    with _store() as store:
        storage = storage_for(store)
        storage.ensure()
        if catch_up:
            _catch_up(store, storage)
        if presumed_gone:
            threshold = silence_threshold(
                storage.load_rows("descriptors"), utcnow(), timedelta(hours=grace_hours)
            )
            rows = (
                []
                if threshold is None
                else storage.list_tenants(
                    state="installed", seen_before=threshold, after=after, limit=limit
                )
            )
        else:
            rows = storage.list_tenants(state=state, after=after, limit=limit)
    shown = [tenant_object(r) for r in rows]
    if as_json:
        _print_json({"tenants": shown})
        return
    columns = (
        "client_key",
        "base_url",
        "state",
        "enabled",
        "descriptor_version",
        "last_seen_at",
        "version",
    )
    table = Table(title="presumed gone" if presumed_gone else "tenants")
    for column in columns:
        table.add_column(column)
    for tenant in shown:
        table.add_row(*(escape(str(tenant[c])) for c in columns))
    console.print(table)


@cli.command()
def rebuild(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="tenants, descriptors, base_urls, reimports (default: all)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Replay the whole log into fresh tables and swap them in atomically.

    The service keeps answering from the old tables meanwhile. A projection is
    rebuilt together with the one that resumes from its rows (tenants with
    descriptors, base_urls with reimports). Killed halfway, run it again: it starts
    clean and never leaves a half-built table in service.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from projections.rebuild import rebuild as run_rebuild
    from projections.rebuild import with_dependencies

    try:
        chosen = with_dependencies(names or [])
    except KeyError as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(2) from None
    started = time.monotonic()
    with _store() as store:
        if sys.stdout.isatty() and not as_json:
            with Progress(
                TextColumn("rebuilding " + ", ".join(chosen)),
                BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
                TextColumn("{task.fields[rate]:,.0f} events/s"),
                TimeRemainingColumn(),
                console=console,
            ) as bar:
                task = bar.add_task("rebuild", total=None, rate=0.0)

                def show(position: int, head: int) -> None:
                    rate = position / max(time.monotonic() - started, 1e-6)
                    bar.update(task, completed=position, total=max(head, position), rate=rate)

                report = run_rebuild(store, chosen, progress=show)
        else:
            last_print = [0.0]

            def plain(position: int, head: int) -> None:
                now = time.monotonic()
                if now - last_print[0] >= 1.0 and not as_json:
                    last_print[0] = now
                    print(f"rebuild: {position}/{head} events", flush=True)

            report = run_rebuild(store, chosen, progress=plain)
    summary = {
        "projections": list(report.names),
        "events": report.events,
        "position": report.position,
        "rows": report.rows,
        "seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second),
    }
    if as_json:
        _print_json(summary)
    else:
        console.print(
            f"rebuilt {', '.join(report.names)} from {report.events:,} events in {report.seconds:.2f} s"
            f" ({report.events_per_second:,.0f} events/s); swapped in at position {report.position}"
        )


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


cli_forge.register(cli)


def main() -> None:
    cli()
