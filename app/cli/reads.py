"""The CLI's read commands: one per read of the admin API, same data path (``app.reads``),
printed by ``app.cli_output`` (table on a terminal, TSV when piped, ``--json``).

Exit codes: 0 ok, 1 not found, 2 usage error (a bad option value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import typer

from app.cli.errors import may_not
from app.cli.output import fail, note, print_record, print_records
from app.cli.stores import existing_store
from app.queries import reads
from app.queries.evidence import HISTORY_COLUMNS, evidence_rows
from eventstore.clock import parse_timestamp, utcnow
from eventstore.errors import StoreFault
from eventstore.store import EventStore
from projections.storage.base import ProjectionStorage

JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the admin API's JSON answer (for scripts) instead of a table."
    ),
]
AsOfOption = Annotated[
    str | None,
    typer.Option(
        "--as-of",
        metavar="POSITION|TIME",
        help="Show the tenant as it stood at this log position or RFC 3339 time.",
    ),
]
ClientKeyArgument = Annotated[
    str, typer.Argument(metavar="CLIENT_KEY", help="The tenant's clientKey.", show_default=False)
]
CatchUpOption = Annotated[
    bool,
    typer.Option(
        "--catch-up/--no-catch-up",
        help="Fold events the read models have not seen yet before reading them.",
    ),
]
TENANT_COLUMNS = (
    "client_key",
    "base_url",
    "state",
    "enabled",
    "descriptor_version",
    "last_seen_at",
    "version",
)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)([smhd])$")  # ASCII digits: \d takes "٣"
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def examples(*lines: str) -> str:
    # "\b" keeps click from re-wrapping the example lines into one paragraph.
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


@contextmanager
def _store() -> Iterator[EventStore]:
    """The store, for one command (its errors: ``app.cli.errors``)."""
    with existing_store() as store:
        yield store


def catch_up_read_models(store: EventStore, storage: ProjectionStorage) -> None:
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
    except StoreFault as error:
        if not may_not(error):
            raise
        # A role that may only read (an auditor's): the read models are shown as they
        # are, and said to be behind when they are.
        behind = store.head().position - min(storage.checkpoints().values(), default=0)
        if behind > 0:
            note(
                f"warning: the read models are {behind} events behind the log; this role may only read"
            )
        return
    finally:
        leadership.release()
    if not wait_for_position(storage, store.head().position, 5.0):
        note("warning: the read models are still catching up with the log")


@contextmanager
def read_models(catch_up: bool = True) -> Iterator[tuple[EventStore, ProjectionStorage]]:
    from projections.backends import storage_for

    with _store() as store:
        storage = storage_for(store)
        storage.ensure_ready()
        if catch_up:
            catch_up_read_models(store, storage)
        yield store, storage


def _as_of(value: str | None) -> int | datetime | None:
    """The admin API's rule for as_of; a value it refuses is a usage error (exit 2)."""
    try:
        return reads.parse_as_of(value)
    except reads.BadParameter as error:
        raise typer.BadParameter(error.detail, param_hint="'--as-of'") from None


def parse_since(value: str, now: datetime) -> datetime:
    """An RFC 3339 time, or a duration ago: ``30m``, ``24h``, ``7d``. ValueError otherwise."""
    match = _DURATION.match(value.strip())
    if match:
        try:
            return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        except OverflowError:  # further back than the calendar goes: no such time
            raise ValueError(f"{value} reaches back before year 1") from None
    return parse_timestamp(value)


