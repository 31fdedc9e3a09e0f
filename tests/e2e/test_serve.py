"""`ledger serve` as an operator runs it: a real process, several workers, one store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from app.sim.connect import KeyServer, SimulatedHost, make_install_payload
from tests.harness import ADMIN_TOKEN, ledger_serve


def test_two_workers_share_one_store_and_one_runner(store_url: str, tmp_path: Path) -> None:
    with KeyServer() as keys, ledger_serve(store_url, tmp_path, keys.url, workers=2) as served:
        host = SimulatedHost(key_server=keys)
        url = served.url
        with httpx.Client(base_url=url, timeout=10) as client:
            payloads = [make_install_payload() for _ in range(20)]
            for payload in payloads:
                call = host.lifecycle_call("installed", payload, app_base_url=url)
                response = client.post(
                    call.url_path_with_query, content=call.body, headers=call.headers
                )
                assert response.status_code == 204, response.text
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            listed: set[str] = set()
            deadline = time.monotonic() + 10
            while len(listed) < len(payloads) and time.monotonic() < deadline:
                answer = client.get("/admin/tenants", headers=headers, params={"limit": 100})
                listed = {t["client_key"] for t in answer.json()["tenants"]}
                time.sleep(0.1)
            assert listed == {p["clientKey"] for p in payloads}
            assert client.get("/admin/verify", headers=headers).json()["ok"] is True
            assert served.process.poll() is None  # both workers still up
