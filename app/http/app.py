"""The FastAPI app factory: lifecycle webhooks, descriptor, health and metrics."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import IO, Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.http import console
from app.http.errors import install_error_handlers
from app.http.routes import installations as admin_forge
from app.http.routes import tenants as admin
from app.http.routes.forge import add_forge_routes
from app.ingest.connect.decider import LIFECYCLE_EVENTS, LifecycleEvent
from app.ingest.connect.ingestor import CallRequest, LifecycleIngestor
from app.ingest.connect.keys import InstallKeyFetcher
from app.ingest.forge.ingestor import ForgeIngestor
from app.ingest.forge.keys import JwksFetcher
from app.ingest.outcome import add_call_route, answer_call, read_capped_body
from app.logs import configure_logging
from app.metrics import CONTENT_TYPE, Metrics, new_metrics
from app.queries.readiness import Readiness, RunnerView, runner_status
from app.settings import Settings
from eventstore import open_store
from eventstore.crypto import KeyRing
from eventstore.errors import StoreUnavailable
from eventstore.store import EventStore
from projections.backends import storage_for
from projections.health import StateFile
from projections.runner import RunnerThread

log = logging.getLogger("ledger.service")


class ErrorBody(BaseModel):
    error: str
    detail: str


class Status(BaseModel):
    status: str


LIFECYCLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Accepted, or a repeat of an accepted call: nothing more to do."},
    400: {"model": ErrorBody, "description": "The body is malformed or not allowed."},
    401: {"model": ErrorBody, "description": "The token, its key or the app key is wrong."},
    409: {
        "model": ErrorBody,
        "description": "The token is older than the tenant's last accepted call.",
    },
    413: {"model": ErrorBody, "description": "The body is larger than 64 KiB."},
    503: {
        "model": ErrorBody,
        "description": "The key server or the store is unavailable; retry after Retry-After.",
    },
}

# Strings of a lifecycle body hold no control or non-printable character (app.payload).
PRINTABLE = "^[^\\x00-\\x1f\\x7f-\\x9f\\u202a-\\u202e\\u2066-\\u2069]*$"


def install_payload_schema(app_key: str) -> dict[str, Any]:
    """The lifecycle body as rule 1 checks it (the document tells the truth)."""
    return {
        "type": "object",
        "required": ["key", "clientKey", "baseUrl"],
        "properties": {
            "key": {"type": "string", "enum": [app_key], "description": "LEDGER_APP_KEY"},
            "clientKey": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": PRINTABLE},
            "baseUrl": {"type": "string", "format": "uri", "maxLength": 2048},
            "sharedSecret": {
                "type": "string",
                "maxLength": 1024,
                "description": "installed only; stored encrypted",
            },
            "displayUrl": {"type": "string"},
            "productType": {"type": "string"},
            "description": {"type": "string"},
            "eventType": {"type": "string"},
        },
        "additionalProperties": True,
    }


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
        version="0.1.0",
        description=(
            "Verifies Atlassian Connect lifecycle calls and keeps every accepted call as "
            "immutable events. Secrets and tokens never appear in any answer."
        ),
        lifespan=_lifespan(settings, store, log_stream, metrics),
    )
    app.state.metrics = metrics
    install_error_handlers(app, settings.retry_after_seconds)
    app.add_exception_handler(StarletteHTTPException, _error_body)  # type: ignore[arg-type]  # Starlette types handlers by the base Exception
    _add_descriptor_route(app, settings)
    for name in LIFECYCLE_EVENTS:
        _add_lifecycle_route(app, name, metrics, install_payload_schema(settings.app_key))
    _add_operation_routes(app, settings, metrics)
    app.include_router(admin.router)
    app.include_router(console.router)
    app.include_router(admin_forge.router)
    add_forge_routes(app, metrics)
    return app


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]


def _lifespan(
    settings: Settings, store: EventStore | None, log_stream: IO[str] | None, metrics: Metrics
) -> Lifespan:
    """Open what the service holds for its life (store, key fetchers, ingestors, the
    projection runner) and close it again; an injected ``store`` is left open."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level, stream=log_stream)
        opened = store
        if opened is None:
            opened = await run_in_threadpool(
                open_store,
                settings.database_url,
                rejection_retention_days=settings.rejection_retention_days,
            )
        fetcher = InstallKeyFetcher(
            settings.install_keys_url, metrics=metrics.key_source("install_keys")
        )
        keyring = KeyRing(opened, settings.master_keys())
        # The hot path's own async access to the log, with group commit.
        log = opened.async_log(on_batch=metrics.observe_append_batch)
        await log.open()
        app.state.settings = settings
        app.state.store = opened
        app.state.keyring = keyring
        app.state.ingestor = LifecycleIngestor(settings, opened, log, keyring, fetcher)
        jwks = JwksFetcher(settings.forge_jwks_url_list, metrics=metrics.key_source("forge_jwks"))
        app.state.forge = ForgeIngestor(settings, opened, log, jwks)
        storage = storage_for(opened)
        await run_in_threadpool(storage.ensure)
        app.state.projections = storage
        runner = _runner_thread(settings, opened, metrics)
        app.state.runner = _runner_view(settings, runner)
        try:
            yield
        finally:
            if runner is not None:
                await run_in_threadpool(runner.stop)
            await fetcher.aclose()
            await app.state.forge.aclose()
            await log.aclose()
            if store is None:
                opened.close()
            metrics.process_exiting()

    return lifespan


