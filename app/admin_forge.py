"""The admin API's Forge part (SPEC §10): installations, identity links, migration report.

Same rules as ``app.admin``: bearer admin token, JSON, secrets never shown. An
installation is accepted in a path or a filter as a UUID or an ARI (as is or
percent-encoded); answers give the bare UUID in ``installation_id`` and the ARI in
``installation_ari``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from starlette.concurrency import run_in_threadpool

from app.admin import (
    AS_OF_PATTERN,
    KEY_PATTERN,
    MAX_CLIENT_KEY,
    MAX_GRACE_HOURS,
    MinPosition,
    ProjectionsDep,
    StoreDep,
    caught_up,
    parse_as_of,
    redact_event,
    require_admin,
    tenant_object,
)
from app.answers import EventsAnswer, FastJSONResponse, documented
from app.answers_forge import (
    InstallationAnswer,
    InstallationsPage,
    LinksAnswer,
    MigrationAnswer,
    PresumedGoneAnswer,
)
from eventstore.events import installation_stream_id
from eventstore.store import format_timestamp, utcnow
from projections.forge_ids import installation_ari, installation_uuid
from projections.installations import (
    CONNECT,
    InstallationRow,
    LinkRow,
    fold_installation,
)
from projections.migration import migration_report
from projections.presumed_gone import presumed_gone, uninstalling
from projections.storage import ProjectionStorage

router = APIRouter(prefix="/admin", tags=["admin", "forge"], dependencies=[Depends(require_admin)])


def installation_object(row: InstallationRow) -> dict[str, Any]:
    return {
        "installation_id": row.installation_id,
        "installation_ari": installation_ari(row.installation_id),
        "cloud_id": row.cloud_id,
        "product": row.product,
        "app_version": row.app_version,
        "environment_type": row.environment_type,
        "state": row.state,
        "license_active": row.license_active,
        "client_key": row.client_key,
        "installed_at": format_timestamp(row.installed_at),
        "updated_at": format_timestamp(row.updated_at),
        "last_seen_at": format_timestamp(row.last_seen_at),
        "version": row.version,
    }


def link_object(row: LinkRow) -> dict[str, Any]:
    previous = row.previous_installation_id
    return {
        "kind": row.kind,
        "client_key": row.client_key,
        "installation_id": row.installation_id,
        "installation_ari": installation_ari(row.installation_id),
        "previous_installation_id": previous,
        "previous_installation_ari": installation_ari(previous) if previous else None,
        "evidence": {"stream": row.evidence_stream, "position": row.evidence_position},
        "seen_at": format_timestamp(row.seen_at),
    }


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
    rows: list[InstallationRow] = await run_in_threadpool(storage.load_rows, "installations")
    chosen = sorted(
        (
            r
            for r in rows
            if (state is None or r.state == state) and (start is None or r.installation_id > start)
        ),
        key=lambda r: r.installation_id,
    )[:limit]
    return FastJSONResponse(
        {
            "installations": [installation_object(r) for r in chosen],
            "next": chosen[-1].installation_id if len(chosen) == limit else None,
        }
    )


@router.get(
    "/installations/{installation_id:path}/events",
    summary="An installation's events, oldest first",
    **documented(EventsAnswer, 404),
)
async def installation_events(installation_id: str, store: StoreDep) -> FastJSONResponse:
    stream = installation_stream_id(parse_installation(installation_id))
    events = await run_in_threadpool(store.read_stream, stream)
    if not events:
        raise _unknown()
    return FastJSONResponse({"events": [redact_event(e) for e in events]})


def _client_key_at(
    links: list[LinkRow], installation: str, up_to: int | datetime | None
) -> str | None:
    """The Connect tenant linked to ``installation`` by the links seen up to ``up_to``."""
    mine = [
        link
        for link in links
        if link.installation_id == installation
        and (
            up_to is None
            or (
                link.evidence_position <= up_to if isinstance(up_to, int) else link.seen_at <= up_to
            )
        )
    ]
    mine.sort(key=lambda link: (link.kind != CONNECT, -link.evidence_position))
    return next((link.client_key for link in mine if link.client_key is not None), None)


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
) -> FastJSONResponse:
    uuid = parse_installation(installation_id)
    up_to = parse_as_of(as_of)
    events = await run_in_threadpool(store.read_stream, installation_stream_id(uuid), up_to)
    row = fold_installation(events)
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
    links = await run_in_threadpool(storage.load_rows, "links")
    answer = installation_object(row)
    answer["client_key"] = _client_key_at(links, uuid, up_to)
    return FastJSONResponse(answer)


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
    rows: list[LinkRow] = await run_in_threadpool(storage.load_rows, "links")
    chosen = [
        r
        for r in rows
        if (kind is None or r.kind == kind)
        and (client_key is None or r.client_key == client_key)
        and (wanted is None or wanted in (r.installation_id, r.previous_installation_id))
    ]
    chosen.sort(key=lambda r: r.evidence_position)
    return FastJSONResponse({"links": [link_object(r) for r in chosen]})


def migration_answer(storage: ProjectionStorage) -> dict[str, Any]:
    report = migration_report(
        storage.load_rows("tenants"),
        storage.load_rows("installations"),
        storage.load_rows("links"),
    )
    return {
        "linked": report.linked,
        "connect_only": [
            {
                "client_key": t.client_key,
                "base_url": t.base_url,
                "installation_id": t.installation_id,
                "installation_ari": installation_ari(t.installation_id)
                if t.installation_id
                else None,
            }
            for t in report.connect_only
        ],
        "forge_only": [installation_object(r) for r in report.forge_only],
    }


@router.get(
    "/migration",
    summary="How far the move from Connect to Forge has come",
    **documented(MigrationAnswer),
)
async def migration(
    store: StoreDep, storage: ProjectionsDep, min_position: MinPosition = None
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    return FastJSONResponse(await run_in_threadpool(migration_answer, storage))


def presumed_gone_answer(storage: ProjectionStorage, grace: timedelta) -> dict[str, Any]:
    """Presumed-gone tenants with the reason: ``silent`` (SPEC §6) or ``uninstalling``
    (their linked Forge installation sent ``pre-uninstall``, SPEC §10)."""
    tenants = storage.load_rows("tenants")
    silent = presumed_gone(tenants, storage.load_rows("descriptors"), utcnow(), grace)
    leaving = uninstalling(tenants, storage.load_rows("installations"))
    reasons: dict[str, list[str]] = {}
    rows = {}
    for reason, found in (("silent", silent), ("uninstalling", leaving)):
        for row in found:
            rows[row.client_key] = row
            reasons.setdefault(row.client_key, []).append(reason)
    return {
        "tenants": [{**tenant_object(rows[key]), "presumed": reasons[key]} for key in sorted(rows)]
    }


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
    min_position: MinPosition = None,
) -> FastJSONResponse:
    await caught_up(store, storage, min_position)
    answer = await run_in_threadpool(presumed_gone_answer, storage, timedelta(hours=grace_hours))
    return FastJSONResponse(answer)
