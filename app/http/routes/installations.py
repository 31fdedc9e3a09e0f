"""The admin API's Forge part (SPEC §10): installations, identity links, migration report.

Same rules as ``app.http.routes.tenants``: bearer admin token, JSON, secrets never shown. An
installation is accepted in a path or a filter as a UUID or an ARI (as is or
percent-encoded); answers give the bare UUID in ``installation_id`` and the ARI in
``installation_ari``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from starlette.concurrency import run_in_threadpool

from app.http.routes.tenants import (
    AS_OF_PATTERN,
    KEY_PATTERN,
    MAX_CLIENT_KEY,
    MAX_GRACE_HOURS,
    MinPosition,
    ProjectionsDep,
    StoreDep,
    caught_up,
    parse_as_of,
    require_admin,
)
from app.http.schemas import EventsAnswer, FastJSONResponse, documented
from app.http.schemas_forge import (
    InstallationAnswer,
    InstallationsPage,
    LinksAnswer,
    MigrationAnswer,
    PresumedGoneAnswer,
)
from app.queries import reads
from app.queries.reads import installation_object, link_object  # noqa: F401  (the answers' shapes)
from eventstore.events import installation_stream_id
from eventstore.ids import installation_uuid

router = APIRouter(prefix="/admin", tags=["admin", "forge"], dependencies=[Depends(require_admin)])


def parse_installation(value: str) -> str:
    found = installation_uuid(value.strip())
    if found is None:
        raise HTTPException(
            status_code=400,
            detail={
                "error": "invalid_installation_id",
                "detail": "an installation is a UUID or ari:cloud:ecosystem::installation/<uuid>",
            },
        )
    return found


def _unknown() -> HTTPException:
    return HTTPException(
        status_code=404,
        detail={"error": "unknown_installation", "detail": "no such Forge installation"},
    )


@router.get(
    "/installations",
    summary="Forge installations, paged by installation id",
    **documented(InstallationsPage),
)
async def installations(
    store: StoreDep,
    storage: ProjectionsDep,
    state: Annotated[Literal["installed", "uninstalling"] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=200, pattern=KEY_PATTERN)] = None,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    start = parse_installation(after) if after else None
    answer = await run_in_threadpool(
        lambda: reads.installations_answer(storage, state=state, after=start, limit=limit)
    )
    return FastJSONResponse(answer)


@router.get(
    "/installations/{installation_id:path}/events",
    summary="An installation's events, oldest first",
    **documented(EventsAnswer, 404),
)
async def installation_events(installation_id: str, store: StoreDep) -> Response:
    stream = installation_stream_id(parse_installation(installation_id))
    body = await run_in_threadpool(reads.stream_events_json, store, stream)
    if body is None:
        raise _unknown()
    return Response(body, media_type="application/json")


@router.get(
    "/installations/{installation_id:path}",
    summary="One installation, folded from its stream",
    **documented(InstallationAnswer, 404),
)
async def installation(
    installation_id: str,
    store: StoreDep,
    storage: ProjectionsDep,
    as_of: Annotated[
        str | None,
        Query(
            max_length=64,
            pattern=AS_OF_PATTERN,
            description="a log position (0 to 2^63-1) or an RFC 3339 time",
        ),
    ] = None,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    # The stream is read directly; its tenants come from the links read model.
    await caught_up(store, storage, min_position)
    uuid = parse_installation(installation_id)
    up_to = parse_as_of(as_of)
    row = await run_in_threadpool(reads.installation_row_at, store, storage, uuid, up_to)
    if row is None:
        ever = (
            []
            if up_to is None
            else await run_in_threadpool(store.read_stream, installation_stream_id(uuid))
        )
        if ever:
            raise HTTPException(
                status_code=404,
                detail={"error": "not_yet_installed", "detail": "it did not exist at as_of"},
            )
        raise _unknown()
    return FastJSONResponse(installation_object(row))


@router.get(
    "/links",
    summary="Links between Connect tenants and Forge installations",
    **documented(LinksAnswer),
)
async def links(
    store: StoreDep,
    storage: ProjectionsDep,
    kind: Annotated[Literal["connect", "reinstall"] | None, Query()] = None,
    client_key: Annotated[str | None, Query(max_length=MAX_CLIENT_KEY, pattern=KEY_PATTERN)] = None,
    installation_id: Annotated[str | None, Query(max_length=200, pattern=KEY_PATTERN)] = None,
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    wanted = parse_installation(installation_id) if installation_id else None
    answer = await run_in_threadpool(
        lambda: reads.links_answer(
            storage, kind=kind, client_key=client_key, installation_id=wanted
        )
    )
    return FastJSONResponse(answer)


@router.get(
    "/migration",
    summary="How far the move from Connect to Forge has come",
    **documented(MigrationAnswer),
)
async def migration(
    store: StoreDep, storage: ProjectionsDep, min_position: MinPosition = None
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    return FastJSONResponse(await run_in_threadpool(reads.migration_answer, storage))


@router.get(
    "/presumed-gone",
    summary="Tenants presumed gone: silent, or uninstalling on Forge",
    **documented(PresumedGoneAnswer),
)
async def presumed_gone_tenants(
    store: StoreDep,
    storage: ProjectionsDep,
    grace_hours: Annotated[
        float, Query(ge=0, le=MAX_GRACE_HOURS, allow_inf_nan=False, description="hours")
    ] = 24,
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
    answer = await run_in_threadpool(
        lambda: reads.presumed_gone_answer(
            storage, grace_hours=grace_hours, after=after, limit=limit
        )
    )
    return FastJSONResponse(answer)
