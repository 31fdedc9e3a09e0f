"""The tenant authority's routes (SPEC §11): ``POST /auth/connect/verify``,
``/auth/connect/sign`` and ``/auth/forge/verify``, behind a service token.

The decisions are ``app.authority``'s; this module lets a call in (or not), counts it per
service in ``/metrics`` and answers JSON. Served like the lifecycle routes (a plain
Starlette route in front of the documented one): these routes sit on the hot path of
every page the vendor's app serves.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from fastapi import FastAPI, Request, Response

from app.authority.service_auth import ServiceDenied, service_caller
from app.authority.shell import ROUTES, AuthRequest, AuthRoute
from app.http import deps
from app.http.auth_failures import auth_failed, too_many
from app.http.calls import add_call_route, read_capped_body
from app.http.schemas import FastJSONResponse
from app.metrics import Metrics

log = logging.getLogger("ledger.authority")


def service_auth_failed(
    request: Request, denied: ServiceDenied, metrics: Metrics, endpoint: str
) -> Response:
    """The one answer to a call without a valid service token: logged (remote address,
    path, which credential; never the token) and counted per remote address by
    ``app.http.auth_failures`` (429 with ``Retry-After`` beyond the limit, as for the
    admin API and the console login), counted by endpoint and reason, and 401."""
    metrics.service_auth_failed(endpoint, denied.code)
    wait = auth_failed(request, "service_token")
    if wait is not None:
        refused = too_many(wait)
        return FastJSONResponse(refused.detail, status_code=429, headers=refused.headers)
    return FastJSONResponse(
        {"error": denied.code, "detail": denied.detail},
        status_code=401,
        headers={"WWW-Authenticate": "Bearer"},
    )


def add_authority_routes(app: FastAPI, metrics: Metrics) -> None:
    for route in ROUTES:
        _add_route(app, route, metrics)


def _add_route(app: FastAPI, route: AuthRoute, metrics: Metrics) -> None:
    endpoint = f"auth/{route}"

    async def auth_call(request: Request) -> Response:
        started = time.perf_counter()
        service = deps.service(request)
        caller = service_caller(
            request.headers.get("authorization"), service.settings.service_token_map
        )
        if isinstance(caller, ServiceDenied):
            return service_auth_failed(request, caller, metrics, endpoint)
        answer = await service.authority.handle(
            AuthRequest(
                route=route,
                path=request.scope["path"],
                body=await read_capped_body(request),
                content_type=request.headers.get("content-type"),
                remote_addr=request.client.host if request.client else None,
            )
        )
        metrics.observe_service_call(
            caller, endpoint, answer.code, answer.status, time.perf_counter() - started
        )
        headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after else None
        return FastJSONResponse(answer.body, status_code=answer.status, headers=headers)

    add_call_route(
        app,
        f"/auth/{route}",
        auth_call,
        status_code=200,
        tags=["tenant authority"],
        summary=DOCS[route]["summary"],
        description=DOCS[route]["description"],
        responses=_responses(route),
        response_class=FastJSONResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": DOCS[route]["schema"],
                        "examples": DOCS[route]["examples"],
                    }
                },
            },
            "parameters": [
                {
                    "name": "Authorization",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Bearer <service token> (LEDGER_SERVICE_TOKENS)",
                }
            ],
        },
        name=f"auth_{route.replace('/', '_')}",
    )


_ERROR: Final = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def _error(description: str, *examples: tuple[str, str]) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": _ERROR,
                "examples": {
                    code: {"value": {"error": code, "detail": words}} for code, words in examples
                },
            }
        },
    }


def _responses(route: AuthRoute) -> dict[int | str, dict[str, Any]]:
    ok = {
        "description": "Verified (or signed).",
        "content": {"application/json": {"example": DOCS[route]["answer"]}},
    }
    responses: dict[int | str, dict[str, Any]] = {
        200: ok,
        400: _error(
            "The body is not a JSON object of the documented fields, or the URL is refused.",
            (
                "invalid_request",
                "method must be one of DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
            ),
            ("foreign_url", "the URL is not under the tenant's base URL"),
        ),
        401: _error(
            "No valid service token, or the request from Atlassian does not verify.",
            ("service_api_closed", "the service API is closed: LEDGER_SERVICE_TOKENS is not set"),
            ("bad_qsh", "the token's qsh does not match this request"),
        ),
        413: _error(
            "The body is larger than 64 KiB.", ("body_too_large", "the body is larger than 64 KiB")
        ),
        503: _error(
            "A key the decision needs cannot be read now; retry after Retry-After.",
            (
                "master_key_unavailable",
                "the master key of this tenant is not configured; retry later",
            ),
        ),
    }
    if route == "connect/sign":
        responses[404] = _error(
            "No such tenant.", ("unknown_tenant", "the ledger holds no such tenant")
        )
        responses[409] = _error(
            "The tenant cannot be signed for.",
            ("tenant_uninstalled", "the tenant is uninstalled"),
            ("no_shared_secret", "the ledger holds no readable secret for this tenant"),
        )
    return responses


_TENANT_EXAMPLE: Final = {
    "client_key": "7b5e6a1c-1d2f-4a8b-9c3d-0e1f2a3b4c5d",
    "base_url": "https://example.atlassian.net",
    "display_url": "https://example.atlassian.net",
    "product_type": "jira",
    "state": "installed",
    "enabled": True,
    "descriptor_version": "1",
    "installed_at": "2026-12-01T09:00:00.000000Z",
    "updated_at": "2026-12-01T09:00:00.000000Z",
    "last_seen_at": "2026-12-01T09:00:00.000000Z",
    "version": 1,
    "installation_id": None,
    "forgotten_at": None,
    "forgotten_by": None,
}
_METHOD: Final = {
    "type": "string",
    "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"],
}
DOCS: Final[dict[str, dict[str, Any]]] = {
    "connect/verify": {
        "summary": "Is this request from an Atlassian site genuine, and for which tenant?",
        "description": (
            "The request the app received: `url` is its path and query (relative to the"
            " app's base URL, or absolute under the current or a previous one). The token is"
            " `authorization` (`JWT <token>`) or the `jwt` parameter of `url`. HS256 with the"
            " tenant's current secret; `qsh` of (method, url), or `context-qsh` when"
            " `context` is true (tokens from `AP.context.getToken()`)."
        ),
        "schema": {
            "type": "object",
            "properties": {
                "method": _METHOD,
                "url": {"type": "string", "maxLength": 8192},
                "authorization": {"type": "string"},
                "context": {"type": "boolean", "default": False},
            },
        },
        "examples": {
            "page": {
                "summary": "A page load",
                "value": {
                    "method": "GET",
                    "url": "/issue-panel?lic=active&jwt=eyJ...",
                    "context": False,
                },
            },
            "context": {
                "summary": "A context token from AP.context.getToken()",
                "value": {"authorization": "JWT eyJ...", "context": True},
            },
        },
        "answer": {
            "client_key": _TENANT_EXAMPLE["client_key"],
            "account_id": "557058:f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9",
            "license": "active",
            "expires_at": "2026-12-08T10:03:00.000000Z",
            "tenant": _TENANT_EXAMPLE,
        },
    },
    "connect/sign": {
        "summary": "Sign the app's request to a tenant's site",
        "description": (
            "`url`: a path relative to the tenant's base URL, or an absolute URL under it;"
            " any other host is refused (`foreign_url`). HS256 with the tenant's current"
            " secret, `iss` = the app key; `expires_in` 30-600 s (default 180)."
        ),
        "schema": {
            "type": "object",
            "required": ["client_key", "method", "url"],
            "properties": {
                "client_key": {"type": "string", "minLength": 1, "maxLength": 255},
                "method": _METHOD,
                "url": {"type": "string", "maxLength": 8192},
                "expires_in": {"type": "integer", "minimum": 30, "maximum": 600, "default": 180},
            },
        },
        "examples": {
            "myself": {
                "summary": "Who is the app's user on this site?",
                "value": {
                    "client_key": _TENANT_EXAMPLE["client_key"],
                    "method": "GET",
                    "url": "/rest/api/3/myself",
                },
            }
        },
        "answer": {
            "url": "https://example.atlassian.net/rest/api/3/myself",
            "authorization": "JWT eyJ...",
            "expires_at": "2026-12-08T10:03:00.000000Z",
        },
    },
    "forge/verify": {
        "summary": "Is this Forge invocation genuine, and for which installation?",
        "description": (
            "`authorization`: the `Authorization` header (`Bearer <FIT>`) of a request Forge"
            " sent to one of the app's remote endpoints, verified as the Forge lifecycle"
            " calls are (JWKS, RS256, the app's id). An installation the ledger has not seen"
            " yet is still verified (`client_keys: []`)."
        ),
        "schema": {
            "type": "object",
            "required": ["authorization"],
            "properties": {"authorization": {"type": "string"}},
        },
        "examples": {
            "fit": {"summary": "A remote call", "value": {"authorization": "Bearer eyJ..."}}
        },
        "answer": {
            "installation_id": "0b6b8d3e-5f4a-4c2b-9d1e-2f3a4b5c6d7e",
            "installation_ari": "ari:cloud:ecosystem::installation/0b6b8d3e-5f4a-4c2b-9d1e-2f3a4b5c6d7e",
            "cloud_ids": ["a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"],
            "app_version": "2.1.0",
            "environment_type": "PRODUCTION",
            "license": {"active": True, "type": "commercial"},
            "principal": "557058:f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9",
            "client_keys": [_TENANT_EXAMPLE["client_key"]],
        },
    },
}
