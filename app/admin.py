"""The admin API (SPEC §7): JSON, behind ``Authorization: Bearer <LEDGER_ADMIN_TOKEN>``.

Secrets never appear: events are shown through ``redact_event``, which replaces
every sealed secret by a marker, and tenant objects never had one.
"""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from starlette.concurrency import run_in_threadpool

from app.answers import (
    DescriptorsAnswer,
    EventsAnswer,
    EventsPage,
    FastJSONResponse,
    ReimportsAnswer,
    RejectionsAnswer,
    TenantAnswer,
    TenantsPage,
    VerifyAnswer,
    documented,
)
from eventstore.events import stream_id_for
from eventstore.store import EventStore, RecordedEvent, format_timestamp, parse_timestamp, utcnow
from projections import tenants as tenants_fold
from projections.descriptors import latest_version
from projections.model import DescriptorRow, ReimportRow, TenantRow
from projections.presumed_gone import silence_threshold
from projections.runner import wait_for_position
from projections.storage import ProjectionStorage

REDACTED = "[redacted]"


def require_admin(request: Request) -> None:
    configured = request.app.state.settings.admin_token
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    # No token configured: everyone is refused. compare_digest keeps timing flat.
    expected = configured.get_secret_value() if configured is not None else ""
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), expected.encode())
    ):
        raise HTTPException(
            status_code=401,
            detail={"error": "unauthorized", "detail": "a valid admin bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )


def get_store(request: Request) -> EventStore:
    store: EventStore = request.app.state.store
    return store


StoreDep = Annotated[EventStore, Depends(get_store)]

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


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


def parse_as_of(value: str | None) -> int | datetime | None:
    """``as_of`` is a log position (digits) or an RFC 3339 time."""
    if value is None or value == "":
        return None
    if value.isdigit():
        return int(value)
    try:
        parsed = parse_timestamp(value)
    except ValueError:
        raise HTTPException(
            status_code=400,
            detail={
                "error": "invalid_as_of",
                "detail": "as_of must be a position or an RFC 3339 time",
            },
        ) from None
    return parsed


@router.get(
    "/tenants/{client_key}",
    summary="One tenant, folded from its stream",
    **documented(TenantAnswer, 400, 404),
)
async def tenant(
    client_key: str,
    store: StoreDep,
    as_of: Annotated[str | None, Query(description="a log position or an RFC 3339 time")] = None,
) -> FastJSONResponse:
    row = await run_in_threadpool(read_tenant, store, client_key, parse_as_of(as_of))
    return FastJSONResponse(tenant_object(row))


def read_tenant(store: EventStore, client_key: str, up_to: int | datetime | None) -> TenantRow:
    """The tenant folded from its stream up to ``up_to``; HTTP 404 when there is none.

    Shared with the web console (``app.console``)."""
    stream = stream_id_for(client_key)
    events = store.read_stream(stream, up_to)
    if not events:
        everything = events if up_to is None else store.read_stream(stream)
        if not everything:
            raise HTTPException(
                status_code=404, detail={"error": "unknown_tenant", "detail": "no such clientKey"}
            )
        raise HTTPException(
            status_code=404,
            detail={"error": "not_yet_installed", "detail": "the tenant did not exist at as_of"},
        )
    row = tenants_fold.fold(events)
    if row is None:
        raise HTTPException(
            status_code=404, detail={"error": "unknown_tenant", "detail": "never installed"}
        )
    return row


@router.get(
    "/tenants/{client_key}/events",
    summary="A tenant's events, oldest first",
    **documented(EventsAnswer, 404),
)
async def tenant_events(client_key: str, store: StoreDep) -> FastJSONResponse:
    events = await run_in_threadpool(store.read_stream, stream_id_for(client_key))
    if not events:
        raise HTTPException(
            status_code=404, detail={"error": "unknown_tenant", "detail": "no such clientKey"}
        )
    return FastJSONResponse({"events": [redact_event(e) for e in events]})


@router.get(
    "/events", summary="The log in global order, paged by position", **documented(EventsPage)
)
async def events(
    store: StoreDep,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> FastJSONResponse:
    def page() -> list[RecordedEvent]:
        found: list[RecordedEvent] = []
        for event in store.read_all(after_position=after, batch_size=limit):
            found.append(event)
            if len(found) == limit:
                break
        return found

    found = await run_in_threadpool(page)
    return FastJSONResponse(
        {
            "events": [redact_event(e) for e in found],
            "next": found[-1].position if len(found) == limit else None,
        }
    )


@router.get("/rejections", summary="Refused calls, newest first", **documented(RejectionsAnswer))
async def rejections(
    store: StoreDep, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> FastJSONResponse:
    rows = await run_in_threadpool(store.list_rejections, limit)
    return FastJSONResponse({"rejections": [r.as_dict() for r in rows]})


@router.get("/verify", summary="Recompute the hash chain", **documented(VerifyAnswer))
async def verify(store: StoreDep) -> FastJSONResponse:
    return FastJSONResponse(await run_in_threadpool(verify_answer, store))


def verify_answer(store: EventStore) -> dict[str, Any]:
    """The chain recomputed, as the admin API and the console show it."""
    report = store.verify()
    answer: dict[str, Any] = {"ok": report.ok, "events": report.events, "head": report.head}
    if not report.ok:
        answer["first_bad_position"] = report.first_bad_position
        answer["reason"] = report.reason
    return answer


# ---------------------------------------------------------------- read models


def get_projections(request: Request) -> ProjectionStorage:
    storage: ProjectionStorage = request.app.state.projections
    return storage


ProjectionsDep = Annotated[ProjectionStorage, Depends(get_projections)]


async def _caught_up(storage: ProjectionStorage, min_position: int | None) -> None:
    """Let a caller that just wrote read its own write: wait for the runner (≤ 5 s)."""
    if min_position is not None and not await run_in_threadpool(
        wait_for_position, storage, min_position, 5.0
    ):
        raise HTTPException(
            status_code=503,
            detail={
                "error": "projections_behind",
                "detail": "the read models have not caught up yet",
            },
            headers={"Retry-After": "1"},
        )


def tenants_page(
    storage: ProjectionStorage,
    state: str | None,
    after: str | None,
    limit: int,
    presumed_gone: bool = False,
    grace_hours: float = 24,
    search: str | None = None,
) -> list[TenantRow]:
    """One page of tenants (or of those presumed gone); shared with the console."""
    if not presumed_gone:
        return storage.list_tenants(state=state, after=after, limit=limit, search=search)
    threshold = silence_threshold(
        storage.load_rows("descriptors"), utcnow(), timedelta(hours=grace_hours)
    )
    if threshold is None:
        return []
    return storage.list_tenants(
        state="installed", after=after, limit=limit, seen_before=threshold, search=search
    )


@router.get(
    "/tenants",
    summary="Tenants from the tenants projection, paged by clientKey",
    **documented(TenantsPage, 503),
)
async def tenants(
    storage: ProjectionsDep,
    state: Annotated[Literal["installed", "uninstalled"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None, Query(description="the last client_key of the previous page")
    ] = None,
    presumed_gone: Annotated[
        bool, Query(description="only installed tenants presumed gone")
    ] = False,
    grace_hours: Annotated[float, Query(gt=0)] = 24,
    min_position: Annotated[
        int | None, Query(ge=0, description="wait until the log position is folded")
    ] = None,
) -> FastJSONResponse:
    await _caught_up(storage, min_position)

    rows = await run_in_threadpool(
        tenants_page, storage, state, after, limit, presumed_gone, grace_hours
    )
    return FastJSONResponse(
        {
            "tenants": [tenant_object(r) for r in rows],
            "next": rows[-1].client_key if len(rows) == limit else None,
        }
    )


def descriptor_rows(storage: ProjectionStorage) -> list[DescriptorRow]:
    """Descriptor versions in the order first seen; shared with the console."""
    rows: list[DescriptorRow] = storage.load_rows("descriptors")
    rows.sort(key=lambda r: r.first_seen_position)
    return rows


def reimport_rows(storage: ProjectionStorage) -> list[ReimportRow]:
    """Reimport links, oldest first; shared with the console."""
    rows: list[ReimportRow] = storage.load_rows("reimports")
    rows.sort(key=lambda r: (r.detected_at, r.client_key))
    return rows


@router.get(
    "/descriptors",
    summary="Descriptor versions seen, and the latest",
    **documented(DescriptorsAnswer, 503),
)
async def descriptors(
    storage: ProjectionsDep,
    min_position: Annotated[int | None, Query(ge=0)] = None,
) -> FastJSONResponse:
    await _caught_up(storage, min_position)
    rows = await run_in_threadpool(descriptor_rows, storage)
    return FastJSONResponse(
        {
            "latest": latest_version(rows),
            "versions": [
                {
                    "version": r.version,
                    "first_seen_at": format_timestamp(r.first_seen_at),
                    "tenants": r.tenants,
                }
                for r in rows
            ],
        }
    )


@router.get(
    "/reimports",
    summary="Links between a new clientKey and the one that held its URL",
    **documented(ReimportsAnswer, 503),
)
async def reimports(
    storage: ProjectionsDep,
    min_position: Annotated[int | None, Query(ge=0)] = None,
) -> FastJSONResponse:
    await _caught_up(storage, min_position)
    rows = await run_in_threadpool(reimport_rows, storage)
    return FastJSONResponse(
        {
            "links": [
                {
                    "base_url": r.base_url,
                    "previous_client_key": r.previous_client_key,
                    "client_key": r.client_key,
                    "detected_at": format_timestamp(r.detected_at),
                    "kind": r.kind,
                }
                for r in rows
            ]
        }
    )
