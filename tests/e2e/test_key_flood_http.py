"""A flood of signed installs with made-up kids, over real HTTP (issue 8 §5): the key
server sees a bounded number of requests, every refusal is logged, and a real install
with a new kid still gets through."""

from __future__ import annotations

import secrets
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.ingest.key_fetch import FETCH_BURST, FETCH_RATE_PER_SECOND
from app.sim.connect import SimulatedHost, make_install_payload
from tests.harness import RunningService, running_service

FLOOD = 120


def flood_call(service: RunningService, forger: SimulatedHost) -> httpx.Response:
    forger.kid = f"flood-{secrets.token_hex(8)}"  # never published: the key server says 404
    call = forger.lifecycle_call(
        "installed", make_install_payload(), app_base_url=service.settings.app_base_url
    )
    return service.send(call)


def test_random_kids_cost_a_bounded_number_of_key_fetches(tmp_path: Path) -> None:
    with running_service(f"sqlite:///{tmp_path / 'ledger.db'}") as service:
        forgers = [SimulatedHost(kid="unpublished") for _ in range(4)]
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(lambda i: flood_call(service, forgers[i % 4]), range(FLOOD)))
        elapsed = time.monotonic() - started

        codes = [(a.status_code, a.json()["error"]) for a in answers]
        assert set(codes) <= {(401, "unknown_kid"), (503, "key_server_busy")}
        assert (503, "key_server_busy") in codes
        assert all(a.headers["Retry-After"] for a in answers if a.status_code == 503)
        fetched = sum(
            n for kid, n in service.key_server.requests.items() if kid.startswith("flood-")
        )
        # The budget's bound: its burst, plus what it refilled while the flood lasted.
        assert fetched <= FETCH_BURST + FETCH_RATE_PER_SECOND * elapsed
        assert fetched == codes.count((401, "unknown_kid"))

        # Counted on rows (a row may stand for several refusals: see its count).
        refused = Counter[str]()
        for row in service.admin("/admin/rejections", limit=1000).json()["rejections"]:
            refused[row["reason"]] += row["count"]
        assert refused["key_server_busy"] == codes.count((503, "key_server_busy"))

        # Atlassian publishes a new key: the site's install retries on 503 as hosts do,
        # and is stored once the budget has a token again (about a second).
        real = SimulatedHost(key_server=service.key_server)
        payload = make_install_payload()
        for _attempt in range(20):
            response = service.send(
                real.lifecycle_call(
                    "installed", payload, app_base_url=service.settings.app_base_url
                )
            )
            if response.status_code != 503:
                break
            assert response.json()["error"] == "key_server_busy"
            time.sleep(0.25)
        assert response.status_code == 204, response.text
        assert [e.type for e in service.stream(payload["clientKey"])] == ["Installed"]
        assert service.key_server.request_count(real.kid) == 1
