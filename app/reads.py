"""The reads of the admin API as plain functions: one data path for the admin API and
the CLI (and anything else that shows the ledger), so both give the same answer.

Each function takes a store or the projection storage and returns the admin API's
JSON document (a dict of builtins). Secrets never appear: events go through
``redact_event``, and tenant rows never held one. A missing tenant raises
``NotFound``. Arguments arrive parsed (``app.admin.parse_as_of`` is the one rule
for ``as_of``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import msgspec

from eventstore.events import stream_id_for
from eventstore.store import (
    EventStore,
    RecordedEvent,
    format_timestamp,
    utcnow,
)
from projections import tenants as tenants_fold
from projections.descriptors import latest_version
from projections.model import INSTALLED, DescriptorRow, ReimportRow, TenantRow
from projections.presumed_gone import silence_threshold
from projections.storage import ProjectionStorage

REDACTED = "[redacted]"
STRAGGLERS_SHOWN = 100  # a descriptors answer lists at most this many stragglers


class NotFound(Exception):
    """No such tenant (``error`` is the admin API's error code)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def redact_event(event: RecordedEvent) -> dict[str, Any]:
    """An event object with SPEC §3 field names and every shared secret redacted."""
    shown = event.as_dict()
    data = shown["data"]
    if "sharedSecret" in data:
        data["sharedSecret"] = REDACTED
    return shown


def tenant_object(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(row)
    for name in ("installed_at", "updated_at", "last_seen_at"):
        value = getattr(row, name, None)
        if isinstance(value, datetime):
            out[name] = format_timestamp(value)
    return out


def _stream_or_not_found(
    store: EventStore, client_key: str, up_to: int | datetime | None
) -> list[RecordedEvent]:
    stream = stream_id_for(client_key)
    events = store.read_stream(stream, up_to)
    if not events:
        if up_to is None or not store.read_stream(stream):
            raise NotFound("unknown_tenant", "no such clientKey")
        raise NotFound("not_yet_installed", "the tenant did not exist at as_of")
    return events


def tenant_row(store: EventStore, client_key: str, as_of: int | datetime | None) -> TenantRow:
    """The tenant folded from its stream (up to as_of); NotFound when there is none."""
    row = tenants_fold.fold(_stream_or_not_found(store, client_key, as_of))
    if row is None:
        raise NotFound("unknown_tenant", "never installed")
    return row


def tenant_answer(
    store: EventStore, client_key: str, as_of: int | datetime | None
) -> dict[str, Any]:
    """``GET /admin/tenants/{clientKey}``: the tenant folded from its stream (up to as_of)."""
    return tenant_object(tenant_row(store, client_key, as_of))


def tenant_events_answer(
    store: EventStore, client_key: str, as_of: int | datetime | None = None
) -> dict[str, Any]:
    """``GET /admin/tenants/{clientKey}/events``: the tenant's events, oldest first."""
    events = _stream_or_not_found(store, client_key, as_of)
    return {"events": [redact_event(e) for e in events]}


def tenants_page(
    storage: ProjectionStorage,
    state: str | None,
    after: str | None,
    limit: int,
    presumed_gone: bool = False,
    grace_hours: float = 24,
    now: datetime | None = None,
    search: str | None = None,
) -> list[TenantRow]:
    """One page of tenants by clientKey (or of the installed ones presumed gone).

    ``search``: a case-insensitive part of the client key or base URL (the console's box)."""
    if not presumed_gone:
        return storage.list_tenants(state=state, after=after, limit=limit, search=search)
    threshold = silence_threshold(
        storage.load_rows("descriptors"), now or utcnow(), timedelta(hours=grace_hours)
    )
    if threshold is None:
        return []
    return storage.list_tenants(
        state=INSTALLED, after=after, limit=limit, seen_before=threshold, search=search
    )


def tenants_answer(
    storage: ProjectionStorage,
    *,
    state: str | None = None,
    after: str | None = None,
    limit: int = 100,
    presumed_gone: bool = False,
    grace_hours: float = 24,
) -> dict[str, Any]:
    """``GET /admin/tenants``: a page of tenants and the cursor of the next one."""
    rows = tenants_page(storage, state, after, limit, presumed_gone, grace_hours)
    return {
        "tenants": [tenant_object(r) for r in rows],
        "next": rows[-1].client_key if len(rows) == limit else None,
    }


def descriptor_rows(storage: ProjectionStorage) -> list[DescriptorRow]:
    """Descriptor versions in the order first seen."""
    rows: list[DescriptorRow] = storage.load_rows("descriptors")
    rows.sort(key=lambda r: r.first_seen_position)
    return rows


def descriptors_answer(storage: ProjectionStorage) -> dict[str, Any]:
    """``GET /admin/descriptors``: versions seen, the latest, and who is not on it yet."""
    rows = descriptor_rows(storage)
    latest = latest_version(rows)
    stragglers = (
        []
        if latest is None
        else storage.list_tenants(state=INSTALLED, not_version=latest, limit=STRAGGLERS_SHOWN)
    )
    return {
        "latest": latest,
        "versions": [
            {
                "version": r.version,
                "first_seen_at": format_timestamp(r.first_seen_at),
                "tenants": r.tenants,
            }
            for r in rows
        ],
        "stragglers": [tenant_object(r) for r in stragglers],
    }


def reimport_rows(storage: ProjectionStorage) -> list[ReimportRow]:
    """Reimport links, oldest first."""
    rows: list[ReimportRow] = storage.load_rows("reimports")
    rows.sort(key=lambda r: (r.detected_at, r.client_key))
    return rows


def reimports_answer(storage: ProjectionStorage) -> dict[str, Any]:
    """``GET /admin/reimports``: links between a new clientKey and the one that held its URL."""
    return {
        "links": [
            {
                "base_url": r.base_url,
                "previous_client_key": r.previous_client_key,
                "client_key": r.client_key,
                "detected_at": format_timestamp(r.detected_at),
                "kind": r.kind,
            }
            for r in reimport_rows(storage)
        ]
    }


def rejections_answer(
    store: EventStore,
    *,
    limit: int = 100,
    reason: str | None = None,
    since: datetime | None = None,
    client_key: str | None = None,
) -> dict[str, Any]:
    """``GET /admin/rejections``: refused calls, newest first, optionally filtered."""
    rows = store.list_rejections(limit, reason=reason, since=since, client_key=client_key)
    return {"rejections": [r.as_dict() for r in rows]}


def verify_answer(store: EventStore) -> dict[str, Any]:
    """``GET /admin/verify``: the chain recomputed, as the admin API and the console show it."""
    report = store.verify()
    answer: dict[str, Any] = {"ok": report.ok, "events": report.events, "head": report.head}
    if not report.ok:
        answer["first_bad_position"] = report.first_bad_position
        answer["reason"] = report.reason
    return answer
