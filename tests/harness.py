"""A real service on uvicorn (in a thread, over real HTTP), a local key server and a
simulated Atlassian host, wired together for the end-to-end tests."""

from __future__ import annotations

import base64
import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from app.hostsim import KeyServer, LifecycleCall, SimulatedHost, make_install_payload
from app.service import create_app
from app.settings import Settings
from eventstore.events import stream_id_for
from eventstore.store import EventStore, RecordedEvent, open_store

ADMIN_TOKEN = "admin-token-for-tests-0123456789"


class RunningService:
    def __init__(
        self,
        url: str,
        settings: Settings,
        store: EventStore,
        key_server: KeyServer,
        host: SimulatedHost,
        logs: io.StringIO,
    ) -> None:
        self.url = url
        self.settings = settings
        self.store = store
        self.key_server = key_server
        self.host = host
        self.logs = logs
        self.client = httpx.Client(base_url=url, timeout=30)
        self.admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def call(self, event: str, payload: dict[str, Any], **options: Any) -> LifecycleCall:
        return self.host.lifecycle_call(
            event, payload, app_base_url=self.settings.app_base_url, **options
        )

    def send(self, call: LifecycleCall) -> httpx.Response:
        return self.client.post(call.url_path_with_query, content=call.body, headers=call.headers)

    def install(self, payload: dict[str, Any] | None = None, **options: Any) -> dict[str, Any]:
        payload = payload or make_install_payload()
        response = self.send(self.call("installed", payload, **options))
        assert response.status_code == 204, response.text
        return payload

    def stream(self, client_key: str) -> list[RecordedEvent]:
        return self.store.read_stream(stream_id_for(client_key))

    def admin(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, headers=self.admin_headers, params=params)


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def running_service(store_url: str, **overrides: Any) -> Iterator[RunningService]:
    key_server = KeyServer().start()
    host = SimulatedHost(key_server=key_server)
    sock = free_socket()
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "database_url": store_url,
        "app_base_url": f"http://127.0.0.1:{port}",
        "install_keys_url": key_server.url,
        "master_key": base64.b64encode(os.urandom(32)).decode(),
        "admin_token": ADMIN_TOKEN,
    }
    settings = Settings(**(options | overrides))
    logs = io.StringIO()
    store = open_store(store_url)
    app = create_app(settings, log_stream=logs)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.01)
    service = RunningService(f"http://127.0.0.1:{port}", settings, store, key_server, host, logs)
    try:
        yield service
    finally:
        service.client.close()
        server.should_exit = True
        thread.join(timeout=10)
        store.close()
        key_server.stop()
        sock.close()
