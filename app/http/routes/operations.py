"""The operations routes (SPEC §7): ``/healthz``, ``/readyz`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from app.http import deps
from app.http.schemas import ErrorBody, Status
from app.metrics import CONTENT_TYPE, Metrics
from app.queries.readiness import Readiness, runner_status
from app.settings import Settings
from eventstore.errors import StoreUnavailable


def add_operation_routes(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
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
            await run_in_threadpool(deps.store(request).ping)
        except StoreUnavailable:
            return JSONResponse(
                {"error": "store_unavailable", "detail": "the store cannot be reached"},
                status_code=503,
                headers={"Retry-After": str(settings.retry_after_seconds)},
            )
        runner = runner_status(deps.runner(request))
        degraded = bool(runner.get("degraded"))
        return Readiness.model_validate(
            {"status": "ready", "degraded": degraded, "runner": runner}
        )

    @app.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics_text() -> Response:
        # Every worker's counts, whichever worker answers (app.metrics).
        return Response(metrics.render(), media_type=CONTENT_TYPE)

