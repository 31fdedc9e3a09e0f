"""The service's error boundary: every failure leaves as ``{"error", "detail"}`` JSON.

- Store trouble: ``StoreUnavailable`` is retryable (503 ``store_unavailable`` with
  ``Retry-After``); any other ``StoreError`` is a bug or a broken database (500).
- Bad parameters: FastAPI's validation errors become 400 ``bad_parameter``.
- Anything else is the last resort: 500 ``internal`` with a call id, and one error
  log line carrying that id and the exception's type. Never the exception's message
  (a library error can quote its input, a token or a secret), never the body.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventstore.errors import StoreError, StoreUnavailable

log = logging.getLogger("ledger.service")

_PARAMETER_LOCATIONS = frozenset({"query", "path", "header", "cookie"})


def store_unavailable_response(retry_after: int) -> JSONResponse:
    return JSONResponse(
        {"error": "store_unavailable", "detail": "the ledger's store is unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": str(retry_after)},
    )


def internal_error_response(request_path: str, exc: BaseException) -> JSONResponse:
    """A 500 that names a call id, and the one log line an operator finds it by."""
    call_id = uuid.uuid4().hex
    log.error(
        "unexpected error",
        exc_info=(type(exc), exc, None),  # the formatter writes the type only
        extra={"call_id": call_id, "endpoint": request_path, "status": 500},
    )
    return JSONResponse(
        {
            "error": "internal",
            "detail": "an unexpected error; quote the call id",
            "call_id": call_id,
        },
        status_code=500,
    )


def validation_detail(exc: RequestValidationError) -> tuple[str, str]:
    """(code, words) for FastAPI's validation errors; the input itself is never echoed."""
    errors = exc.errors()
    where = {str(error["loc"][0]) for error in errors if error.get("loc")}
    code = "bad_parameter" if where <= _PARAMETER_LOCATIONS else "invalid_request"
    words = "; ".join(
        f"{'.'.join(str(p) for p in error['loc'][1:]) or error['loc'][0]}: {error['msg']}"
        for error in errors
    )
    return code, words[:500]


def install_error_handlers(app: FastAPI, retry_after: int) -> None:
    @app.exception_handler(RequestValidationError)
    async def bad_parameter(request: Request, exc: RequestValidationError) -> JSONResponse:
        code, words = validation_detail(exc)
        return JSONResponse({"error": code, "detail": words}, status_code=400)

    @app.exception_handler(StoreUnavailable)
    async def unavailable(request: Request, exc: StoreUnavailable) -> JSONResponse:
        return store_unavailable_response(retry_after)

    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return internal_error_response(request.url.path, exc)

    app.add_middleware(LastResort)


class LastResort:
    """Pure ASGI middleware: an exception no handler took becomes a JSON 500.

    Starlette's own handler for ``Exception`` re-raises after answering, which makes
    the server log the traceback with the exception's message; this one does not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = internal_error_response(str(scope.get("path", "")), exc)
            if not started:  # half an answer is already out: the server closes the connection
                await response(scope, receive, send)
