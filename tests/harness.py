"""A real service on uvicorn (in a thread, over real HTTP), a local key server and a
simulated Atlassian host, wired together for the end-to-end tests."""

from __future__ import annotations

import base64
import functools
import io
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric import rsa

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


@functools.cache
def host_key() -> rsa.RSAPrivateKey:
    """The one RSA key of the simulated hosts the harness starts, each under a kid of its
    own on a key server of its own: making a 2048-bit key costs ~55 ms of CPU, and a run
    starts hundreds of services."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def running_service(store_url: str, **overrides: Any) -> Iterator[RunningService]:
    key_server = KeyServer().start()
    host = SimulatedHost(key_server=key_server, private_key=host_key())
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


def refused(service: RunningService, response: httpx.Response, status: int, code: str) -> None:
    """The call was refused with ``status`` and ``code``, words to read, and a
    rejection-log entry with that reason."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert service.store.list_rejections(1)[0].reason == code


@dataclass
class ServeProcess:
    """A real `ledger serve` started by a test: its process (the test ends it by PID)
    and its URL."""

    process: subprocess.Popen[bytes]
    url: str
    var_dir: Path

    @property
    def log_path(self) -> Path:
        return self.var_dir / "serve.log"

    def output(self) -> str:
        """What it printed so far (stdout and stderr; a file, so a long run never blocks
        on a full pipe)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def ledger_serve(
    store_url: str,
    var_dir: Path,
    keys_url: str,
    workers: int = 1,
    master_key: str | None = None,
    **settings: str,
) -> Iterator[ServeProcess]:
    """The one launcher of `ledger serve` for tests: ready (``/readyz`` answers 200)
    when it yields; stopped by its PID (SIGTERM, then SIGKILL) on the way out.
    ``settings``: more ``LEDGER_*`` variables, by their names without the prefix."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        LEDGER_DATABASE_URL=store_url,
        LEDGER_APP_BASE_URL=url,
        LEDGER_INSTALL_KEYS_URL=keys_url,
        LEDGER_MASTER_KEY=master_key or base64.b64encode(os.urandom(32)).decode(),
        LEDGER_ADMIN_TOKEN=ADMIN_TOKEN,
        LEDGER_VAR_DIR=str(var_dir),
        **{f"LEDGER_{name.upper()}": value for name, value in settings.items()},
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    ledger = Path(sys.executable).with_name("ledger")
    var_dir.mkdir(parents=True, exist_ok=True)
    with (var_dir / "serve.log").open("wb") as log_file:
        process = subprocess.Popen(
            [str(ledger), "serve", "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    served = ServeProcess(process, url, var_dir)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, f"ledger serve exited: {served.output()}"
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "ledger serve did not answer /readyz in 60 s"
            time.sleep(0.1)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