def tenants(
    state: Annotated[
        Literal["installed", "uninstalled"] | None,
        typer.Option(help="Only tenants in this state (default: every state)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N tenants.")] = 1000,
    after: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_KEY", help="Start after this clientKey (the next page)."),
    ] = None,
    presumed_gone: Annotated[
        bool,
        typer.Option(
            "--presumed-gone/--all",
            help="Only tenants presumed gone: silent since a descriptor version older than"
            " the grace, or uninstalling on Forge (see ledger presumed-gone).",
        ),
    ] = False,
    grace_hours: Annotated[
        float, typer.Option(min=0, metavar="HOURS", help="The grace for --presumed-gone.")
    ] = 24.0,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List tenants (the tenants read model), ordered by clientKey."""
    with read_models(catch_up) as (_, storage):
        answer = reads.tenants_answer(
            storage,
            state=state,
            after=after,
            limit=limit,
            presumed_gone=presumed_gone,
            grace_hours=grace_hours,
        )
    title = "presumed gone" if presumed_gone else "tenants"
    print_records(answer["tenants"], TENANT_COLUMNS, as_json, document=answer, title=title)


def presumed_gone(
    grace_hours: Annotated[
        float,
        typer.Option(
            min=0,
            metavar="HOURS",
            help="How long after a descriptor version is first seen a silent tenant counts"
            " as gone.",
        ),
    ] = 24.0,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N tenants.")] = 1000,
    after: Annotated[
        str | None,
        typer.Option(metavar="CLIENT_KEY", help="Start after this clientKey (the next page)."),
    ] = None,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List installed tenants presumed gone, and why (silent / uninstalling).

    silent: no call since a descriptor version appeared more than the grace ago
    (Atlassian calls every site within about 24 h of a new version, so such a site
    was probably deleted without an uninstall reaching us). uninstalling: the
    tenant's Forge installation sent pre-uninstall (Forge sends no uninstall). A
    presumption for a person to check, not a state change.
    """
    with read_models(catch_up) as (_, storage):
        answer = reads.presumed_gone_answer(
            storage, grace_hours=grace_hours, after=after, limit=limit
        )
    rows = [dict(t, presumed=",".join(t["presumed"])) for t in answer["tenants"]]
    print_records(
        rows,
        ("client_key", "presumed", *TENANT_COLUMNS[1:]),
        as_json,
        document=answer,
        title="presumed gone",
    )


def show(
    client_key: ClientKeyArgument, as_of: AsOfOption = None, as_json: JsonOption = False
) -> None:
    """Show one tenant, folded from its events (now, or as of a position or time)."""
    up_to = _as_of(as_of)
    with _store() as store:
        try:
            answer = reads.tenant_answer(store, client_key, up_to)
        except reads.NotFound as error:
            fail(f"{error.detail}: {client_key}" + (f" (as of {as_of})" if as_of else ""))
    title = f"tenant {client_key}" + (f" as of {as_of}" if as_of else "")
    print_record(answer, as_json, title=title)


def history(
    client_key: ClientKeyArgument, as_of: AsOfOption = None, as_json: JsonOption = False
) -> None:
    """Show a tenant's events with their evidence, oldest first.

    Per event: position, stream version, type, time, how the call was verified
    (RS256 and the Atlassian key id, or HS256 and which stored shared secret), the
    call (request) id, remote address, descriptor version and what changed. Secrets
    only ever appear as "(sealed)".
    """
    up_to = _as_of(as_of)
    with _store() as store:
        try:
            answer = reads.tenant_events_answer(store, client_key, up_to)
        except reads.NotFound as error:
            fail(f"{error.detail}: {client_key}" + (f" (as of {as_of})" if as_of else ""))
    rows = evidence_rows(answer["events"])
    title = f"history of {client_key}" + (f" as of {as_of}" if as_of else "")
    print_records(rows, HISTORY_COLUMNS, as_json, document=answer, title=title)


