"""What each console page shows: plain functions from the store and the read models to
a template context. They reuse the admin API's queries (``app.queries.reads``) so that the
console and the API can never disagree; they run in a worker thread (blocking I/O).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException

from app.http.console import adoption, timeline
from app.http.console.svg import Column, stacked_columns
from app.http.routes import tenants as admin
from app.queries import lists, reads
from eventstore.clock import format_timestamp, utcnow
from eventstore.digest import make_digest
from eventstore.events import stream_id_for
from eventstore.store import EventStore
from projections.descriptors import latest_version
from projections.model import INSTALLED, TenantRow
from projections.presumed_gone import silence_threshold
from projections.storage.base import ProjectionStorage

PAGE_SIZE = 50
REFUSALS_SHOWN = 20
STRAGGLERS_SHOWN = 500
MAX_POSITION = 2**63 - 1  # positions are BIGINT


@dataclass(frozen=True, slots=True)
class TenantQuery:
    state: str | None
    search: str | None
    after: str | None


def tenants_page(storage: ProjectionStorage, query: TenantQuery) -> dict[str, Any]:
    rows = reads.tenants_page(
        storage, query.state, query.after, PAGE_SIZE, search=query.search or None
    )
    return {
        "tenants": rows,
        "query": query,
        "totals": storage.tenant_totals(query.search),
        "everyone": storage.tenant_totals() if query.search else None,
        "next": rows[-1].client_key if len(rows) == PAGE_SIZE else None,
    }


def tenant_view(
    store: EventStore, storage: ProjectionStorage, client_key: str, as_of: str | None
) -> dict[str, Any]:
    """The tenant now, and as it stood at ``as_of`` when one is given (404 if unknown)."""
    try:
        now = reads.tenant_row(store, client_key, None)
    except reads.NotFound as error:
        raise admin.not_found(error) from None
    events = store.read_stream(stream_id_for(client_key))
    up_to, then, as_of_problem = None, None, None
    if as_of:
        try:
            up_to = admin.parse_as_of(as_of)
            if isinstance(up_to, int):
                up_to = min(up_to, MAX_POSITION)  # beyond the head is "now"
            then = reads.tenant_row(store, client_key, up_to)
            head = store.head().position
            if isinstance(up_to, int) and up_to > head:
                then, as_of_problem = None, f"position {up_to} is past the head of the log ({head})"
        except reads.NotFound as error:
            as_of_problem = error.detail
        except HTTPException as bad:
            as_of_problem = bad.detail["detail"] if isinstance(bad.detail, dict) else ""
        except OverflowError:
            as_of_problem = "as_of is out of range"
    links = [
        r
        for r in reads.reimport_rows(storage)
        if client_key in (r.client_key, r.previous_client_key)
    ]
    forge = forge_of(storage, now)
    presumed, threshold = lists.presumed_reasons(storage, now, forge["installations"])
    refused, refused_totals = lists.refusals_claiming(store, [client_key], REFUSALS_SHOWN)
    return {
        **forge,
        "presumed": presumed,
        "threshold": threshold,
        "refused": refused,
        "refused_totals": refused_totals,
        "client_key": client_key,
        "now": now,
        "then": then,
        "as_of": as_of or "",
        "as_of_problem": as_of_problem,
        "entries": timeline.timeline(reads.stream_events(store, stream_id_for(client_key)), up_to),
        "base_urls": timeline.base_url_history(events),
        "descriptors": timeline.descriptor_periods(events),
        "links_in": [r for r in links if r.client_key == client_key],
        "links_out": [r for r in links if r.previous_client_key == client_key],
    }


def descriptors_page(
    store: EventStore, storage: ProjectionStorage, series: adoption.AdoptionSeries
) -> dict[str, Any]:
    rows = reads.descriptor_rows(storage)
    latest = latest_version(rows)
    days = series.days(store, utcnow().date())
    versions = [r.version for r in rows]
    columns = [
        Column(
            day.isoformat(), {v: float(n) for v, n in counts.items()}, float(sum(counts.values()))
        )
        for day, counts in days
    ]
    chart = stacked_columns(
        columns,
        versions + sorted({v for _, c in days for v in c} - set(versions)),
        title="Share of installed tenants per descriptor version, by day",
        share=True,
    )
    return {
        "latest": latest,
        "versions": rows,
        "chart": chart if columns else None,
        "stragglers": _stragglers(storage, latest),
        "stragglers_shown": STRAGGLERS_SHOWN,
    }


def _stragglers(storage: ProjectionStorage, latest: str | None) -> list[TenantRow]:
    """Installed tenants not on the latest version (the first ``STRAGGLERS_SHOWN``)."""
    found: list[TenantRow] = []
    after: str | None = None
    while latest is not None and len(found) < STRAGGLERS_SHOWN:
        rows = reads.tenants_page(storage, INSTALLED, after, 1000)
        found += [r for r in rows if r.descriptor_version != latest]
        if len(rows) < 1000:
            break
        after = rows[-1].client_key
    return found[:STRAGGLERS_SHOWN]


def presumed_gone_page(
    storage: ProjectionStorage, grace_hours: float, after: str | None
) -> dict[str, Any]:
    """Both reasons (``reads.presumed_gone_page``): silent, or uninstalling on Forge."""
    found = reads.presumed_gone_page(storage, grace_hours, after, PAGE_SIZE)
    threshold = silence_threshold(
        reads.descriptor_rows(storage), utcnow(), timedelta(hours=grace_hours)
    )
    return {
        "tenants": found,
        "totals": reads.presumed_gone_totals(storage, grace_hours),
        "grace_hours": grace_hours,
        "threshold": format_timestamp(threshold) if threshold else None,
        "next": found[-1][0].client_key if len(found) == PAGE_SIZE else None,
    }


def installations_page(
    storage: ProjectionStorage, state: str | None, after: str | None
) -> dict[str, Any]:
    """Forge installations by id: state, linked tenant, app version, license."""
    rows = storage.list_installations(state=state, after=after, limit=PAGE_SIZE)
    leaving = len(storage.list_installations(state="uninstalling", limit=None))  # few
    everyone = storage.count("installations")
    return {
        "totals": {"all": everyone, "installed": everyone - leaving, "uninstalling": leaving},
        "installations": rows,
        "state": state,
        "after": after,
        "next": rows[-1].installation_id if len(rows) == PAGE_SIZE else None,
    }


def forge_of(storage: ProjectionStorage, tenant: TenantRow) -> dict[str, Any]:
    """A tenant's Forge side: the installations linked to it or named by its payload,
    and the identity links that name it (with their evidence)."""
    rows = {
        r.installation_id: r
        for r in storage.list_installations(client_keys=[tenant.client_key], limit=None)
    }
    if tenant.installation_id is not None and tenant.installation_id not in rows:
        named = storage.list_installations(installation_ids=[tenant.installation_id], limit=None)
        rows.update((r.installation_id, r) for r in named)
    return {
        "installations": [rows[key] for key in sorted(rows)],
        "forge_links": storage.list_links(client_key=tenant.client_key),
    }


def integrity_page(store: EventStore, last: dict[str, Any] | None) -> dict[str, Any]:
    """The last verification this process ran (None: none yet) and the digest now;
    the chain is recomputed only when a person asks (POST), never on a view."""
    return {"verify": last, "digest": make_digest(store)}


def erasure_due_page(
    store: EventStore, storage: ProjectionStorage, after_days: int | None, after: str | None
) -> dict[str, Any]:
    """Tenants due for erasure (``reads.erasure_due_page``), with their evidence."""
    found = (
        []
        if after_days is None
        else reads.erasure_due_page(store, storage, after_days, after=after, limit=PAGE_SIZE)
    )
    return {
        "after_days": after_days,
        "tenants": found,
        "next": found[-1].tenant.client_key if len(found) == PAGE_SIZE else None,
    }
