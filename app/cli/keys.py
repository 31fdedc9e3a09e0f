"""`ledger rewrap` and `ledger forget`: the commands on data keys (SPEC §5, §7).

`ledger rewrap` re-wraps every data key under the current master key.

Rotating the master key: put the new key first in ``LEDGER_MASTER_KEY`` (keeping
the old one after it), run ``ledger rewrap`` until it reports nothing unwrappable,
then drop the old key. Safe while the service runs.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from app.cli.forget import (
    AlreadyForgotten,
    KeptChanging,
    NeverHeld,
    forget_tenant,
    host_name,
    operator_name,
)
from app.cli.output import fail
from app.cli.stores import existing_store
from app.settings import Settings
from eventstore.clock import format_timestamp
from eventstore.crypto import MasterKeys, RewrapReport, rewrap_data_keys
from eventstore.events import client_key_of
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.model import TenantRow
from projections.tenants import forgotten_by

console = Console()
_SHOWN_UNWRAPPABLE = 20  # on a terminal; --json lists every one


def _master_keys(settings: Settings) -> MasterKeys:
    # A missing or unreadable key is said by the CLI's one error path (app.cli.errors).
    return settings.master_keys()


def _count(store: EventStore, batch_size: int) -> int:
    total, after = 0, ""
    while batch := store.list_data_keys(after, batch_size):
        total += len(batch)
        after = batch[-1][0]
    return total


def _with_bar(store: EventStore, master: MasterKeys, batch_size: int) -> RewrapReport:
    total = _count(store, batch_size)
    with Progress(
        TextColumn(f"rewrapping data keys under master key {master.current_key_id}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("rewrap", total=total)
        return rewrap_data_keys(
            store,
            master,
            batch_size,
            # Keys created while it runs are wrapped by the current key already.
            progress=lambda report: bar.update(
                task, completed=report.seen, total=max(total, report.seen)
            ),
        )


def summary(report: RewrapReport) -> dict[str, object]:
    return {
        "current_key_id": report.current_key_id,
        "rewrapped": report.rewrapped,
        "already_current": report.current,
        "unwrappable": len(report.unwrappable),
        "forgotten_meanwhile": report.forgotten,
        "still_changing": report.changing,
        "unwrappable_keys": [
            {"client_key": client_key_of(u.stream_id), "key_id": u.key_id, "reason": u.reason}
            for u in report.unwrappable
        ],
    }


def _print_summary(report: RewrapReport) -> None:
    line = (
        f"rewrap: {report.rewrapped} rewrapped, {report.current} already current,"
        f" {len(report.unwrappable)} unwrappable (current master key {report.current_key_id})"
    )
    if report.forgotten:
        line += f"; {report.forgotten} forgotten meanwhile"
    if report.changing:
        line += f"; {report.changing} kept changing, run it again"
    console.print(line, soft_wrap=True, highlight=False)
    for item in report.unwrappable[:_SHOWN_UNWRAPPABLE]:
        by = f"master key {item.key_id}" if item.key_id else "an unknown format"
        console.print(
            f"  {escape(client_key_of(item.stream_id))}: wrapped by {by}: {escape(item.reason)}",
            soft_wrap=True,
            highlight=False,
        )
    if len(report.unwrappable) > _SHOWN_UNWRAPPABLE:
        console.print(f"  … and {len(report.unwrappable) - _SHOWN_UNWRAPPABLE} more (see --json)")


def rewrap(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts instead of a summary.")
    ] = False,
    batch_size: Annotated[
        int, typer.Option(min=1, max=10_000, metavar="N", help="Data keys read per batch.")
    ] = 500,
) -> None:
    """Re-wrap every data key under the current (first) master key, so an old one can retire.

    Idempotent, safe while the service runs. Exits 1 if some key unwraps with no configured key.
    """
    settings = Settings()
    with existing_store(settings) as store:
        # After the store is found: the embedded default would generate a key.
        master = _master_keys(settings)
        if sys.stdout.isatty() and not as_json:
            report = _with_bar(store, master, batch_size)
        else:
            report = rewrap_data_keys(store, master, batch_size)
    if as_json:
        sys.stdout.write(json.dumps(summary(report), indent=2) + "\n")
    else:
        _print_summary(report)
    raise typer.Exit(0 if report.ok else 1)


def at_a_terminal() -> bool:
    return sys.stdin.isatty()


def _confirmed(client_key: str, yes: bool) -> None:
    """--yes, or a person at a terminal who says yes; a script without --yes is refused."""
    if yes:
        return
    if not at_a_terminal():
        fail("forget destroys a data key for good: pass --yes to confirm it", code=2)
    question = f"Destroy the data key of {client_key}? Its secrets become unreadable for good"
    if not typer.confirm(question, default=False):
        fail("nothing was forgotten", code=1)


def _when_by(row_or_event: TenantRow | RecordedEvent) -> str:
    if isinstance(row_or_event, TenantRow):
        at, by = row_or_event.forgotten_at, row_or_event.forgotten_by
    else:
        meta = row_or_event.metadata
        at, by = row_or_event.recorded_at, forgotten_by(meta.operator, meta.host)
    return f"{format_timestamp(at) if at else '?'} by {by}"


def forget(
    client_key: Annotated[
        str, typer.Argument(metavar="CLIENT_KEY", help="The tenant whose data key to destroy.")
    ],
    reason: Annotated[
        str, typer.Option("--reason", metavar="TEXT", help="Why (recorded in the log).")
    ],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Destroy a tenant's data key: its secrets become unreadable, the log still verifies.

    The key is overwritten and deleted, and the store's own copies are scrubbed (SQLite:
    secure_delete and a WAL checkpoint; PostgreSQL: the table rewritten); then a
    TenantForgotten event records the reason, the OS user and the host. Backups and WAL
    archives keep what they held (see the README). Exits 1 for a clientKey the ledger
    never held; forgetting again appends nothing.
    """
    if not reason.strip():
        fail("--reason must say why (it is recorded in the log)", code=2)
    _confirmed(client_key, yes)
    with existing_store() as store:
        outcome = forget_tenant(store, client_key, reason, operator_name(), host_name())
    if isinstance(outcome, NeverHeld):
        fail(f"the ledger never held clientKey {client_key}; nothing was changed")
    if isinstance(outcome, KeptChanging):
        fail(f"calls for {client_key} kept arriving; its key is destroyed, run it again")
    if isinstance(outcome, AlreadyForgotten):
        line = f"{client_key} was already forgotten ({_when_by(outcome.row)}); nothing appended"
    else:
        gone = "data key destroyed" if outcome.had_key else "no data key was left"
        line = (
            f"{client_key} forgotten: {gone}; TenantForgotten at position"
            f" {outcome.event.position} ({_when_by(outcome.event)})"
        )
    console.print(line, soft_wrap=True, highlight=False, markup=False)
    if outcome.copies_remain:
        fail(f"the store's files may still hold the old key bytes: {outcome.copies_remain}")