def descriptors(
    stragglers: Annotated[
        bool,
        typer.Option(
            "--stragglers/--versions",
            help="List the installed tenants not on the latest version instead of the versions.",
        ),
    ] = False,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """Show descriptor versions: when each was first seen, tenants on it, the latest.

    On a terminal the stragglers (installed tenants not on the latest version) are
    listed below the versions; piped, one table only: the versions, or with
    --stragglers the stragglers (the first 100).
    """
    with read_models(catch_up) as (_, storage):
        answer = reads.descriptors_answer(storage)
    versions: list[dict[str, Any]] = [
        dict(v, latest=v["version"] == answer["latest"]) for v in answer["versions"]
    ]
    if as_json or not stragglers:
        print_records(
            versions,
            ("version", "first_seen_at", "tenants", "latest"),
            as_json,
            document=answer,
            title=f"descriptor versions (latest: {answer['latest'] or 'none seen yet'})",
        )
    from app.cli.output import stdout_console

    if not as_json and (stragglers or stdout_console().is_terminal):
        print_records(
            answer["stragglers"],
            TENANT_COLUMNS,
            title=f"stragglers: installed, not on version {answer['latest']}",
        )


def reimports(catch_up: CatchUpOption = True, as_json: JsonOption = False) -> None:
    """List reimport links: a new clientKey installed at a base URL another one held.

    A link is evidence for a person, never an automatic migration. kind is
    "reimport" (the previous tenant still held that URL) or "url_reused" (it had
    moved elsewhere first).
    """
    with read_models(catch_up) as (_, storage):
        answer = reads.reimports_answer(storage)
    columns = ("base_url", "previous_client_key", "client_key", "detected_at", "kind")
    print_records(answer["links"], columns, as_json, document=answer, title="reimport links")


def rejections(
    reason: Annotated[
        str | None,
        typer.Option(metavar="CODE", help="Only this reason code, e.g. bad_signature."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            metavar="TIME|DURATION",
            help="Only refusals at or after an RFC 3339 time, or this long ago (30m, 24h, 7d).",
        ),
    ] = None,
    client_key: Annotated[
        str | None,
        typer.Option(
            "--client-key", metavar="CLIENT_KEY", help="Only calls that claimed this clientKey."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N refusals.")] = 100,
    as_json: JsonOption = False,
) -> None:
    """List refused calls, newest first (never a token or a secret: only its SHA-256)."""
    try:
        after = None if since is None else parse_since(since, utcnow())
    except ValueError:
        raise typer.BadParameter(
            "an RFC 3339 time or a duration like 30m, 24h, 7d", param_hint="'--since'"
        ) from None
    with _store() as store:
        answer = reads.rejections_answer(
            store, limit=limit, reason=reason, since=after, client_key=client_key
        )
    columns = (
        "at",
        "status",
        "reason",
        "count",
        "path",
        "client_key",
        "base_url",
        "remote_addr",
        "token_sha256",
        "detail",
    )
    print_records(answer["rejections"], columns, as_json, document=answer, title="rejections")


COMMANDS: dict[str, tuple[Callable[..., None], str]] = {
    "tenants": (
        tenants,
        examples(
            "ledger tenants --state installed",
            "ledger tenants | cut -f1,2          # client keys and base URLs, tab-separated",
            "ledger tenants --json | jq '.tenants[].client_key'",
        ),
    ),
    "show": (
        show,
        examples(
            "ledger show 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1",
            "ledger show 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --as-of 2026-01-31T00:00:00Z",
        ),
    ),
    "history": (
        history,
        examples(
            "ledger history 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1",
            "ledger history 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1 --as-of 120 | grep SecretRotated",
        ),
    ),
    "descriptors": (
        descriptors,
        examples("ledger descriptors", "ledger descriptors --stragglers | cut -f1"),
    ),
    "reimports": (reimports, examples("ledger reimports", "ledger reimports --json")),
    "presumed-gone": (
        presumed_gone,
        examples("ledger presumed-gone", "ledger presumed-gone --grace-hours 72 | wc -l"),
    ),
    "rejections": (
        rejections,
        examples(
            "ledger rejections --since 24h",
            "ledger rejections --reason bad_signature --client-key 2596cc1a-6a04-3c4e-b8e0-f3a6c0d9e5b1",
            "ledger rejections --json --limit 1000",
        ),
    ),
}


def register(app: typer.Typer) -> None:
    """Add the read commands to the ``ledger`` command line."""
    for name, (function, epilog) in COMMANDS.items():
        app.command(name, epilog=epilog)(function)
