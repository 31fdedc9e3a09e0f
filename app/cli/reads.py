"""The CLI's read commands: one per read of the admin API, same data path (``app.queries.reads``),
printed by ``app.cli.output`` (table on a terminal, TSV when piped, ``--json``).

Exit codes: 0 ok, 1 not found, 2 usage error (a bad option value).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import typer

from app.cli.errors import may_not
from app.cli.output import fail, note, print_record, print_records, stdout_console
from app.cli.stores import existing_store
from app.ingest.outcome import REFUSAL_REASONS
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
MAX_ROWS = 2**62  # --all where the admin API has no cursor: no limit at all
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


def check_as_of(store: EventStore, up_to: int | datetime | None) -> None:
    """``--as-of`` beyond what the log holds is a usage error, not the present in disguise."""
    if isinstance(up_to, int):
        head = store.head().position
        if up_to > head:
            fail(
                f"--as-of {up_to} is past the log's head (position {head}); the latest is {head}", 2
            )
    elif isinstance(up_to, datetime) and up_to > utcnow():
        fail(f"--as-of {up_to.isoformat()} is in the future; the log ends now", 2)


def parse_since(value: str, now: datetime) -> datetime:
    """An RFC 3339 time, or a duration ago: ``30m``, ``24h``, ``7d``. ValueError otherwise."""
    match = _DURATION.match(value.strip())
    if match:
        try:
            return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
        except OverflowError:  # further back than the calendar goes: no such time
            raise ValueError(f"{value} reaches back before year 1") from None
    return parse_timestamp(value)


AllOption = Annotated[
    bool,
    typer.Option(
        "--all", help="Every page, not only the first --limit rows (--limit: the page size)."
    ),
]


def every_page(
    fetch: Callable[[str | None], dict[str, Any]], key: str, every: bool
) -> dict[str, Any]:
    """The first page of a list, or with ``every`` all of them (``next`` followed to the end)."""
    answer = fetch(None)
    if not every:
        return answer
    rows = list(answer[key])
    while answer.get("next") is not None:
        answer = fetch(answer["next"])
        rows.extend(answer[key])
    return {**answer, key: rows, "next": None}


def say_more(answer: Mapping[str, Any], as_json: bool) -> None:
    """A list that stopped at its limit says how to go on (stderr: never in what a
    script parses; ``--json`` carries ``next`` itself)."""
    if answer.get("next") is not None and not as_json:
        note(f"more: --after {answer['next']}   (or --all for every page)")


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
            "--presumed-gone",
            help="Only tenants presumed gone: silent since a descriptor version older than"
            " the grace, or uninstalling on Forge (see ledger presumed-gone).",
        ),
    ] = False,
    grace_hours: Annotated[
        float, typer.Option(min=0, metavar="HOURS", help="The grace for --presumed-gone.")
    ] = 24.0,
    every: AllOption = False,
    catch_up: CatchUpOption = True,
    as_json: JsonOption = False,
) -> None:
    """List tenants (the tenants read model), ordered by clientKey."""
    with read_models(catch_up) as (_, storage):
        answer = every_page(
            lambda cursor: reads.tenants_answer(
                storage,
                state=state,
                after=cursor or after,
                limit=limit,
                presumed_gone=presumed_gone,
                grace_hours=grace_hours,
            ),
            "tenants",
            every,
        )
    say_more(answer, as_json)
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
    every: AllOption = False,
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
        answer = every_page(
            lambda cursor: reads.presumed_gone_answer(
                storage, grace_hours=grace_hours, after=cursor or after, limit=limit
            ),
            "tenants",
            every,
        )
    say_more(answer, as_json)
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
        check_as_of(store, up_to)
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
        check_as_of(store, up_to)
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
    if not as_json and (stragglers or stdout_console().is_terminal):
        print_records(
            answer["stragglers"],
            TENANT_COLUMNS,
            title=f"stragglers: installed, not on version {answer['latest']}",
        )
        if len(answer["stragglers"]) >= reads.STRAGGLERS_SHOWN:
            note(
                f"more: only the first {reads.STRAGGLERS_SHOWN} stragglers are listed; every one:"
                " ledger tenants --state installed --all | awk -F'\\t'"
                f" 'NR > 1 && $5 != \"{answer['latest']}\"'"
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


REJECTION_COLUMNS = (
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
# On a terminal: the last refusal a row counts too, and an overflow row says what it is.
REJECTION_SHOWN = (*REJECTION_COLUMNS[:4], "last_seen_at", *REJECTION_COLUMNS[4:])
OVERFLOW_SHOWN = "(many: refusals past the window's row budget, identities not kept)"
REASONS_HELP = ", ".join(sorted(REFUSAL_REASONS))


def _since(since: str | None) -> datetime | None:
    try:
        return None if since is None else parse_since(since, utcnow())
    except ValueError:
        raise typer.BadParameter(
            "an RFC 3339 time or a duration like 30m, 24h, 7d", param_hint="'--since'"
        ) from None


def _shown_rejection(row: Mapping[str, Any]) -> dict[str, Any]:
    shown = dict(row)
    if row.get("count", 1) == 1:
        shown.pop("last_seen_at", None)  # the same time as "at"
    if row.get("overflow"):
        shown["client_key"] = OVERFLOW_SHOWN
    return shown


def rejections(
    reason: Annotated[
        str | None,
        typer.Option(metavar="CODE", help=f"Only this reason code, one of: {REASONS_HELP}."),
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
    limit: Annotated[int, typer.Option(min=1, metavar="N", help="At most N rows.")] = 100,
    every: Annotated[bool, typer.Option("--all", help="Every row, however many.")] = False,
    as_json: JsonOption = False,
) -> None:
    """List refused calls, newest first (never a token or a secret: only its SHA-256).

    Identical refusals close in time are one row with their count (and the last one's
    time); an overflow row counts refusals past a window's row budget, without their
    identities. The title on a terminal adds the counts up.
    """
    after = _since(since)
    with _store() as store:
        answer = reads.rejections_answer(
            store, limit=MAX_ROWS if every else limit, reason=reason, since=after,
            client_key=client_key,
        )  # fmt: skip
    rows = answer["rejections"]
    if reason is not None and not rows and reason not in REFUSAL_REASONS:
        fail(f"--reason {reason}: no such reason; reasons are {REASONS_HELP}", 2)
    if len(rows) == limit and not every and not as_json:
        note(f"more: --limit {limit * 10}   (or --all for every row)")
    if as_json or not stdout_console().is_terminal:
        print_records(rows, REJECTION_COLUMNS, as_json, document=answer)
        return
    calls = sum(r.get("count", 1) for r in rows)
    title = f"rejections: {calls} refused call(s) in {len(rows)} row(s)"
    print_records([_shown_rejection(r) for r in rows], REJECTION_SHOWN, title=title)


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
