"""A webhook receiver for the tests: the example vendor app's router
(``examples/vendor_app/webhooks.py``) in a tiny app on uvicorn on loopback, which can
be told to fail (an HTTP status, or a slow answer) before it lets messages through."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Request, Response

from app.serve.embedded import bound_socket
from examples.vendor_app.webhooks import WebhookInbox, webhook_router

PATH = "/webhooks/ledger"


class Receiver:
    def __init__(self, url: str, inbox: WebhookInbox) -> None:
        self.url = url
        self.inbox = inbox
        self.fail_status: int | None = None  # answer this instead of delivering
        self.slow_seconds = 0.0
        self.slow_answers = 0  # how many of the next answers are slow
        self.attempts: list[str] = []  # every webhook-id that arrived, in order
        self.lock = threading.Lock()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while len(self.inbox.messages) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return [m.id for m in self.inbox.messages]


@contextmanager
def running_receiver(secret: str) -> Iterator[Receiver]:
    sock = bound_socket()
    inbox = WebhookInbox()
    receiver = Receiver(f"http://127.0.0.1:{sock.getsockname()[1]}{PATH}", inbox)
    app = FastAPI()

    @app.middleware("http")
    async def faults(request: Request, call_next):  # type: ignore[no-untyped-def]
        with receiver.lock:
            receiver.attempts.append(request.headers.get("webhook-id", ""))
        if receiver.slow_answers > 0:
            receiver.slow_answers -= 1
            await asyncio.sleep(receiver.slow_seconds)
        if receiver.fail_status is not None:
            return Response(status_code=receiver.fail_status)
        return await call_next(request)

    app.include_router(webhook_router(secret, inbox, PATH))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
