"""Whole lists, totals and small reads that the console (and any other reader) shares.

The console's pages show one page of a list; its downloads stream every row of the same
query. Both come from here, so a download can never disagree with the page it was
asked from. Everything is read in bounded batches (keyset where the read model has a
key, an offset for the rejection log, which has none to show), never all at once.
Secrets never appear: rows are read models and the rejection log (which never held
one), and events go through ``reads.redact_event``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.queries import reads
from eventstore.clock import utcnow
from eventstore.events import installation_stream_id, stream_id_for
from eventstore.ids import installation_ari
from eventstore.rejections import Rejection
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.installations import InstallationRow
from projections.model import INSTALLED, TenantRow
from projections.presumed_gone import silence_threshold, uninstalling
from projections.storage.base import ProjectionStorage

BATCH = 1000
# Refused calls summed for a total: the rejection log is bounded (SPEC §4), but a total
# over a flood's worth of rows would cost a page view too much; past this it says "at least".
TOTAL_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class RejectionFilter:
    reason: str | None = None
    since: datetime | None = None
    client_key: str | None = None


def all_tenants(
    storage: ProjectionStorage, state: str | None = None, search: str | None = None
) -> Iterator[TenantRow]:
    after: str | None = None
    while True:
        rows = storage.list_tenants(state=state, after=after, limit=BATCH, search=search)
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].client_key


def all_installations(
    storage: ProjectionStorage, state: str | None = None
) -> Iterator[InstallationRow]:
    after: str | None = None
    while True:
        rows = storage.list_installations(state=state, after=after, limit=BATCH)
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].installation_id


def all_presumed_gone(
    storage: ProjectionStorage, grace_hours: float
) -> Iterator[tuple[TenantRow, list[str]]]:
    after: str | None = None
    now = utcnow()  # one "now" for the whole download
    while True:
        rows = reads.presumed_gone_page(storage, grace_hours, after, BATCH, now=now)
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1][0].client_key


def rejections_page(
    store: EventStore, where: RejectionFilter, offset: int, limit: int
) -> tuple[list[Rejection], bool]:
    """One page of refused calls, newest first, and whether another page follows."""
    rows = store.list_rejections(
        limit + 1,
        reason=where.reason,
        since=where.since,
        client_key=where.client_key,
        offset=offset,
    )
    return rows[:limit], len(rows) > limit


def all_rejections(store: EventStore, where: RejectionFilter) -> Iterator[Rejection]:
    offset = 0
    while True:
        rows, more = rejections_page(store, where, offset, BATCH)
        yield from rows
        if not more:
            return
        offset += len(rows)


@dataclass(frozen=True, slots=True)
class RefusalTotals:
    rows: int  # rows of the rejection log
    calls: int  # refused calls they stand for (identical refusals share a row)
    overflow: int  # refused calls counted on overflow rows (no claimed identity)
    complete: bool  # False: more than TOTAL_ROWS rows matched; the figures are "at least"


def refusal_totals(store: EventStore, where: RejectionFilter) -> RefusalTotals:
    rows = calls = overflow = 0
    for row in all_rejections(store, where):
        if rows == TOTAL_ROWS:
            return RefusalTotals(rows, calls, overflow, False)
        rows += 1
        calls += row.count
        overflow += row.count if row.overflow else 0
    return RefusalTotals(rows, calls, overflow, True)


def refusals_claiming(
    store: EventStore, claimed: list[str], limit: int
) -> tuple[list[Rejection], RefusalTotals]:
    """The refused calls that claimed one of these identities (a clientKey, or an
    installation as a UUID and as an ARI), newest first, with their totals."""
    rows: list[Rejection] = []
    rows_n = calls = 0
    complete = True
    for key in claimed:
        where = RejectionFilter(client_key=key)
        rows += rejections_page(store, where, 0, limit)[0]
        totals = refusal_totals(store, where)
        rows_n, calls = rows_n + totals.rows, calls + totals.calls
        complete = complete and totals.complete
    rows.sort(key=lambda r: r.last_seen_at or r.at, reverse=True)
    return rows[:limit], RefusalTotals(rows_n, calls, 0, complete)


def installation_claims(installation_id: str) -> list[str]:
    """How a refused Forge call may have named an installation: UUID or ARI."""
    return [installation_id, installation_ari(installation_id)]


def presumed_reasons(
    storage: ProjectionStorage,
    tenant: TenantRow,
    installations: list[InstallationRow],
    grace_hours: float = 24,
    now: datetime | None = None,
) -> tuple[list[str], datetime | None]:
    """Why this one tenant is presumed gone (the presumed-gone page's rules), and the
    silence threshold: ``silent`` and/or ``uninstalling``; empty when it is not."""
    threshold = silence_threshold(
        reads.descriptor_rows(storage), now or utcnow(), timedelta(hours=grace_hours)
    )
    reasons: list[str] = []
    if tenant.state == INSTALLED and threshold is not None and tenant.last_seen_at < threshold:
        reasons.append("silent")
    if uninstalling([tenant], installations):
        reasons.append("uninstalling")
    return reasons, threshold


def latest_events(store: EventStore, before: int | None, limit: int) -> list[RecordedEvent]:
    """Up to ``limit`` events just before position ``before`` (the head when None),
    newest first: the feed of the latest events across the log."""
    end = store.head().position + 1 if before is None else before
    found: list[RecordedEvent] = []
    start = max(end - 1 - limit, 0)
    while True:  # positions may have gaps: look further back until full
        found = list(_between(store, start, end))[-limit:]
        if start == 0 or len(found) >= limit:
            return found[::-1]
        start = max(start - limit * 4, 0)


def _between(store: EventStore, after: int, before: int) -> Iterator[RecordedEvent]:
    for event in store.read_all(after, batch_size=min(max(before - after, 1), BATCH)):
        if event.position >= before:
            return
        yield event


def all_events(store: EventStore, before: int | None) -> Iterator[RecordedEvent]:
    """Every event before position ``before`` (all when None), oldest first."""
    for event in store.read_all(0, batch_size=BATCH):
        if before is not None and event.position >= before:
            return
        yield event


def stream_link(stream_id: str) -> tuple[str, str] | None:
    """A stream as (kind, identity): ``("tenant", clientKey)`` or
    ``("installation", uuid)``; None for a stream of another kind."""
    kind, _, identity = stream_id.partition(":")
    if kind == "tenant" and stream_id_for(identity) == stream_id:
        return "tenant", identity
    if kind == "installation" and installation_stream_id(identity) == stream_id:
        return "installation", identity
    return None
