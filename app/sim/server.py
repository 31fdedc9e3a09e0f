"""The one way the simulated host serves HTTP: a local server on a daemon thread.

Both of its servers (Connect's install-key server in ``app.sim.connect``, Forge's JWKS
server in ``app.sim.forge``) start, stop, hold "slow" answers and count requests
the same way; only what they answer differs (their request handler).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, Self

__all__ = ["BackgroundServer", "OwnedServer", "QuietHandler"]


class OwnedServer(ThreadingHTTPServer):
    """The HTTP server; its handlers reach the ``BackgroundServer`` as ``owner``."""

    daemon_threads = True
    owner: Any


class BackgroundServer:
    """A loopback HTTP server run on a daemon thread until ``stop()``."""

    handler: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "hostsim-server"

    def __init__(self, *, slow_seconds: float = 5.0, port: int = 0) -> None:
        self.slow_seconds = slow_seconds
        self.port = port  # 0: any free port
        self._lock = threading.Lock()
        # Handlers in "slow" mode wait on this; stop() and a mode change release them.
        self._wake = threading.Event()
        self._server: OwnedServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Self:
        if self._server is not None:
            return self
        server = OwnedServer(("127.0.0.1", self.port), self.handler)
        server.owner = self
        self._wake.clear()
        self._server = server
        # A short poll interval keeps stop() (which waits for one poll) quick.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=self.thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._wake.set()
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def _rearm(self, slow: bool) -> None:
        """Release handlers held by a "slow" mode; hold the next ones if ``slow``."""
        self._wake.set()
        if slow:
            self._wake.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that answers whole bodies and logs nothing (tests and the demo
    print their own story)."""

    server: OwnedServer

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and left: expected in "slow" mode

    def log_message(self, format: str, *args: Any) -> None:
        pass
