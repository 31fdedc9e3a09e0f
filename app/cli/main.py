"""`ledger`: the command line of the tenant ledger (Typer + Rich).

Every command reads LEDGER_DATABASE_URL (SQLite by default, or PostgreSQL) like the
service does. Read commands (``app.cli_reads``) print as ``app.cli_output`` says:
Rich tables on a terminal, tab-separated lines when piped, the admin API's JSON with
``--json``. Exit codes: 0 ok, 1 not found or a check failed, 2 usage error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.markup import escape

from app.bootstrap import store_for
from app.cli import forge as cli_forge
from app.cli import reads as cli_reads
from app.cli.keys import forget, rewrap
from app.cli.output import plain_help_metavars, stdout_console
from app.cli.reads import JsonOption, examples
from app.cli.reads import catch_up_read_models as _catch_up  # noqa: F401  (other CLI modules import it here)
from app.settings import Settings
from eventstore.store import EventStore

cli = typer.Typer(
    name="ledger",
    help="The tenant ledger: verified Atlassian Connect lifecycle calls kept as immutable events."
    "\n\nExit codes: 0 ok, 1 not found or a check failed, 2 usage error.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: Rich's help panels print "<bool>" beside every flag.
    rich_markup_mode=None,
)
console = stdout_console()
plain_help_metavars()
cli_reads.register(cli)


def _store() -> EventStore:
    return store_for(Settings())


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")


@cli.command(
    epilog=examples(
        "ledger serve",
        "LEDGER_DATABASE_URL=postgresql://ledger@db/ledger ledger serve --workers 4 --host 0.0.0.0",
    )
)
def serve(
    host: Annotated[
        str, typer.Option(metavar="ADDRESS", help="Interface to listen on.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="TCP port.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Service processes (default: LEDGER_WORKERS).")
    ] = None,
) -> None:
    """Run the HTTP service (lifecycle webhooks, descriptor, admin API) on uvicorn.

    The projection runner runs in a process of its own beside the workers (restarted if
    it dies, stopped with the service); LEDGER_RUN_PROJECTIONS=false runs none."""
    settings = Settings()
    # Create the schema (and, on the embedded default, the master key) once, before
    # the workers start, so they do not race to do it.
    from projections.backends import storage_for

    with store_for(settings) as store:
        storage_for(store).ensure()
    settings.master_keys()
    from app.logs import configure_logging
    from app.serve.supervisor import run_service

    configure_logging(settings.log_level)  # the runner supervisor's lines, as JSON like the workers'
    run_service(host, port, workers or settings.workers, settings)


@cli.command(epilog=examples("ledger migrate"))
def migrate() -> None:
    """Create or upgrade the database schema (idempotent)."""
    with _store() as store:
        store.migrate()
        head = store.head()
    console.print(f"schema is current; the log holds {head.position} events")


@cli.command(epilog=examples("ledger rebuild", "ledger rebuild reimports"))
def rebuild(
    names: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="NAME",
            help="tenants, descriptors, base_urls, reimports, installations, links (default: all).",
        ),
    ] = None,
    as_json: JsonOption = False,
    no_wait: Annotated[
        bool, typer.Option("--no-wait", help="Exit 1 if another rebuild is running.")
    ] = False,
) -> None:
    """Replay the whole log into fresh tables and swap them in atomically.

    The service keeps answering from the old tables meanwhile. A projection is
    rebuilt together with the one that resumes from its rows (tenants with
    descriptors, base_urls with reimports). Killed halfway, run it again: it starts
    clean and never leaves a half-built table in service. One rebuild at a time: a
    second one waits for the first (or, with --no-wait, exits 1).
    """
    from app.cli.rebuild import progress_bar, progress_lines, rebuild_serialised, summary
    from projections.rebuild import with_dependencies

    try:
        chosen = with_dependencies(names or [])
    except KeyError as error:
        console.print(f"[red]{escape(str(error))}[/red]")
        raise typer.Exit(2) from None
    with _store() as store:
        if sys.stdout.isatty() and not as_json:
            with progress_bar(console, chosen) as show:
                report = rebuild_serialised(store, chosen, not no_wait, show)
        else:
            report = rebuild_serialised(store, chosen, not no_wait, progress_lines(as_json))
    if as_json:
        _print_json(summary(report))
    else:
        console.print(
            f"rebuilt {', '.join(report.names)} from {report.events:,} events in {report.seconds:.2f} s"
            f" ({report.events_per_second:,.0f} events/s); swapped in at position {report.position}"
        )


@cli.command(
    epilog=examples("ledger demo", "ledger demo > demo.txt     # prints everything, then returns")
)
def demo(
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="Drive this running service instead of starting one (it must fetch install"
            " keys from this demo: LEDGER_INSTALL_KEYS_URL=http://127.0.0.1:KEY_PORT).",
        ),
    ] = None,
    key_port: Annotated[
        int, typer.Option(metavar="PORT", help="Port of the demo's install-key server.")
    ] = 8765,
) -> None:
    """A simulated Atlassian host drives the service through a tenant's whole life."""
    from app.cli.demo.connect import run_demo

    run_demo(console, url=url, key_port=key_port)


cli.command(epilog=examples("ledger rewrap", "ledger rewrap --json --batch-size 1000"))(rewrap)
cli.command(
    epilog=examples(
        'ledger forget 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --reason "GDPR erasure, ticket 4711"',
        'ledger forget 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --reason "site deleted" --yes',
    )
)(forget)

from app.cli.integrity import register  # noqa: E402  (digest, verify, export)

register(cli)

cli_forge.register(cli)

from app.cli import licenses as cli_licenses  # noqa: E402  (licenses check, erasure-due)

cli_licenses.register(cli)


def main() -> None:
    cli()
