"""The service on uvicorn in a background thread, on a socket bound before it starts.

Used by `ledger demo` when no service is running, and by the end-to-end tests: the
port is known before the settings are built, so ``LEDGER_APP_BASE_URL`` can name it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

import uvicorn

from app.http.app import create_app
from app.settings import Settings


def bound_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


# An ASGI application (scope, receive, send), typed without importing Starlette here.
Asgi = Callable[[Any, Any, Any], Awaitable[None]]


@contextmanager
def embedded_service(
    make_settings: Callable[[str], Settings], log_stream: IO[str] | None = None
) -> Iterator[tuple[str, Settings]]:
    """Yield (base URL, settings) of a running service; ``make_settings`` gets the URL."""
    sock = bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = make_settings(url)
    with serving(create_app(settings, log_stream=log_stream), sock):
        yield url, settings


@contextmanager
def serving(app: Asgi, sock: socket.socket | None = None) -> Iterator[str]:
    """Any ASGI app (the ledger, or the example vendor app) on uvicorn in a thread, on
    ``sock`` or a fresh loopback port; yields its base URL."""
    sock = sock or bound_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(
        # As `ledger serve`: forwarded headers are the app's to believe (app.http.proxies).
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", proxy_headers=False
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            sock.close()
            raise RuntimeError("the embedded service did not start")
        time.sleep(0.01)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
