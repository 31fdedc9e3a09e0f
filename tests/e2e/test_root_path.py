"""LEDGER_ROOT_PATH (SPEC §11): the vendor's proxy mounts the ledger under a prefix and
strips it; the host signed the path it saw (prefix + route), and the descriptor's links
carry the prefix. Over real HTTP, the test plays the proxy: it sends the stripped path."""

from __future__ import annotations

from typing import Any

import httpx

from app.ingest.connect.tokens import query_string_hash
from app.sim.connect import LifecycleCall, make_install_payload
from tests.harness import RunningService, running_service

QUERY = [("v", "1")]


def signed_for(
    service: RunningService, event: str, path: str, payload: dict[str, Any], **options: Any
) -> LifecycleCall:
    qsh = query_string_hash("POST", path, QUERY)
    return service.call(event, payload, claims_override={"qsh": qsh}, **options)


def via_proxy(service: RunningService, call: LifecycleCall) -> httpx.Response:
    """What the proxy forwards: the route without the prefix it mounts the ledger at."""
    return service.send(call)


def test_lifecycle_calls_signed_under_the_prefix_are_verified(store_url: str) -> None:
    with running_service(store_url, root_path="/ledger/") as service:
        payload = make_install_payload()
        assert (
            via_proxy(
                service, signed_for(service, "installed", "/ledger/installed", payload)
            ).status_code
            == 204
        )
        enabled = signed_for(service, "enabled", "/ledger/enabled", payload, alg="HS256")
        assert via_proxy(service, enabled).status_code == 204
        unprefixed = service.call("disabled", payload, alg="HS256")  # signed for /disabled
        response = via_proxy(service, unprefixed)
        assert response.status_code == 401 and response.json()["error"] == "qsh_mismatch"
        lifecycle = service.client.get("/atlassian-connect.json").json()["lifecycle"]
        assert lifecycle["installed"] == "/ledger/installed?v=1"


def test_without_the_setting_the_prefixed_signature_is_refused(store_url: str) -> None:
    with running_service(store_url) as service:
        payload = make_install_payload()
        response = via_proxy(
            service, signed_for(service, "installed", "/ledger/installed", payload)
        )
        assert response.status_code == 401 and response.json()["error"] == "qsh_mismatch"
        assert (
            service.client.get("/atlassian-connect.json").json()["lifecycle"]["installed"]
            == "/installed?v=1"
        )


def test_a_base_url_with_a_path_and_a_prefix_under_it(store_url: str) -> None:
    """App at https://vendor/app, ledger mounted at /app/ledger: lifecycle URLs are
    relative to the base URL (/ledger/...), the qsh path too."""
    base = "https://vendor.example/app"
    with running_service(store_url, root_path="/app/ledger", app_base_url=base) as service:
        payload = make_install_payload()
        call = signed_for(service, "installed", "/ledger/installed", payload)
        response = service.client.post("/installed?v=1", content=call.body, headers=call.headers)
        assert response.status_code == 204, response.text
        assert (
            service.client.get("/atlassian-connect.json").json()["lifecycle"]["installed"]
            == "/ledger/installed?v=1"
        )
