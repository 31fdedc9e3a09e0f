"""The admin API (SPEC §7): JSON, behind ``Authorization: Bearer <LEDGER_ADMIN_TOKEN>``.

Secrets never appear: events are shown through ``redact_event``, which replaces
every sealed secret by a marker, and tenant objects never had one.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Annotated, Final, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.http import deps
from app.http.auth_failures import refuse
from app.http.schemas import (
    DescriptorsAnswer,
    ErasureDueAnswer,
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
from app.queries import reads
from app.queries.reads import REDACTED, redact_event, tenant_object  # noqa: F401  (re-exported)
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.runner import wait_for_position
from projections.storage.base import ProjectionStorage


def require_admin(request: Request) -> None:
    configured = deps.settings(request).admin_token
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    # No token configured: everyone is refused. compare_digest keeps timing flat.
    expected = configured.get_secret_value() if configured is not None else ""
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(presented.strip().encode(), expected.encode())
    ):
        unauthorized = HTTPException(
            status_code=401,
            detail={"error": "unauthorized", "detail": "a valid admin bearer token is required"},
            headers={"WWW-Authenticate": "Bearer"},
        )
        refuse(request, "admin_token", unauthorized)


def get_store(request: Request) -> EventStore:
    store: EventStore = deps.store(request)
    return store


StoreDep = Annotated[EventStore, Depends(get_store)]

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


MAX_POSITION: Final = reads.MAX_POSITION
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
    """``reads.parse_as_of``, its refusal a 400."""
    try:
        return reads.parse_as_of(value)
    except reads.BadParameter as error:
        raise bad_parameter(error.detail) from None


def not_found(error: reads.NotFound) -> HTTPException:
    return HTTPException(status_code=404, detail={"error": error.error, "detail": error.detail})


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
    try:
        answer = await run_in_threadpool(reads.tenant_answer, store, client_key, up_to)
    except reads.NotFound as error:
        raise not_found(error) from None
    return FastJSONResponse(answer)


@router.get(
    "/tenants/{client_key}/events",
    summary="A tenant's events, oldest first",
    **documented(EventsAnswer, 404),
)
async def tenant_events(client_key: ClientKeyPath, store: StoreDep) -> Response:
    try:
        body = await run_in_threadpool(reads.tenant_events_json, store, client_key)
    except reads.NotFound as error:
        raise not_found(error) from None
    return Response(body, media_type="application/json")


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
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    reason: Annotated[
        str | None, Query(max_length=200, pattern=KEY_PATTERN, description="a reason code")
    ] = None,
    since: Annotated[
        str | None,
        Query(max_length=64, pattern=AS_OF_PATTERN, description="RFC 3339: at or after this time"),
    ] = None,
    client_key: Annotated[str | None, Query(max_length=MAX_CLIENT_KEY, pattern=KEY_PATTERN)] = None,
) -> FastJSONResponse:
    after = parse_as_of(since)
    if isinstance(after, int):
        raise bad_parameter("since must be an RFC 3339 time")
    answer = await run_in_threadpool(
        lambda: reads.rejections_answer(
            store, limit=limit, reason=reason, since=after, client_key=client_key
        )
    )
    return FastJSONResponse(answer)


@router.get("/verify", summary="Recompute the hash chain", **documented(VerifyAnswer))
async def verify(store: StoreDep) -> FastJSONResponse:
    return FastJSONResponse(await run_in_threadpool(reads.verify_answer, store))


# ---------------------------------------------------------------- read models


def get_projections(request: Request) -> ProjectionStorage:
    storage: ProjectionStorage = deps.projections(request)
    return storage


ProjectionsDep = Annotated[ProjectionStorage, Depends(get_projections)]


MinPosition = Annotated[
    int | None,
    Query(ge=0, le=MAX_POSITION, description="wait (at most 5 s) until this position is folded"),
]


async def caught_up(
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
    await caught_up(store, storage, min_position)
    answer = await run_in_threadpool(
        lambda: reads.tenants_answer(
            storage,
            state=state,
            after=after,
            limit=limit,
            presumed_gone=presumed_gone,
            grace_hours=grace_hours,
        )
    )
    return FastJSONResponse(answer)


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
    await caught_up(store, storage, min_position)
    return FastJSONResponse(await run_in_threadpool(reads.descriptors_answer, storage))


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
    await caught_up(store, storage, min_position)
    return FastJSONResponse(await run_in_threadpool(reads.reimports_answer, storage))


@router.get(
    "/erasure-due",
    summary="Tenants whose data is due for erasure (LEDGER_ERASURE_AFTER_DAYS), with evidence",
    **documented(ErasureDueAnswer),
)
async def erasure_due(
    request: Request,
    store: StoreDep,
    storage: ProjectionsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    after: Annotated[
        str | None,
        Query(
            max_length=MAX_CLIENT_KEY,
            pattern=KEY_PATTERN,
            description="the last client_key of the previous page",
        ),
    ] = None,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    after_days = deps.settings(request).erasure_after_days
    answer = await run_in_threadpool(
        lambda: reads.erasure_due_answer(store, storage, after_days, after=after, limit=limit)
    )
    return FastJSONResponse(answer)
