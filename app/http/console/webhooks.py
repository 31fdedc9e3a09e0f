"""The console's "Webhook deliveries" page (SPEC §11): each URL's checkpoint, lag,
last attempt and error, from the store (what every runner wrote), and this service's
runner's live view of its deliverers when it has one. URLs are shown without
credentials or query."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response

from app.http import deps
from app.http.console.routes import _page, router
from app.outbound.checkpoints import DeliveryCheckpoints
from app.outbound.status import webhooks_answer
from app.queries.readiness import runner_status
from eventstore.store import EventStore


def webhooks_page(store: EventStore, urls: tuple[str, ...], live: list[Any]) -> dict[str, Any]:
    answer = webhooks_answer(urls, DeliveryCheckpoints(store.database).rows(), store.head().position)
    return {"head": answer["head"], "webhooks": answer["webhooks"], "live": live}


@router.get("/webhooks")
async def webhooks(request: Request) -> Response:
    live = runner_status(deps.runner(request)).get("webhooks") or []
    urls = deps.settings(request).webhook_url_list
    return await _page(
        request, "webhooks.html", "webhooks", webhooks_page, deps.store(request), urls, live
    )
