"""`ledger serve` as an operator runs it: a real process, several workers, one store."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.sim.connect import KeyServer, SimulatedHost, make_install_payload


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_workers_share_one_store_and_one_runner(store_url: str, tmp_path: Path) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        env = dict(
            os.environ,
            LEDGER_DATABASE_URL=store_url,
            LEDGER_APP_BASE_URL=url,
            LEDGER_INSTALL_KEYS_URL=keys.url,
            LEDGER_MASTER_KEY=base64.b64encode(os.urandom(32)).decode(),
            LEDGER_ADMIN_TOKEN="serve-test-token",
            LEDGER_VAR_DIR=str(tmp_path),
        )
        ledger = Path(sys.executable).with_name("ledger")
        server = subprocess.Popen(
            [str(ledger), "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            with httpx.Client(base_url=url, timeout=10) as client:
                deadline = time.monotonic() + 60
                while True:
                    assert server.poll() is None, server.stdout.read() if server.stdout else ""
                    try:
                        if client.get("/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "ledger serve did not become ready"
                    time.sleep(0.1)
                payloads = [make_install_payload() for _ in range(20)]
                for payload in payloads:
                    call = host.lifecycle_call("installed", payload, app_base_url=url)
                    response = client.post(
                        call.url_path_with_query, content=call.body, headers=call.headers
                    )
                    assert response.status_code == 204, response.text
                headers = {"Authorization": "Bearer serve-test-token"}
                listed: set[str] = set()
                deadline = time.monotonic() + 10
                while len(listed) < len(payloads) and time.monotonic() < deadline:
                    answer = client.get("/admin/tenants", headers=headers, params={"limit": 100})
                    listed = {t["client_key"] for t in answer.json()["tenants"]}
                    time.sleep(0.1)
                assert listed == {p["clientKey"] for p in payloads}
                assert client.get("/admin/verify", headers=headers).json()["ok"] is True
                assert server.poll() is None  # both workers still up
        finally:
            server.terminate()
            server.wait(timeout=30)
