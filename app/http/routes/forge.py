"""The Forge lifecycle routes (SPEC §10): ``POST /forge/installed``, ``/forge/upgraded``,
``/forge/pre-uninstall``. Answers 204 / 400 / 401 / 413 / 503, never a 3xx."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response

from app.http import deps
from app.http.calls import add_call_route, answer_call, read_capped_body
from app.ingest.forge.body import ROUTES, Route
from app.ingest.forge.ingestor import ForgeIngestor, ForgeRequest
from app.metrics import Metrics

log = logging.getLogger("ledger.forge")

TRIGGERS: dict[Route, str] = {
    "installed": "trigger `avi:forge:installed:app`",
    "upgraded": "trigger `avi:forge:upgraded:app`",
    "pre-uninstall": "the `preUninstall` module",
}

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}
RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Recorded, or a repeat of a recorded delivery."},
    400: {
        "description": "The body is malformed.",
        "content": {"application/json": {"schema": _ERROR}},
    },
    401: {
        "description": "Forge is not configured, or the token or the body does not verify.",
        "content": {"application/json": {"schema": _ERROR}},
    },
    413: {"description": "The body is larger than 64 KiB."},
    503: {"description": "The JWKS or the store is unavailable; retry after Retry-After."},
}


def add_forge_routes(app: FastAPI, metrics: Metrics) -> None:
    for route in ROUTES:
        _add_route(app, route, metrics)


def _add_route(app: FastAPI, route: Route, metrics: Metrics) -> None:
    endpoint = f"forge/{route}"

    async def forge_call(request: Request) -> Response:
        started = time.perf_counter()
        ingestor: ForgeIngestor = deps.forge_ingestor(request)
        outcome = await ingestor.handle(
            ForgeRequest(
                route=route,
                path=request.scope["path"],  # what request.url.path holds, without building a URL
                authorization=request.headers.get("authorization"),
                content_type=request.headers.get("content-type"),
                body=await read_capped_body(request),
                remote_addr=request.client.host if request.client else None,
                trace_id=request.headers.get("x-b3-traceid"),
            )
        )
        return answer_call(
            metrics, log, "forge call", "installation_id", endpoint, outcome, started
        )

    add_call_route(
        app,
        f"/forge/{route}",
        forge_call,
        status_code=204,
        tags=["forge"],
        summary=f"Forge lifecycle: {TRIGGERS[route]}",
        responses=RESPONSES,
        response_class=Response,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        name=f"forge_{route.replace('-', '_')}",
    )
    # Forge counts a redirect as a failure: answer a trailing slash here rather than
    # let the router redirect it.
    app.add_api_route(
        f"/forge/{route}/",
        forge_call,
        methods=["POST"],
        status_code=204,
        response_class=Response,
        include_in_schema=False,
    )
