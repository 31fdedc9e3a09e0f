"""`ledger`: the command line of the tenant ledger (Typer + Rich).

Every command reads LEDGER_DATABASE_URL (SQLite by default, or PostgreSQL) like the
service does. Read commands (``app.cli.reads``) print as ``app.cli.output`` says:
Rich tables on a terminal, tab-separated lines when piped, the admin API's JSON with
``--json``. Exit codes: 0 ok, 1 not found or a check failed, 2 usage error.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from app.bootstrap import store_for
from app.cli import forge as cli_forge
from app.cli import reads as cli_reads
from app.cli.group import LedgerGroup
from app.cli.keys import forget, rewrap
from app.cli.output import fail, note, plain_help_metavars, print_records, stdout_console
from app.cli.reads import JsonOption, examples
from app.cli.reads import catch_up_read_models as _catch_up  # noqa: F401  (other CLI modules import it here)
from app.cli.stores import existing_store
from app.settings import Settings
from eventstore.schema_status import SchemaStatus
from eventstore.store import EventStore

cli = typer.Typer(
    name="ledger",
    help="The tenant ledger: verified Atlassian Connect lifecycle calls kept as immutable events."
    "\n\nExit codes: 0 ok, 1 not found or a check failed, 2 usage error.",
    no_args_is_help=True,
    add_completion=False,
    # Plain click help: Rich's help panels print "<bool>" beside every flag.
    rich_markup_mode=None,
    cls=LedgerGroup,  # errors in one voice, whole summaries in --help
)
console = stdout_console()
plain_help_metavars()
cli_reads.register(cli)


def _show_version(shown: bool) -> None:
    if shown:
        from app.version import version

        sys.stdout.write(f"ledger {version()}\n")
        raise typer.Exit(0)


@cli.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """The tenant ledger: verified Atlassian Connect lifecycle calls kept as immutable events."""


def _store() -> EventStore:
    return existing_store()


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
    # Every setting is checked before anything is created: the master key first (on the
    # embedded default, generated here). Then the schema once (migrated, or checked
    # when LEDGER_MIGRATE_ON_START is false) before the workers start, so they do not
    # race to do it.
    settings.master_keys()
    from app.bootstrap import service_store
    from app.cli.startup import startup_line
    from projections.backends import storage_for

    with service_store(settings) as store:
        storage_for(store).ensure_ready()
    from app.logs import configure_logging
    from app.serve.supervisor import run_service

    configure_logging(
        settings.log_level
    )  # the runner supervisor's lines, as JSON like the workers'
    note(startup_line(settings, host, port))
    run_service(host, port, workers or settings.workers, settings)


@cli.command(epilog=examples("ledger migrate", "ledger migrate --status"))
def migrate(
    status: Annotated[
        bool,
        typer.Option("--status", help="List the applied and pending steps; change nothing."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Create or upgrade the database schema and the read models' tables (idempotent).

    Needs a role with DDL rights (see the README's roles). Steps run forward only, each once.
    """
    if status:
        # As it is: neither created nor migrated, whatever its schema.
        with store_for(Settings(), migrate=False, create=False) as store:
            _print_migration_status(store.schema_status(), as_json)
        return
    from projections.backends import storage_for

    with store_for(Settings()) as store:
        store.migrate()
        storage_for(store).ensure()
        head = store.head()
    console.print(f"schema is current; the log holds {head.position} events")


def _print_migration_status(found: SchemaStatus, as_json: bool) -> None:
    applied = [{"step": step, "applied_at": at} for step, at in found.applied]
    document = {
        "current": found.current,
        "latest": found.latest,
        "applied": applied,
        "pending": list(found.pending),
    }
    rows = [{"step": s, "state": "applied", "applied_at": at} for s, at in found.applied]
    rows += [{"step": s, "state": "pending", "applied_at": None} for s in found.pending]
    print_records(rows, ("step", "state", "applied_at"), as_json, document=document)
    if as_json:
        return
    verdict = "run `ledger migrate`" if found.pending else "schema is current"
    note(f"{len(found.applied)} applied, {len(found.pending)} pending: {verdict}")


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
        fail(str(error).strip("\"'"), 2)
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
    """A simulated Atlassian host drives the service through tenants' whole lives.

    Without --url it starts a throw-away service and tells the story over eight
    simulated weeks ending now (the service's clock is moved, nothing sleeps), then
    prints every read model; on a terminal the service stays up for the console until
    Ctrl-C. With --url the running service's own clock stamps the events, and the
    Forge steps are skipped (the platform's keys are served only to a service the demo
    starts itself)."""
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

from app.cli.backup import backup  # noqa: E402

cli.command(epilog=examples("ledger backup var/ledger-2026-01-31.db"))(backup)

from app.cli.webhooks import webhooks  # noqa: E402

cli.add_typer(webhooks)

from app.cli import licenses as cli_licenses  # noqa: E402  (licenses check, erasure-due)

cli_licenses.register(cli)


def main() -> None:
    from pydantic import ValidationError

    from app.cli.output import fail
    from app.settings import settings_problem

    try:
        cli()
    except ValidationError as error:  # a bad setting: one line naming it, never a traceback
        try:
            fail(settings_problem(error), 2)
        except typer.Exit as done:
            sys.exit(done.exit_code)
