"""The console's pages for the views SPEC §7 added beside the first ones: links,
reimports, the Connect → Forge migration, presumed gone, rejections, the latest events
and integrity (with "verify now"). Registered on ``routes.router``; the helpers (session
check, rendering, downloads) are ``routes``'s.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from app.http.console import auth, pages, views
from app.http.console.routes import (
    HEADERS,
    MAX_KEY,
    _choice,
    _kept,
    _listed,
    _number,
    _page,
    _projections,
    _render,
    _store,
    _text,
    router,
)
from app.queries import lists, reads
from app.queries.burn_down import BurnDownSeries
from eventstore.clock import format_timestamp, utcnow
from eventstore.errors import StoreUnavailable
from eventstore.ids import installation_uuid


@router.get("/links")
async def links(
    request: Request,
    kind: str = "",
    client_key: str = "",
    installation_id: str = "",
    offset: str = "",
) -> Response:
    wanted = _text(installation_id, MAX_KEY)
    query = views.LinkQuery(
        kind=_choice(kind, ("connect", "reinstall")),
        client_key=_text(client_key, MAX_KEY),
        installation_id=(installation_uuid(wanted) or "-") if wanted else None,
    )
    storage = _projections(request)
    return await _listed(
        request,
        "links.html",
        "links",
        views.links_page,
        lambda: views.links_listing(storage, query),
        storage,
        query,
        _number(offset),
    )


@router.get("/reimports")
async def reimports(
    request: Request, kind: str = "", client_key: str = "", offset: str = ""
) -> Response:
    query = views.ReimportQuery(
        kind=_choice(kind, ("reimport", "url_reused")), client_key=_text(client_key, MAX_KEY)
    )
    storage = _projections(request)
    return await _listed(
        request,
        "reimports.html",
        "reimports",
        views.reimports_page,
        lambda: views.reimports_listing(storage, query),
        storage,
        query,
        _number(offset),
    )


@router.get("/migration")
async def migration(request: Request, part: str = "", offset: str = "") -> Response:
    storage = _projections(request)
    chosen = _choice(part, ("connect_only", "forge_only")) or "connect_only"
    return await _listed(
        request,
        "migration.html",
        "migration",
        views.migration_page,
        lambda: views.migration_listing(storage, chosen),
        _store(request),
        storage,
        _kept(request, "console_burn_down", BurnDownSeries),
        _number(offset),
    )


@router.get("/presumed-gone")
async def presumed_gone(
    request: Request, grace_hours: str = "24", after: str | None = None
) -> Response:
    try:
        grace = float(grace_hours)
    except ValueError:
        grace = 24.0
    grace = grace if 0 < grace <= 24 * 366 else 24.0
    storage = _projections(request)
    return await _listed(
        request,
        "presumed_gone.html",
        "presumed-gone",
        pages.presumed_gone_page,
        lambda: views.presumed_gone_listing(storage, grace),
        storage,
        grace,
        _text(after, MAX_KEY),
    )


@router.get("/rejections")
async def rejections(
    request: Request, reason: str = "", since: str = "", client_key: str = "", offset: str = ""
) -> Response:
    store = _store(request)
    try:
        where = lists.RejectionFilter(
            reason=_text(reason, 100),
            since=views.parse_since(_text(since, 64) or ""),
            client_key=_text(client_key, MAX_KEY),
        )
    except reads.BadParameter as refused:
        problem = refused.detail
        return await _page(request, "problem.html", "rejections", lambda: _bad(problem))
    return await _listed(
        request,
        "rejections.html",
        "rejections",
        views.rejections_page,
        lambda: views.rejections_listing(store, where),
        store,
        _projections(request),
        where,
        _number(offset, top=10_000_000),
    )


def _bad(detail: str) -> dict[str, Any]:
    raise HTTPException(400, {"error": "bad_parameter", "detail": detail})


@router.get("/events")
async def events(request: Request, before: str = "") -> Response:
    store = _store(request)
    start = _number(before, default=0) or None
    return await _listed(
        request,
        "events.html",
        "events",
        views.events_page,
        lambda: views.events_listing(store, start),
        store,
        start,
    )


@router.get("/integrity")
async def integrity(request: Request) -> Response:
    last = getattr(request.app.state, "console_verification", None)
    return await _page(
        request, "integrity.html", "integrity", pages.integrity_page, _store(request), last
    )


_verifying = threading.Lock()  # one verification at a time per process


@router.post("/integrity")
async def verify_now(request: Request) -> Response:
    """Recompute the chain now (a person asked) and show the result on the page.

    A state-changing request of a sort (it costs a full read of the log), so it is
    guarded against cross-site requests: the session cookie is SameSite=Strict, and
    the request must come from this console (Origin, or Sec-Fetch-Site when the
    browser sends Origin as "null")."""
    if not auth.logged_in(request):
        return RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    if not auth.same_origin(request):
        return _render(
            request,
            "problem.html",
            {"section": "integrity", "title": "Refused", "detail": "not from this console"},
            403,
        )
    if _verifying.acquire(blocking=False):
        try:
            store = _store(request)
            started = time.monotonic()
            answer = await run_in_threadpool(reads.verify_answer, store)
            request.app.state.console_verification = {
                **answer,
                "at": format_timestamp(utcnow()),
                "seconds": round(time.monotonic() - started, 3),
            }
        except StoreUnavailable:
            pass  # the page shows the previous result; the person may try again
        finally:
            _verifying.release()
    return RedirectResponse("/console/integrity", status_code=303, headers=HEADERS)
