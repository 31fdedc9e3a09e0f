"""The Connect routes (SPEC §4): the app descriptor and the four lifecycle callbacks."""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request, Response

from app.http import deps
from app.http.calls import add_call_route, answer_call, read_capped_body
from app.http.schemas import ErrorBody
from app.ingest.connect.decider import LIFECYCLE_EVENTS, LifecycleEvent
from app.ingest.connect.ingestor import CallRequest, LifecycleIngestor
from app.ingest.connect.tokens import relative_path
from app.metrics import Metrics
from app.settings import Settings

log = logging.getLogger("ledger.service")


LIFECYCLE_RESPONSES: dict[int | str, dict[str, Any]] = {
    204: {"description": "Accepted, or a repeat of an accepted call: nothing more to do."},
    400: {"model": ErrorBody, "description": "The body is malformed or not allowed."},
    401: {"model": ErrorBody, "description": "The token, its key or the app key is wrong."},
    409: {
        "model": ErrorBody,
        "description": (
            "The token is older than the tenant's last accepted call, or was already"
            " used with another body (token_reused)."
        ),
    },
    413: {"model": ErrorBody, "description": "The body is larger than 64 KiB."},
    503: {
        "model": ErrorBody,
        "description": "The key server or the store is unavailable; retry after Retry-After.",
    },
}



# Strings of a lifecycle body hold no control or non-printable character (app.ingest.json_body).
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



def add_descriptor_route(app: FastAPI, settings: Settings) -> None:
    @app.get("/atlassian-connect.json", tags=["connect"], summary="The app descriptor")
    def descriptor() -> dict[str, Any]:
        version = settings.descriptor_version
        mount = relative_path(settings.root_path or "/", settings.app_base_url).rstrip("/")
        return {
            "key": settings.app_key,
            "name": "Tenant ledger",
            "baseUrl": settings.app_base_url,
            "authentication": {"type": "jwt"},
            "apiMigrations": {"signed-install": True},
            # Relative to baseUrl; behind a proxy, under the ledger's mount (SPEC §11).
            "lifecycle": {name: f"{mount}/{name}?v={version}" for name in LIFECYCLE_EVENTS},
            "scopes": ["read"],
            "modules": {},
        }



def add_lifecycle_route(
    app: FastAPI, name: LifecycleEvent, metrics: Metrics, body_schema: dict[str, Any]
) -> None:
    async def lifecycle(request: Request) -> Response:
        started = time.perf_counter()
        body = await read_capped_body(request)
        ingestor: LifecycleIngestor = deps.connect_ingestor(request)
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

