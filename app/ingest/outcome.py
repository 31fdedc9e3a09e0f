"""What the Connect and Forge lifecycle shells share around one call: its ``Outcome``,
a ``Refusal`` raised before the decision, and the HTTP edge (reading a capped body,
answering an outcome, logging it). The shells decide; the routes only translate.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.routing import Route

from app.ingest.connect.body import MAX_BODY_BYTES
from app.metrics import Metrics

__all__ = [
    "Outcome",
    "Refusal",
    "add_call_route",
    "answer_call",
    "log_outcome",
    "read_capped_body",
    "response_for",
]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    code: str  # "accepted", "duplicate" or a refusal reason
    call_id: str
    detail: str | None = None
    subject: str | None = None  # the clientKey (Connect) or installation id (Forge)
    events: int = 0
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.code not in ("accepted", "duplicate")


class Refusal(Exception):
    """A call refused before its decision (body, token, key): an ``Outcome`` to be."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after


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


def log_outcome(
    log: logging.Logger, message: str, subject_field: str, endpoint: str, outcome: Outcome,
    elapsed: float,
) -> None:  # fmt: skip
    """One line per call; ``subject_field`` names the subject (client_key, installation_id).

    An accepted call's line is at DEBUG level (``LEDGER_LOG_LEVEL=debug`` shows it): the
    ledger itself records every accepted call, and a line written per call cost the hot
    path about a twentieth of its CPU. A refused call's line is at INFO."""
    level = logging.INFO if outcome.refused else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        message,
        extra={
            "call_id": outcome.call_id,
            "endpoint": endpoint,
            "outcome": "refused" if outcome.refused else outcome.code,
            "reason": outcome.code if outcome.refused else None,
            "status": outcome.status,
            subject_field: outcome.subject,
            "events": outcome.events,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )


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
