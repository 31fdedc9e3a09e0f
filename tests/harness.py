"""A real service on uvicorn (in a thread, over real HTTP), a local key server and a
simulated Atlassian host, wired together for the end-to-end tests."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from app.serve.embedded import embedded_service
from app.settings import Settings
from app.sim.connect import KeyServer, LifecycleCall, SimulatedHost, make_install_payload
from eventstore import open_store
from eventstore.events import stream_id_for
from eventstore.store import EventStore
from eventstore.values import RecordedEvent

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


@contextmanager
def running_service(store_url: str, **overrides: Any) -> Iterator[RunningService]:
    key_server = KeyServer().start()
    host = SimulatedHost(key_server=key_server)
    logs = io.StringIO()

    def settings_for(url: str) -> Settings:
        options: dict[str, Any] = {
            "database_url": store_url,
            "app_base_url": url,
            "install_keys_url": key_server.url,
            "master_key": base64.b64encode(os.urandom(32)).decode(),
            "admin_token": ADMIN_TOKEN,
        }
        return Settings(**(options | overrides))

    store = open_store(store_url)
    try:
        with embedded_service(settings_for, log_stream=logs) as (url, settings):
            service = RunningService(url, settings, store, key_server, host, logs)
            try:
                yield service
            finally:
                service.client.close()
    finally:
        store.close()
        key_server.stop()
