"""The FastAPI app factory: lifecycle webhooks, descriptor, health and metrics."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.bootstrap import running_service
from app.http import console, deps
from app.http.auth_failures import AuthFailures, FailureLimiter
from app.http.docs import add_docs_routes
from app.http.errors import install_error_handlers
from app.http.proxies import TrustedProxies
from app.http.routes import connect, operations
from app.http.routes import installations as admin_forge
from app.http.routes import tenants as admin
from app.http.routes.authority import add_authority_routes
from app.http.routes.forge import add_forge_routes
from app.ingest.connect.decider import LIFECYCLE_EVENTS
from app.logs import configure_logging
from app.metrics import Metrics, new_metrics
from app.settings import Settings
from app.version import version
from eventstore.store import EventStore

log = logging.getLogger("ledger.service")


def create_app(
    settings: Settings | None = None,
    store: EventStore | None = None,
    log_stream: IO[str] | None = None,
) -> FastAPI:
    """Build the service. ``store`` and the log stream may be injected (tests)."""
    settings = settings or Settings()
    metrics = new_metrics()
    app = FastAPI(
        title="Tenant ledger",
        version=version(),
        description=(
            "Verifies Atlassian Connect lifecycle calls and keeps every accepted call as "
            "immutable events. Secrets and tokens never appear in any answer."
        ),
        lifespan=_lifespan(settings, store, log_stream, metrics),
        docs_url=None,  # app.http.docs serves /docs and /redoc with local assets
        redoc_url=None,  # so does /redoc
    )
    app.state.auth_failures = AuthFailures(
        FailureLimiter(settings.auth_failures_per_minute), metrics.observe_auth_failure
    )
    app.add_middleware(TrustedProxies, networks=settings.trusted_proxy_networks)
    add_docs_routes(app)
    install_error_handlers(app, settings.retry_after_seconds)
    app.add_exception_handler(StarletteHTTPException, _error_body)  # type: ignore[arg-type]  # Starlette types handlers by the base Exception
    connect.add_descriptor_route(app, settings)
    for name in LIFECYCLE_EVENTS:
        connect.add_lifecycle_route(app, name, metrics, connect.install_payload_schema(settings.app_key))
    operations.add_operation_routes(app, settings, metrics)
    app.include_router(admin.router)
    app.include_router(console.router)
    app.include_router(admin_forge.router)
    add_forge_routes(app, metrics)
    app.include_router(console.front_door)
    add_authority_routes(app, metrics)
    return app


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(
    settings: Settings, store: EventStore | None, log_stream: IO[str] | None, metrics: Metrics
) -> Lifespan:
    """What the service holds for its life (``app.bootstrap``), on ``app.state`` for
    the routes (``app.http.deps``); an injected ``store`` is left open."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, stream=log_stream)
        try:
            async with running_service(settings, metrics, store) as service:
                deps.attach(app, service)
                yield
        finally:
            metrics.process_exiting()

    return lifespan


async def _error_body(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every error answer has the one shape {"error": code, "detail": words}."""
    if isinstance(exc.detail, dict) and "error" in exc.detail:
        body = exc.detail
    else:
        body = {"error": f"http_{exc.status_code}", "detail": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


