"""The example vendor app: a Connect page verified through the ledger, and a call to the
tenant's site signed by the ledger.

``create_app(ledger_url, service_token, site_base=None)`` builds it:

* ``GET /panel`` is a Connect module page. Atlassian loads it with a ``jwt`` parameter;
  the app sends the request's method and URL to ``POST /auth/connect/verify`` and learns
  which tenant (and user, and license) it is for. It then asks ``POST
  /auth/connect/sign`` for a token to call the site's ``GET /rest/api/3/myself`` and
  makes that call itself.
* ``GET /context`` serves the app's own front end: a token from ``AP.context.getToken()``
  in ``Authorization: JWT ...``, verified with ``"context": true``.
* ``GET /atlassian-connect.json`` is the app's descriptor: its lifecycle URLs name the
  ledger's routes (the proxy sends them there), so the ledger receives every
  ``installed``, and the app never sees a shared secret.

``site_base``: when given, the app signs the absolute URL under it instead of a path
relative to the tenant (what an app that keeps its own idea of the site's URL does); a
URL on any host but the tenant's is refused by the ledger (``foreign_url``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MYSELF = "/rest/api/3/myself"


def create_app(ledger_url: str, service_token: str, site_base: str | None = None) -> FastAPI:
    clients: dict[str, httpx.AsyncClient] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        clients["ledger"] = httpx.AsyncClient(
            base_url=ledger_url,
            headers={"Authorization": f"Bearer {service_token}"},
            timeout=10,
        )
        clients["site"] = httpx.AsyncClient(timeout=10, follow_redirects=False)
        try:
            yield
        finally:
            for client in clients.values():
                await client.aclose()

    app = FastAPI(title="Example vendor app", lifespan=lifespan)

    async def ledger(route: str, body: dict[str, Any]) -> httpx.Response:
        return await clients["ledger"].post(f"/auth/{route}", json=body)

    def refused(response: httpx.Response, status: int) -> JSONResponse:
        # The ledger's refusal code, never the token or anything the request carried.
        return JSONResponse({"error": response.json().get("error", "refused")}, status_code=status)

    @app.get("/panel")
    async def panel(request: Request) -> JSONResponse:
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        verified = await ledger("connect/verify", {"method": request.method, "url": url})
        if verified.status_code != 200:
            return refused(verified, 401)
        tenant = verified.json()
        target = f"{site_base.rstrip('/')}{MYSELF}" if site_base else MYSELF
        signed = await ledger(
            "connect/sign", {"client_key": tenant["client_key"], "method": "GET", "url": target}
        )
        if signed.status_code != 200:
            return refused(signed, 502)
        call = signed.json()
        site = await clients["site"].get(
            call["url"], headers={"Authorization": call["authorization"]}
        )
        return JSONResponse(
            {
                "client_key": tenant["client_key"],
                "account_id": tenant["account_id"],
                "license": tenant["license"],
                "site_status": site.status_code,
                "site_user": site.json() if site.status_code == 200 else None,
            }
        )

    @app.get("/context")
    async def context(request: Request) -> JSONResponse:
        verified = await ledger(
            "connect/verify",
            {"authorization": request.headers.get("authorization"), "context": True},
        )
        if verified.status_code != 200:
            return refused(verified, 401)
        tenant = verified.json()
        return JSONResponse(
            {"client_key": tenant["client_key"], "account_id": tenant["account_id"]}
        )

    @app.get("/atlassian-connect.json")
    async def descriptor() -> dict[str, Any]:
        # The ledger's lifecycle routes, on the app's own origin (see README.md).
        lifecycle = {
            name: f"/{name}?v=1" for name in ("installed", "uninstalled", "enabled", "disabled")
        }
        return {
            "key": "tenant-ledger",
            "name": "Example vendor app",
            "baseUrl": "https://vendor.example.com",
            "authentication": {"type": "jwt"},
            "apiMigrations": {"signed-install": True},
            "lifecycle": lifecycle,
            "scopes": ["read"],
            "modules": {
                "generalPages": [
                    {"key": "panel", "url": "/panel", "name": {"value": "Example panel"}}
                ]
            },
        }

    return app
