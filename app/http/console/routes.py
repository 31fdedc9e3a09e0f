"""The console's routes: read-only HTML pages under ``/console`` behind a login.

Nothing here changes the ledger: every page is a GET; the only forms are the login
(sets the session cookie) and the logout (clears it). A page asked for without a
valid session answers 303 to the login form.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import jinja2
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from starlette.concurrency import run_in_threadpool

from app.http import deps
from app.http.auth_failures import auth_failed
from app.http.console import auth, export, pages, views
from app.http.console.adoption import AdoptionSeries
from app.http.console.nav import NAV
from app.queries import lists, reads
from app.queries.readiness import runner_status
from app.settings import Settings
from eventstore.clock import format_timestamp
from eventstore.errors import StoreUnavailable
from eventstore.ids import installation_uuid
from eventstore.store import EventStore
from projections.storage.base import ProjectionStorage

router = APIRouter(prefix="/console", include_in_schema=False)
COOKIE_HOME: Final = "/console"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True,  # every value is escaped; only svg.py's charts are marked safe
    undefined=jinja2.StrictUndefined,
)
_env.globals["tenant_url"] = lambda key: "/console/tenants/" + quote(key, safe="")
_env.globals["installation_url"] = lambda uuid: "/console/installations/" + quote(uuid, safe="")
_env.globals["evidence_url"] = lambda stream, position: _evidence_url(stream, position)
_env.globals["nav"] = NAV
_env.filters["ts"] = format_timestamp  # one text form of a time everywhere (UTC, Z)
_env.filters["when"] = lambda value: _when(value)
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
MAX_POSITION = 2**63 - 1


def _when(value: datetime | None) -> Markup:
    """A time in a list, to the second; the full time (microseconds) on hover and in
    the ``datetime`` attribute (downloads and the timelines carry it in full)."""
    if value is None:
        return Markup("—")
    full = format_timestamp(value)
    shown = full[:19].replace("T", " ") + "Z"
    return Markup('<time datetime="{0}" title="{0}">{1}</time>').format(full, shown)


def _evidence_url(stream: str, position: int) -> str | None:
    """The page that shows the event at ``position`` of ``stream`` (at its anchor)."""
    link = lists.stream_link(stream)
    if link is None:
        return None
    kind, identity = link
    return f"/console/{kind}s/{quote(identity, safe='')}#p{position}"


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
            {
                "section": section,
                "title": "Not found" if refused.status_code == 404 else "Bad request",
                "detail": detail or "not found",
            },
            refused.status_code,
        )
    except reads.BadParameter as refused:
        return _render(
            request,
            "problem.html",
            {"section": section, "title": "Bad request", "detail": refused.detail},
            400,
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


# ------------------------------------------------------------------- helpers


def _text(value: str | None, limit: int = MAX_SEARCH) -> str | None:
    """A query parameter as text a query may hold, or None when empty."""
    return _printable((value or "").strip())[:limit] or None


def _number(value: str | None, default: int = 0, top: int = MAX_POSITION) -> int:
    text = (value or "").strip()
    return min(int(text), top) if text.isascii() and text.isdigit() and len(text) < 20 else default


def _choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    return value if value in allowed else None


async def _listed(
    request: Request,
    template: str,
    section: str,
    build: Callable[..., dict[str, Any]],
    listing: Callable[[], views.Listing],
    *args: Any,
) -> Response:
    """The page; or, with ``?format=csv`` or ``json``, every row of the page's query as
    a download (streamed; the first row is read before answering, so a store that is
    down answers 503 rather than a cut file)."""
    fmt = request.query_params.get("format")
    if fmt not in export.FORMATS or not auth.logged_in(request):
        return await _page(request, template, section, build, *args)
    try:
        made, first = await run_in_threadpool(_first_row, listing)
    except (StoreUnavailable, reads.BadParameter, HTTPException):
        return await _page(request, template, section, build, *args)
    rows = made.rows if first is None else itertools.chain([first], made.rows)
    return export.download(made.name, fmt, rows, made.columns, HEADERS)


def _first_row(
    listing: Callable[[], views.Listing],
) -> tuple[views.Listing, dict[str, Any] | None]:
    made = listing()
    rows = iter(made.rows)
    first = next(rows, None)
    return views.Listing(made.name, made.columns, rows), first


def _download_url(request: Request, fmt: str) -> str:
    """This page's query with ``format`` set and its paging cursor left out: a
    download holds every row, not the page."""
    kept = [
        (k, v)
        for k, v in request.query_params.multi_items()
        if k not in ("format", "after", "offset", "before")
    ]
    return request.url.path + "?" + urlencode([*kept, ("format", fmt)])


_env.globals["download_url"] = _download_url


# ------------------------------------------------------------------- pages


@router.get("")
async def tenants(
    request: Request, state: str = "", q: str = "", after: str | None = None
) -> Response:
    query = pages.TenantQuery(
        state=_choice(state, ("installed", "uninstalled")),
        search=_text(q),
        after=_text(after, MAX_KEY),
    )
    storage = _projections(request)
    return await _listed(
        request,
        "tenants.html",
        "tenants",
        pages.tenants_page,
        lambda: views.tenants_listing(storage, query.state, query.search),
        storage,
        query,
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


def _kept(request: Request, name: str, factory: Callable[[], Any]) -> Any:
    """A per-process series kept in the app's state between page views."""
    kept = getattr(request.app.state, name, None)
    if kept is None:
        kept = factory()
        setattr(request.app.state, name, kept)
    return kept


