"""The HTTP edge of every lifecycle route, Connect and Forge alike: reading a capped
body, answering an ``Outcome`` (counted, timed and logged), and the route itself,
served without FastAPI's per-request work but documented like any route."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.ingest.json_body import MAX_BODY_BYTES
from app.ingest.outcome import Outcome, log_outcome
from app.metrics import Metrics


async def read_capped_body(request: Request) -> bytes:
    """The body, but never more than one byte past the limit (a 413 needs no more)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            break
    return b"".join(chunks)



def response_for(outcome: Outcome) -> Response:
    if outcome.status == 204:
        return Response(status_code=204)
    headers = {"Retry-After": str(outcome.retry_after)} if outcome.retry_after else None
    return JSONResponse(
        {"error": outcome.code, "detail": outcome.detail or outcome.code},
        status_code=outcome.status,
        headers=headers,
    )



def answer_call(
    metrics: Metrics,
    log: logging.Logger,
    message: str,
    subject_field: str,
    endpoint: str,
    outcome: Outcome,
    started: float,
) -> Response:
    """The end of every lifecycle route: count and time the call (from ``started``, a
    ``time.perf_counter()``), log it, and answer it."""
    elapsed = time.perf_counter() - started
    metrics.observe_call(endpoint, outcome, elapsed)
    log_outcome(log, message, subject_field, endpoint, outcome, elapsed)
    return response_for(outcome)



def add_call_route(
    app: FastAPI, path: str, endpoint: Callable[[Request], Awaitable[Response]], **documented: Any
) -> None:
    """A lifecycle route: documented by FastAPI (``add_api_route(path, endpoint,
    **documented)``, in the OpenAPI document as any route), served by a plain Starlette
    route placed just before it with the same endpoint.

    The endpoint takes the ``Request`` alone and returns a ``Response``, so FastAPI's
    per-request dependency solving and its wrappers would add nothing but CPU (about a
    twentieth of an accepted call's). A request the plain route does not take (another
    method) finds the documented route next, and the same 405 as before."""
    app.add_api_route(path, endpoint, methods=["POST"], **documented)
    routes = app.router.routes
    documented_at = next(
        i for i, r in enumerate(routes) if isinstance(r, APIRoute) and r.endpoint is endpoint
    )
    plain = Route(path, endpoint, methods=["POST"], name=documented.get("name"))
    routes.insert(documented_at, plain)

