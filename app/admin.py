"""The admin API (SPEC §7): JSON, behind ``Authorization: Bearer <LEDGER_ADMIN_TOKEN>``.

Secrets never appear: events are shown through ``redact_event``, which replaces
every sealed secret by a marker, and tenant objects never had one.
"""

from __future__ import annotations

import hmac
import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
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


MAX_POSITION: Final = 2**63 - 1  # a PostgreSQL bigint, a SQLite INTEGER
MAX_GRACE_HOURS: Final = 87_600.0  # ten years
# RFC 3339 (a missing offset is read as UTC) or a position in ASCII digits: str.isdigit
# and datetime.fromisoformat accept far more (superscripts, week dates) than either.
AS_OF_PATTERN: Final = (
    r"^([0-9]{1,19}"
    r"|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?)?$"
)
# Identifiers in paths and cursors: no control character (a NUL is refused by PostgreSQL).
KEY_PATTERN: Final = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_CLIENT_KEY: Final = 255

Position = Annotated[int, Query(ge=0, le=MAX_POSITION)]
ClientKeyPath = Annotated[str, Path(min_length=1, max_length=MAX_CLIENT_KEY, pattern=KEY_PATTERN)]


def bad_parameter(detail: str) -> HTTPException:
    return HTTPException(status_code=400, detail={"error": "bad_parameter", "detail": detail})


def parse_as_of(value: str | None) -> int | datetime | None:
    """``as_of`` is a log position (ASCII digits) or an RFC 3339 time in years 1-9999 UTC."""
    if value is None or value == "":
        return None
    if value.isascii() and value.isdigit():
        position = int(value)
        if position > MAX_POSITION:
            raise bad_parameter(f"as_of: a position is at most {MAX_POSITION}")
        return position
    try:
        # Nanoseconds are cut to the microseconds Python keeps; the offset is applied
        # here, where a time at the edge of the calendar overflows (a 400, not a 500).
        return parse_timestamp(re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value))
    except (ValueError, OverflowError):
        raise bad_parameter(
            "as_of must be a position or an RFC 3339 time in years 1-9999 UTC"
        ) from None


@router.get(
    "/tenants/{client_key}",
    summary="One tenant, folded from its stream",
    **documented(TenantAnswer, 404),
)
async def tenant(
    client_key: ClientKeyPath,
    store: StoreDep,
    as_of: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=AS_OF_PATTERN,
            description="a log position (0 to 2^63-1) or an RFC 3339 time",
        ),
    ] = None,
) -> FastJSONResponse:
    up_to = parse_as_of(as_of)
    stream = stream_id_for(client_key)
    events = await run_in_threadpool(store.read_stream, stream, up_to)
    if not events:
        everything = events if up_to is None else await run_in_threadpool(store.read_stream, stream)
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
    return FastJSONResponse(tenant_object(row))


@router.get(
    "/tenants/{client_key}/events",
    summary="A tenant's events, oldest first",
    **documented(EventsAnswer, 404),
)
async def tenant_events(client_key: ClientKeyPath, store: StoreDep) -> FastJSONResponse:
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
    after: Position = 0,
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
    report = await run_in_threadpool(store.verify)
    answer: dict[str, Any] = {"ok": report.ok, "events": report.events, "head": report.head}
    if not report.ok:
        answer["first_bad_position"] = report.first_bad_position
        answer["reason"] = report.reason
    return FastJSONResponse(answer)


# ---------------------------------------------------------------- read models


def get_projections(request: Request) -> ProjectionStorage:
    storage: ProjectionStorage = request.app.state.projections
    return storage


ProjectionsDep = Annotated[ProjectionStorage, Depends(get_projections)]


MinPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="wait (at most 5 s) until this position is folded"),
]


async def _caught_up(
    store: EventStore, storage: ProjectionStorage, min_position: int | None
) -> None:
    """Let a caller that just wrote read its own write: wait for the runner (≤ 5 s).

    A position past the log's head was never acknowledged to anyone: waiting for it
    could only time out, so it is refused at once.
    """
    if min_position is None:
        return
    head = await run_in_threadpool(store.head)
    if min_position > head.position:
        raise bad_parameter(f"min_position is past the log's last position ({head.position})")
    if not await run_in_threadpool(wait_for_position, storage, min_position, 5.0):
        raise HTTPException(
            status_code=503,
            detail={
                "error": "projections_behind",
                "detail": "the read models have not caught up yet",
            },
            headers={"Retry-After": "1"},
        )


@router.get(
    "/tenants",
    summary="Tenants from the tenants projection, paged by clientKey",
    **documented(TenantsPage),
)
async def tenants(
    store: StoreDep,
    storage: ProjectionsDep,
    state: Annotated[Literal["installed", "uninstalled"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None,
        Query(
            max_length=MAX_CLIENT_KEY,
            pattern=KEY_PATTERN,
            description="the last client_key of the previous page",
        ),
    ] = None,
    presumed_gone: Annotated[
        bool, Query(description="only installed tenants presumed gone")
    ] = False,
    grace_hours: Annotated[
        float, Query(ge=0, le=MAX_GRACE_HOURS, allow_inf_nan=False, description="hours")
    ] = 24,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await _caught_up(store, storage, min_position)

    def page() -> list[Any]:
        if not presumed_gone:
            return storage.list_tenants(state=state, after=after, limit=limit)
        threshold = silence_threshold(
            storage.load_rows("descriptors"), utcnow(), timedelta(hours=grace_hours)
        )
        if threshold is None:
            return []
        return storage.list_tenants(
            state="installed", after=after, limit=limit, seen_before=threshold
        )

    rows = await run_in_threadpool(page)
    return FastJSONResponse(
        {
            "tenants": [tenant_object(r) for r in rows],
            "next": rows[-1].client_key if len(rows) == limit else None,
        }
    )


@router.get(
    "/descriptors",
    summary="Descriptor versions seen, and the latest",
    **documented(DescriptorsAnswer),
)
async def descriptors(
    store: StoreDep,
    storage: ProjectionsDep,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await _caught_up(store, storage, min_position)
    rows = await run_in_threadpool(storage.load_rows, "descriptors")
    rows.sort(key=lambda r: r.first_seen_position)
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
    **documented(ReimportsAnswer),
)
async def reimports(
    store: StoreDep,
    storage: ProjectionsDep,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await _caught_up(store, storage, min_position)
    rows = await run_in_threadpool(storage.load_rows, "reimports")
    rows.sort(key=lambda r: (r.detected_at, r.client_key))
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
