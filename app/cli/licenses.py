"""`ledger licenses check [CLIENT_KEY]` (SPEC §11) and `ledger erasure-due` (SPEC §6)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from app.cli.output import fail, note, print_record, print_records
from app.cli.reads import CatchUpOption, JsonOption, examples, read_models
from app.queries import reads
from app.settings import Settings

licenses = typer.Typer(
    name="licenses",
    help="The ledger's own license and presence checks of Connect tenants (SPEC §11).",
    no_args_is_help=True,
    rich_markup_mode=None,
    epilog=examples("ledger licenses check", "ledger licenses check CLIENT_KEY --json"),
)

ERASURE_COLUMNS = (
    "client_key",
    "reason",
    "gone_since",
    "due_at",
    "evidence_stream",
    "evidence_position",
    "base_url",
)


@licenses.command(
    "check",
    epilog=examples(
        "ledger licenses check",
        "ledger licenses check 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --json",
    ),
)
def check(
    client_key: Annotated[
        str | None,
        typer.Argument(
            metavar="[CLIENT_KEY]", help="Only this tenant (default: every installed one)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run one round of license checks now.

    Asks each installed tenant's site for the app's license, signed with the tenant's
    secret, and records what changed (LicenseChanged, or SiteRefused for 401/403/404).
    A site that cannot be reached is counted and left for the next round. Exit 1 when
    the named tenant could not be asked (unknown, not installed, no secret)."""
    from app.licenses.check import run_round
    from eventstore.crypto import KeyRing

    settings = Settings()
    with read_models(catch_up=client_key is None) as (store, _):
        keyring = KeyRing(store, settings.master_keys())
        report = asyncio.run(
            run_round(
                settings, store, keyring, client_keys=None if client_key is None else [client_key]
            )
        )
    answer = report.as_dict()
    shown: dict[str, Any] = {k: v for k, v in answer.items() if k != "reasons"}
    shown["reasons"] = ", ".join(f"{k} {v}" for k, v in answer["reasons"].items()) or "-"
    print_record(shown, as_json, document=answer, title="license check")
    if client_key is not None and report.counts["skipped"]:
        fail("the tenant was not asked: " + ", ".join(report.reasons))


def erasure_due(
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N tenants.")] = 1000,
    after: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_KEY", help="Start after this clientKey (the next page)."),
    ] = None,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List tenants whose data is due for erasure, with the evidence.

    Due: uninstalled, refused by their site, or uninstalling on Forge for longer than
    LEDGER_ERASURE_AFTER_DAYS, and not forgotten; each with the date it became due and
    the evidence (stream and position). `ledger forget CLIENT_KEY --reason ...` erases
    one and takes it off the list; a tenant that comes back leaves it by itself."""
    after_days = Settings().erasure_after_days
    with read_models(catch_up) as (store, storage):
        answer = reads.erasure_due_answer(store, storage, after_days, after=after, limit=limit)
    if after_days is None:  # said once the store is found (a missing store is the news)
        note("LEDGER_ERASURE_AFTER_DAYS is not set: nothing is ever due")
    rows = [
        dict(
            t,
            evidence_stream=t["evidence"]["stream_id"],
            evidence_position=t["evidence"]["position"],
        )
        for t in answer["tenants"]
    ]
    print_records(rows, ERASURE_COLUMNS, as_json, document=answer, title="erasure due")


def register(cli: typer.Typer) -> None:
    cli.add_typer(licenses)
    cli.command(
        "erasure-due",
        epilog=examples("ledger erasure-due", "ledger erasure-due --json"),
    )(erasure_due)