def _runner_thread(settings: Settings, store: EventStore, metrics: Metrics) -> RunnerThread | None:
    """The projection runner in a thread of this process, unless it runs none or its
    ``ledger serve`` runs the projections in a process of their own (off the HTTP
    workers' CPU and GIL)."""
    if not settings.run_projections or settings.projection_state_file is not None:
        return None
    return RunnerThread(store, health=metrics.runner_health()).start()


def _runner_view(settings: Settings, thread: RunnerThread | None) -> RunnerView | None:
    """Where /readyz reads the runner's state: this process's thread, or the file the
    runner process of this serve publishes."""
    if thread is None and settings.run_projections and settings.projection_state_file:
        return StateFile(settings.projection_state_file)
    return thread


async def _error_body(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Every error answer has the one shape {"error": code, "detail": words}."""
    if isinstance(exc.detail, dict) and "error" in exc.detail:
        body = exc.detail
    else:
        body = {"error": f"http_{exc.status_code}", "detail": str(exc.detail)}
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def _add_descriptor_route(app: FastAPI, settings: Settings) -> None:
    @app.get("/atlassian-connect.json", tags=["connect"], summary="The app descriptor")
    def descriptor() -> dict[str, Any]:
        version = settings.descriptor_version
        return {
            "key": settings.app_key,
            "name": "Tenant ledger",
            "baseUrl": settings.app_base_url,
            "authentication": {"type": "jwt"},
            "apiMigrations": {"signed-install": True},
            "lifecycle": {name: f"/{name}?v={version}" for name in LIFECYCLE_EVENTS},
            "scopes": ["read"],
            "modules": {},
        }


def _add_operation_routes(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    @app.get("/healthz", tags=["operations"], response_model=Status)
    def healthz() -> Status:
        return Status(status="ok")

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=Readiness,
        responses={503: {"model": ErrorBody, "description": "The store cannot be reached."}},
    )
    async def readyz(request: Request) -> Any:
        try:
            await run_in_threadpool(request.app.state.store.ping)
        except StoreUnavailable:
            return JSONResponse(
                {"error": "store_unavailable", "detail": "the store cannot be reached"},
                status_code=503,
                headers={"Retry-After": str(settings.retry_after_seconds)},
            )
        runner = runner_status(request.app.state.runner)
        degraded = bool(runner.get("degraded"))
        return Readiness.model_validate(
            {"status": "ready", "degraded": degraded, "runner": runner}
        )

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_text() -> Response:
        # Every worker's counts, whichever worker answers (app.metrics).
        return Response(metrics.render(), media_type=CONTENT_TYPE)


def _add_lifecycle_route(
    app: FastAPI, name: LifecycleEvent, metrics: Metrics, body_schema: dict[str, Any]
) -> None:
    async def lifecycle(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_capped_body(request)
        ingestor: LifecycleIngestor = request.app.state.ingestor
        outcome = await ingestor.handle(
            CallRequest(
                event=name,
                path=request.scope["path"],  # what request.url.path holds, without building a URL
                query=list(request.query_params.multi_items()),
                authorization=request.headers.get("authorization"),
                content_type=request.headers.get("content-type"),
                body=body,
                remote_addr=request.client.host if request.client else None,
            )
        )
        return answer_call(metrics, log, "lifecycle call", "client_key", name, outcome, started)

    add_call_route(
        app,
        f"/{name}",
        lifecycle,
        status_code=204,
        tags=["lifecycle"],
        summary=f"Atlassian Connect `{name}` lifecycle callback",
        responses=LIFECYCLE_RESPONSES,
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            },
            "parameters": [
                {
                    "name": "v",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "The descriptor version the host runs.",
                },
                {
                    "name": "Authorization",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "JWT <token> (or the jwt query parameter)",
                },
            ],
        },
        name=name,
    )
