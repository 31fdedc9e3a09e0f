"""A webhook receiver for ``bench/webhooks_lag.py``, in a process of its own: verifies each
message's signature (as a real receiver must), answers 204, and writes one line per
message: ``webhook-id<TAB>body timestamp<TAB>arrival (Unix seconds)``.

Usage: python bench/_webhook_receiver.py PORT SECRET OUT_FILE
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import uvicorn
from standardwebhooks import Webhook

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def make_app(secret: str, out_path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    verifier = Webhook(secret)
    out = open(out_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115  (open for the app's life)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    out.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            payload = verifier.verify(body, headers)
            status = 204
        except Exception:
            payload, status = None, 400
        arrived = time.time()
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        if payload is not None:
            stamp = datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).timestamp()
            out.write(f"{headers['webhook-id']}\t{stamp}\t{arrived}\n")

    return app


if __name__ == "__main__":
    port, secret, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    uvicorn.run(make_app(secret, out_path), host="127.0.0.1", port=port, log_level="warning",
                access_log=False)
