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

``webhook_secret``: when given, ``POST /webhooks/ledger`` receives the ledger's Standard
Webhooks messages (``examples.vendor_app.webhooks``): every lifecycle change, signed with
that secret, deduplicated by ``webhook-id``; what arrived is ``app.state.inbox``.

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

from examples.vendor_app.webhooks import WebhookInbox, webhook_router

MYSELF = "/rest/api/3/myself"
LIFECYCLE = ("installed", "uninstalled", "enabled", "disabled")


class Ledger:
    """The app's one client of the ledger's tenant authority (``/auth/*``)."""

    def __init__(self, ledger_url: str, service_token: str) -> None:
        self.url, self._token = ledger_url, service_token
        self.client: httpx.AsyncClient | None = None
        self.site: httpx.AsyncClient | None = None  # calls to tenants' sites

    async def open(self) -> None:
        self.client = httpx.AsyncClient(
            base_url=self.url, headers={"Authorization": f"Bearer {self._token}"}, timeout=10
        )
        self.site = httpx.AsyncClient(timeout=10, follow_redirects=False)

    async def aclose(self) -> None:
        for client in (self.client, self.site):
            if client is not None:
                await client.aclose()

    async def ask(self, route: str, body: dict[str, Any]) -> httpx.Response:
        assert self.client is not None, "the app's lifespan opens the client"
        return await self.client.post(f"/auth/{route}", json=body)


def refused(response: httpx.Response, status: int) -> JSONResponse:
    """The ledger's refusal code, never the token or anything the request carried."""
    return JSONResponse({"error": response.json().get("error", "refused")}, status_code=status)


def create_app(
    ledger_url: str,
    service_token: str,
    site_base: str | None = None,
    webhook_secret: str | None = None,
) -> FastAPI:
    ledger = Ledger(ledger_url, service_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await ledger.open()
        try:
            yield
        finally:
            await ledger.aclose()

    app = FastAPI(title="Example vendor app", lifespan=lifespan)
    add_pages(app, ledger, site_base)
    app.add_api_route("/atlassian-connect.json", descriptor, methods=["GET"])
    app.state.inbox = WebhookInbox()
    if webhook_secret is not None:
        app.include_router(webhook_router(webhook_secret, app.state.inbox))
    return app


def add_pages(app: FastAPI, ledger: Ledger, site_base: str | None) -> None:
    @app.get("/panel")
    async def panel(request: Request) -> JSONResponse:
        url = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        verified = await ledger.ask("connect/verify", {"method": request.method, "url": url})
        if verified.status_code != 200:
            return refused(verified, 401)
        tenant = verified.json()
        target = f"{site_base.rstrip('/')}{MYSELF}" if site_base else MYSELF
        signed = await ledger.ask(
            "connect/sign", {"client_key": tenant["client_key"], "method": "GET", "url": target}
        )
        if signed.status_code != 200:
            return refused(signed, 502)
        call = signed.json()
        assert ledger.site is not None
        site = await ledger.site.get(call["url"], headers={"Authorization": call["authorization"]})
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
        authorization = request.headers.get("authorization")
        verified = await ledger.ask(
            "connect/verify", {"authorization": authorization, "context": True}
        )
        if verified.status_code != 200:
            return refused(verified, 401)
        tenant = verified.json()
        return JSONResponse(
            {"client_key": tenant["client_key"], "account_id": tenant["account_id"]}
        )


async def descriptor() -> dict[str, Any]:
    """The app's descriptor: the ledger's lifecycle routes on the app's own origin (the
    proxy sends them to the ledger; see README.md)."""
    return {
        "key": "tenant-ledger",
        "name": "Example vendor app",
        "baseUrl": "https://vendor.example.com",
        "authentication": {"type": "jwt"},
        "apiMigrations": {"signed-install": True},
        "lifecycle": {name: f"/{name}?v=1" for name in LIFECYCLE},
        "scopes": ["read"],
        "modules": {
            "generalPages": [{"key": "panel", "url": "/panel", "name": {"value": "Example panel"}}]
        },
    }
