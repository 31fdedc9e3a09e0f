"""The console's routes: read-only HTML pages under ``/console`` behind a login.

Nothing here changes the ledger: every page is a GET; the only forms are the login
(sets the session cookie) and the logout (clears it). A page asked for without a
valid session answers 303 to the login form.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool

from app.http import deps
from app.http.console import auth, pages
from app.http.console.adoption import AdoptionSeries
from app.queries.readiness import runner_status
from app.settings import Settings
from eventstore.clock import format_timestamp
from eventstore.errors import StoreUnavailable
from eventstore.ids import installation_uuid
from eventstore.store import EventStore
from projections.storage.base import ProjectionStorage

router = APIRouter(prefix="/console", include_in_schema=False)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every value is escaped; only svg.py's charts are marked safe
    undefined=jinja2.StrictUndefined,
)
_env.globals["tenant_url"] = lambda key: "/console/tenants/" + quote(key, safe="")
_env.filters["ts"] = format_timestamp  # one text form of a time everywhere (UTC, Z)
templates = Jinja2Templates(env=_env)

# Inline styles only, nothing loaded from anywhere, no script at all, not framable.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_LOGIN_BODY = 4096
MAX_SEARCH = 200
MAX_KEY = 1024


def _printable(text: str) -> str:
    """Control characters never reach a query (PostgreSQL refuses NUL in text)."""
    return "".join(ch for ch in text if ch.isprintable())


def _render(
    request: Request, template: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    context = {"stalled": _stalled_projections(request), **context}
    return templates.TemplateResponse(
        request, template, context, status_code=status, headers=HEADERS
    )


def _stalled_projections(request: Request) -> dict[str, dict[str, Any]]:
    """The projections stopped at an event (SPEC §6), shown on every page: a person
    reading a stale read model is told which one and why."""
    runner = runner_status(deps.runner(request))
    projections = runner.get("projections") or {}
    return {
        name: progress["stalled"]
        for name, progress in sorted(projections.items())
        if isinstance(progress, dict) and progress.get("stalled")
    }


async def _page(
    request: Request, template: str, section: str, build: Callable[..., dict[str, Any]], *args: Any
) -> Response:
    """Check the session, build the page's context in a worker thread, render it."""
    if not auth.logged_in(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(
            "/console/login?next=" + quote(target, safe=""), status_code=303, headers=HEADERS
        )
    try:
        context = await run_in_threadpool(build, *args)
    except HTTPException as refused:
        detail = refused.detail.get("detail") if isinstance(refused.detail, dict) else None
        return _render(
            request,
            "problem.html",
            {"section": section, "title": "Not found", "detail": detail or "not found"},
            refused.status_code,
        )
    except StoreUnavailable:
        settings: Settings = deps.settings(request)
        response = _render(
            request,
            "problem.html",
            {"section": section, "title": "Store unavailable", "detail": "try again shortly"},
            503,
        )
        response.headers["Retry-After"] = str(settings.retry_after_seconds)
        return response
    return _render(request, template, {"section": section, **context})


def _store(request: Request) -> EventStore:
    store: EventStore = deps.store(request)
    return store


def _projections(request: Request) -> ProjectionStorage:
    storage: ProjectionStorage = deps.projections(request)
    return storage


# ------------------------------------------------------------------- pages


@router.get("")
async def tenants(
    request: Request, state: str = "", q: str = "", after: str | None = None
) -> Response:
    query = pages.TenantQuery(
        state=state if state in ("installed", "uninstalled") else None,
        search=_printable(q.strip())[:MAX_SEARCH] or None,
        after=_printable(after or "") or None,
    )
    return await _page(
        request, "tenants.html", "tenants", pages.tenants_page, _projections(request), query
    )


@router.get("/tenants/{client_key:path}")
async def tenant(request: Request, client_key: str, as_of: str = "") -> Response:
    if _printable(client_key) != client_key or len(client_key) > MAX_KEY:
        client_key = ""  # no stream has such a name; the page says "no such clientKey"
    return await _page(
        request,
        "tenant.html",
        "tenants",
        pages.tenant_view,
        _store(request),
        _projections(request),
        client_key,
        as_of.strip() or None,
    )


def _adoption(request: Request) -> AdoptionSeries:
    """This process's adoption series, kept in the app's state between page views."""
    series = getattr(request.app.state, "console_adoption", None)
    if series is None:
        series = request.app.state.console_adoption = AdoptionSeries()
    return series


@router.get("/descriptors")
async def descriptors(request: Request) -> Response:
    return await _page(
        request,
        "descriptors.html",
        "descriptors",
        pages.descriptors_page,
        _store(request),
        _projections(request),
        _adoption(request),
    )


@router.get("/installations")
async def installations(request: Request, state: str = "", after: str | None = None) -> Response:
    start = installation_uuid(_printable(after or "").strip()) if after else None
    return await _page(
        request,
        "installations.html",
        "installations",
        pages.installations_page,
        _projections(request),
        state if state in ("installed", "uninstalling") else None,
        start,
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
    return await _page(
        request,
        "presumed_gone.html",
        "presumed-gone",
        pages.presumed_gone_page,
        _projections(request),
        grace,
        _printable(after or "") or None,
    )


@router.get("/rejections")
async def rejections(request: Request) -> Response:
    return await _page(
        request, "rejections.html", "rejections", pages.rejections_page, _store(request)
    )


@router.get("/integrity")
async def integrity(request: Request) -> Response:
    return await _page(
        request, "integrity.html", "integrity", pages.integrity_page, _store(request)
    )


# ------------------------------------------------------------------- session


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:
    return _render(request, "login.html", _login_context(next, None))


@router.post("/login")
async def login(request: Request) -> Response:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            break
    form = parse_qs(body[:MAX_LOGIN_BODY].decode("utf-8", "replace"))
    presented = form.get("token", [""])[0]
    target = auth.safe_next(form.get("next", [""])[0])
    settings: Settings = deps.settings(request)
    if not auth.token_matches(settings, presented):
        problem = (
            "The console is closed: LEDGER_ADMIN_TOKEN is not set."
            if not auth.admin_token(settings)
            else "That is not the admin token."
        )
        return _render(request, "login.html", _login_context(target, problem), 401)
    response = RedirectResponse(target, status_code=303, headers=HEADERS)
    response.set_cookie(
        auth.COOKIE,
        auth.session_value(settings),
        max_age=auth.SESSION_SECONDS,
        path=auth.COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    response = RedirectResponse("/console/login", status_code=303, headers=HEADERS)
    response.delete_cookie(auth.COOKIE, path=auth.COOKIE_PATH, httponly=True, samesite="strict")
    return response


def _login_context(target: str, problem: str | None) -> dict[str, Any]:
    return {"section": "login", "next": auth.safe_next(target), "problem": problem}


@router.get("/erasure-due")
async def erasure_due(request: Request, after: str | None = None) -> Response:
    settings: Settings = deps.settings(request)
    return await _page(
        request,
        "erasure_due.html",
        "erasure-due",
        pages.erasure_due_page,
        _store(request),
        _projections(request),
        settings.erasure_after_days,
        _printable(after or "")[:MAX_KEY] or None,
    )
