"""The example vendor app's webhook receiver: the ledger tells the app of every
lifecycle change (SPEC §11) as Standard Webhooks messages.

Include it in the app (``app.include_router(webhook_router(secret, inbox))``) and set
the ledger's ``LEDGER_WEBHOOK_URLS`` to ``https://<app>/webhooks/ledger`` and
``LEDGER_WEBHOOK_SECRET`` to the same ``whsec_…`` secret as here.

What a receiver must do, shown here:
* verify the signature over the exact body bytes (``standardwebhooks``), which also
  refuses a timestamp more than five minutes off (a replayed old message);
* deduplicate by ``webhook-id``: delivery is at least once, so after a retry or a
  ledger failover the same message may come twice; answer 2xx to the repeat too,
  or the ledger keeps retrying it;
* answer quickly (the ledger waits 10 s) and act on the message afterwards or
  idempotently; messages come in log order, one at a time per URL.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Final

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

MAX_BODY_BYTES: Final = 1024 * 1024
IDS_REMEMBERED: Final = 100_000  # enough to span any retry window
KEPT: Final = 10_000  # messages kept for the example's own pages and tests


@dataclass(frozen=True)
class Received:
    id: str
    type: str
    body: bytes  # exactly as received (and verified)
    payload: dict[str, Any]


class WebhookInbox:
    """What the app got, deduplicated by ``webhook-id``, bounded. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.messages: deque[Received] = deque(maxlen=KEPT)
        self.duplicates = 0
        self.refused = 0

    def accept(self, message: Received) -> bool:
        """Record a verified message; False when its id was seen before."""
        with self._lock:
            if message.id in self._ids:
                self.duplicates += 1
                return False
            self._ids[message.id] = None
            while len(self._ids) > IDS_REMEMBERED:
                self._ids.popitem(last=False)
            self.messages.append(message)
            return True

    def types(self) -> list[str]:
        with self._lock:
            return [m.type for m in self.messages]


def webhook_router(
    secret: str, inbox: WebhookInbox, path: str = "/webhooks/ledger"
) -> APIRouter:
    """``POST path``: 204 for a verified message (new or repeated), 400 otherwise."""
    verifier = Webhook(secret)
    router = APIRouter()

    @router.post(path, status_code=204, include_in_schema=False)
    async def receive(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "too_large"}, status_code=413)
        try:
            payload = verifier.verify(body, dict(request.headers))
        except (WebhookVerificationError, ValueError):
            inbox.refused += 1
            return JSONResponse({"error": "bad_signature"}, status_code=400)
        message = Received(
            request.headers["webhook-id"], str(payload.get("type")), body, payload
        )
        inbox.accept(message)  # a repeat is acknowledged too, and not acted on twice
        return Response(status_code=204)

    return router