@router.get("/descriptors")
async def descriptors(request: Request) -> Response:
    storage = _projections(request)
    return await _listed(
        request,
        "descriptors.html",
        "descriptors",
        pages.descriptors_page,
        lambda: views.descriptors_listing(storage),
        _store(request),
        storage,
        _kept(request, "console_adoption", AdoptionSeries),
    )


@router.get("/installations")
async def installations(request: Request, state: str = "", after: str | None = None) -> Response:
    start = installation_uuid(_printable(after or "").strip()) if after else None
    chosen = _choice(state, ("installed", "uninstalling"))
    storage = _projections(request)
    return await _listed(
        request,
        "installations.html",
        "installations",
        pages.installations_page,
        lambda: views.installations_listing(storage, chosen),
        storage,
        chosen,
        start,
    )


def _no_installation() -> dict[str, Any]:
    raise HTTPException(404, {"error": "unknown_installation", "detail": "no such Forge installation"})


@router.get("/installations/{installation_id:path}")
async def installation(request: Request, installation_id: str, as_of: str = "") -> Response:
    uuid = installation_uuid(_printable(installation_id).strip()[:MAX_KEY])
    if uuid is None:
        return await _page(request, "installation.html", "installations", _no_installation)
    return await _page(
        request,
        "installation.html",
        "installations",
        views.installation_view,
        _store(request),
        _projections(request),
        uuid,
        _text(as_of, 64),
    )


# ------------------------------------------------------------------- session


CLOSED: Final = "The console is closed: LEDGER_ADMIN_TOKEN is not set."

# `/` leads to the console: a person who opens the service's address lands somewhere.
front_door = APIRouter(include_in_schema=False)


@front_door.get("/")
async def root() -> Response:
    return RedirectResponse(COOKIE_HOME, status_code=307, headers=HEADERS)


@router.get("/login")
async def login_form(request: Request, next: str = "") -> Response:
    # Said before anyone types: with no admin token configured nobody can log in.
    closed = not auth.admin_token(deps.settings(request))
    return _render(request, "login.html", _login_context(next, CLOSED if closed else None))


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
        wait = auth_failed(request, "console_login")
        if wait is not None:
            problem = f"Too many failed logins from your address; try again in {wait} s."
            page = _render(request, "login.html", _login_context(target, problem), 429)
            page.headers["Retry-After"] = str(wait)
            return page
        problem = CLOSED if not auth.admin_token(settings) else "That is not the admin token."
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
