"""The console's list pages beyond the first ones (``pages``): reimports, links, the
Connect → Forge migration, an installation, the latest events, the rejection log with
its filters, and what each list downloads (``Listing``: the page's own query, every
row, as the admin API's objects).

Plain functions from the store and the read models to a template context; they run
in a worker thread (blocking I/O) and raise ``HTTPException`` for "not found".
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import HTTPException
from msgspec.structs import replace

from app.http.console import adoption, timeline
from app.http.console.burn_down_svg import burn_down_chart
from app.http.console.svg import Column, stacked_columns
from app.queries import lists, reads
from app.queries.burn_down import CONNECT_END_OF_SUPPORT, BurnDownSeries
from app.queries.evidence import describe_change
from eventstore.clock import format_timestamp, utcnow
from eventstore.events import installation_stream_id
from eventstore.ids import installation_ari
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.installations import client_keys_at, fold_installation
from projections.migration import migration_report
from projections.model import ReimportRow
from projections.storage.base import ProjectionStorage

PAGE_SIZE = 50
REJECTIONS_CHARTED = 2000


@dataclass(frozen=True, slots=True)
class Listing:
    """What a download holds: a file name, its columns, and every row (lazily)."""

    name: str
    columns: tuple[str, ...]
    rows: Iterable[dict[str, Any]]


def _offset_page(rows: list[Any], offset: int) -> tuple[list[Any], int | None]:
    page = rows[offset : offset + PAGE_SIZE]
    return page, offset + PAGE_SIZE if len(rows) > offset + PAGE_SIZE else None


# ------------------------------------------------------------------- reimports


@dataclass(frozen=True, slots=True)
class ReimportQuery:
    kind: str | None = None
    client_key: str | None = None


def _reimports(storage: ProjectionStorage, query: ReimportQuery) -> list[ReimportRow]:
    return [
        r
        for r in reads.reimport_rows(storage)
        if (query.kind is None or r.kind == query.kind)
        and (query.client_key is None or query.client_key in (r.client_key, r.previous_client_key))
    ]


def reimports_page(storage: ProjectionStorage, query: ReimportQuery, offset: int) -> dict[str, Any]:
    rows = _reimports(storage, query)
    page, following = _offset_page(rows, offset)
    return {"links": page, "query": query, "total": len(rows), "offset": offset, "next": following}


def reimport_object(row: ReimportRow) -> dict[str, Any]:
    return {
        "base_url": row.base_url,
        "previous_client_key": row.previous_client_key,
        "client_key": row.client_key,
        "detected_at": format_timestamp(row.detected_at),
        "kind": row.kind,
    }


REIMPORT_COLUMNS = ("base_url", "previous_client_key", "client_key", "detected_at", "kind")


def reimports_listing(storage: ProjectionStorage, query: ReimportQuery) -> Listing:
    return Listing(
        "reimports", REIMPORT_COLUMNS, (reimport_object(r) for r in _reimports(storage, query))
    )


# ------------------------------------------------------------------- links


@dataclass(frozen=True, slots=True)
class LinkQuery:
    kind: str | None = None
    client_key: str | None = None
    installation_id: str | None = None


LINK_COLUMNS = (
    "kind",
    "client_key",
    "installation_id",
    "installation_ari",
    "previous_installation_id",
    "previous_installation_ari",
    "evidence_stream",
    "evidence_position",
    "seen_at",
)


def _links(storage: ProjectionStorage, query: LinkQuery) -> list[Any]:
    return storage.list_links(
        kind=query.kind, client_key=query.client_key, installation_id=query.installation_id
    )


def links_page(storage: ProjectionStorage, query: LinkQuery, offset: int) -> dict[str, Any]:
    rows = _links(storage, query)
    page, following = _offset_page(rows, offset)
    counts = {kind: sum(1 for r in rows if r.kind == kind) for kind in ("connect", "reinstall")}
    return {
        "links": page,
        "query": query,
        "total": len(rows),
        "counts": counts,
        "offset": offset,
        "next": following,
    }


def _flat_link(row: Any) -> dict[str, Any]:
    shown = reads.link_object(row)
    evidence = shown.pop("evidence")
    return {**shown, "evidence_stream": evidence["stream"], "evidence_position": evidence["position"]}


def links_listing(storage: ProjectionStorage, query: LinkQuery) -> Listing:
    return Listing("links", LINK_COLUMNS, (_flat_link(r) for r in _links(storage, query)))


# ------------------------------------------------------------------- migration


def migration_page(
    store: EventStore, storage: ProjectionStorage, series: BurnDownSeries, offset: int
) -> dict[str, Any]:
    report = migration_report(
        storage.load_rows("tenants"), storage.load_rows("installations"), storage.load_rows("links")
    )
    today = utcnow().date()
    days = series.days(store, today)
    stragglers, following = _offset_page(report.connect_only, offset)
    return {
        "linked": report.linked,
        "connect_only_total": len(report.connect_only),
        "connect_only": stragglers,
        "forge_only": report.forge_only,
        "chart": burn_down_chart(days, CONNECT_END_OF_SUPPORT, today),
        "deadline": CONNECT_END_OF_SUPPORT.isoformat(),
        "days_left": (CONNECT_END_OF_SUPPORT - today).days,
        "offset": offset,
        "next": following,
    }


CONNECT_ONLY_COLUMNS = ("client_key", "base_url", "installation_id", "installation_ari")


def migration_listing(storage: ProjectionStorage, part: str) -> Listing:
    answer = reads.migration_answer(storage)
    if part == "forge_only":
        rows: list[dict[str, Any]] = answer["forge_only"]
        return Listing("migration-forge-only", INSTALLATION_COLUMNS, rows)
    return Listing("migration-connect-only", CONNECT_ONLY_COLUMNS, answer["connect_only"])


# ------------------------------------------------------------------- installations

INSTALLATION_COLUMNS = (
    "installation_id",
    "installation_ari",
    "cloud_id",
    "product",
    "app_version",
    "environment_type",
    "state",
    "license_active",
    "client_keys",
    "client_key",
    "installed_at",
    "updated_at",
    "last_seen_at",
    "version",
)


def installations_listing(storage: ProjectionStorage, state: str | None) -> Listing:
    rows = (reads.installation_object(r) for r in lists.all_installations(storage, state))
    return Listing("installations", INSTALLATION_COLUMNS, rows)


def installation_view(
    store: EventStore, storage: ProjectionStorage, uuid: str, as_of: str | None
) -> dict[str, Any]:
    """An installation now (and at ``as_of``), its Forge timeline, links and refusals."""
    events = store.read_stream(installation_stream_id(uuid))
    now = fold_installation(events)
    if now is None:
        raise HTTPException(404, {"error": "unknown_installation", "detail": "no such Forge installation"})
    links = storage.list_links(installation_id=uuid)
    keys = client_keys_at(lambda named: storage.list_links(installation_id=named), uuid, None)
    now = replace(now, client_keys=keys, client_key=keys[-1] if keys else None)
    then, up_to, problem = None, None, None
    if as_of:
        try:
            up_to = reads.parse_as_of(as_of)
            then = fold_installation(store.read_stream(installation_stream_id(uuid), up_to))
            problem = None if then is not None else "it did not exist at as_of"
        except reads.BadParameter as refused:
            problem = refused.detail
    refused_rows, refused_totals = lists.refusals_claiming(
        store, lists.installation_claims(uuid), PAGE_SIZE
    )
    tenants = {t.client_key for t in storage.tenants_named(client_keys=list(keys))}
    return {
        "installation": now,
        "ari": installation_ari(uuid),
        "then": then,
        "as_of": as_of or "",
        "as_of_problem": problem,
        "entries": timeline.forge_timeline(
            reads.stream_events(store, installation_stream_id(uuid)), up_to
        ),
        "links": links,
        "known_tenants": tenants,
        "refused": refused_rows,
        "refused_totals": refused_totals,
    }


# ------------------------------------------------------------------- events

EVENT_COLUMNS = (
    "position",
    "stream_id",
    "version",
    "type",
    "schema_version",
    "data",
    "metadata",
    "recorded_at",
    "hash",
)


def events_page(store: EventStore, before: int | None) -> dict[str, Any]:
    events = lists.latest_events(store, before, PAGE_SIZE)
    head = store.head().position
    return {
        "events": [_event_row(e) for e in events],
        "head": head,
        "before": before,
        "next": events[-1].position if len(events) == PAGE_SIZE and events[-1].position > 1 else None,
    }


def _event_row(event: RecordedEvent) -> dict[str, Any]:
    shown = reads.redact_event(event)
    link = lists.stream_link(event.stream_id)
    return {
        "event": shown,
        "kind": link[0] if link else None,
        "identity": link[1] if link else None,
        "changes": _summary(shown),
        "recorded_at": event.recorded_at,
    }


SUMMARY_CHARS = 160


def _summary(shown: dict[str, Any]) -> str:
    """What an event changed, short: the full text is on its timeline."""
    text = describe_change(shown["type"], shown["data"]) or timeline.change_text(shown)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def events_listing(store: EventStore, before: int | None) -> Listing:
    rows = (reads.redact_event(e) for e in lists.all_events(store, before))
    return Listing("events", EVENT_COLUMNS, rows)


# ------------------------------------------------------------------- rejections

REJECTION_COLUMNS = (
    "at",
    "last_seen_at",
    "count",
    "overflow",
    "reason",
    "status",
    "path",
    "client_key",
    "base_url",
    "remote_addr",
    "token_sha256",
    "detail",
)


def rejections_page(
    store: EventStore, storage: ProjectionStorage, where: lists.RejectionFilter, offset: int
) -> dict[str, Any]:
    recent = store.list_rejections(REJECTIONS_CHARTED)
    reasons = sorted({r.reason for r in recent} | ({where.reason} if where.reason else set()))
    charted = store.list_rejections(
        REJECTIONS_CHARTED, reason=where.reason, since=where.since, client_key=where.client_key
    )
    days = adoption.rejections_by_day(charted)
    series = sorted({reason for _, counts in days for reason in counts})
    columns = [
        Column(day.isoformat(), {r: float(n) for r, n in counts.items()}) for day, counts in days
    ]
    rows, more = lists.rejections_page(store, where, offset, PAGE_SIZE)
    claimed = sorted({r.client_key for r in rows if r.client_key})
    return {
        "chart": stacked_columns(columns, series, title="Refused calls per reason, by day")
        if columns
        else None,
        "charted": sum(r.count for r in charted),
        "charted_rows": len(charted),
        "rejections": rows,
        "totals": lists.refusal_totals(store, where),
        "reasons": reasons,
        "where": where,
        "offset": offset,
        "next": offset + PAGE_SIZE if more else None,
        "known_tenants": {t.client_key for t in storage.tenants_named(client_keys=claimed)},
    }


def rejections_listing(store: EventStore, where: lists.RejectionFilter) -> Listing:
    rows = (r.as_dict() for r in lists.all_rejections(store, where))
    return Listing("rejections", REJECTION_COLUMNS, rows)


# ------------------------------------------------------------------- the other lists

TENANT_COLUMNS = (
    "client_key",
    "base_url",
    "display_url",
    "product_type",
    "state",
    "enabled",
    "descriptor_version",
    "installed_at",
    "updated_at",
    "last_seen_at",
    "version",
    "installation_id",
    "forgotten_at",
    "forgotten_by",
)


def tenants_listing(storage: ProjectionStorage, state: str | None, search: str | None) -> Listing:
    rows = (reads.tenant_object(r) for r in lists.all_tenants(storage, state, search))
    return Listing("tenants", TENANT_COLUMNS, rows)


def presumed_gone_listing(storage: ProjectionStorage, grace_hours: float) -> Listing:
    rows: Iterator[dict[str, Any]] = (
        {**reads.tenant_object(row), "presumed": why}
        for row, why in lists.all_presumed_gone(storage, grace_hours)
    )
    return Listing("presumed-gone", (*TENANT_COLUMNS, "presumed"), rows)


def descriptors_listing(storage: ProjectionStorage) -> Listing:
    rows = reads.descriptors_answer(storage)["versions"]
    return Listing("descriptors", ("version", "first_seen_at", "tenants"), rows)


def parse_since(text: str) -> datetime | None:
    """``since``: an RFC 3339 time or a date (its midnight UTC); None when empty."""
    if not text:
        return None
    value = reads.parse_as_of(text if not _is_date(text) else text + "T00:00:00Z")
    if not isinstance(value, datetime):
        raise reads.BadParameter("since is a time (like 2026-12-01T00:00:00Z) or a date")
    return value


def _is_date(text: str) -> bool:
    return len(text) == 10 and text[4] == "-" and text[7] == "-"
