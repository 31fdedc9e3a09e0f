"""SPEC §4 rule 3 (an app that moved its domain keeps accepting hosts still on the old
descriptor) and rule 6 (the same token with another body is refused as token_reused),
over real HTTP on both stores."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.ingest.connect.tokens import (
    AppBase,
    query_string_hash,
    relative_path,
    verify_install_token,
)
from app.ingest.jwt import TokenError, parse_token
from app.sim.connect import LifecycleCall, SimulatedHost, make_install_payload
from tests.harness import RunningService, refused, running_service

OLD = "https://old-ledger.example.com"
OLDER = "https://older.example.com/ledger"


@pytest.fixture
def moved(store_url: str) -> Iterator[RunningService]:
    with running_service(store_url, app_previous_base_urls=f"{OLD}, {OLDER}/") as running:
        yield running




# ------------------------------------------------------------------ rule 3


def stripped(service: RunningService, call: LifecycleCall) -> httpx.Response:
    """Send ``call`` to the ledger's own route, as a proxy that strips the mount path does."""
    path = "/" + call.path.rstrip("/").rsplit("/", 1)[-1]
    return service.client.post(
        path, params=call.query, content=call.body, headers=call.headers
    )


def test_hosts_on_a_previous_base_url_are_accepted_and_it_is_kept_as_evidence(
    moved: RunningService,
) -> None:
    current = moved.install()
    assert moved.stream(current["clientKey"])[-1].metadata.app_base_url == (
        moved.settings.app_base_url
    )
    for base in (OLD, OLDER, OLD + "/"):
        payload = make_install_payload()
        call = moved.host.lifecycle_call("installed", payload, app_base_url=base)
        answer = stripped(moved, call)  # the old domain's proxy strips the old path
        assert answer.status_code == 204, answer.text
        recorded = moved.stream(payload["clientKey"])[-1].metadata.app_base_url
        assert recorded is not None and recorded.rstrip("/") == base.rstrip("/")
        # Later HS256 calls from that host verify too.
        enable = moved.host.lifecycle_call("enabled", payload, app_base_url=base, alg="HS256")
        assert stripped(moved, enable).status_code == 204


def test_a_base_url_never_configured_is_still_refused(moved: RunningService) -> None:
    payload = make_install_payload()
    call = moved.host.lifecycle_call(
        "installed", payload, app_base_url="https://attacker.example.com"
    )
    refused(moved, moved.send(call), 401, "aud_mismatch")
    assert moved.stream(payload["clientKey"]) == []


def test_without_the_setting_the_old_base_url_is_refused(store_url: str) -> None:
    with running_service(store_url) as service:
        payload = make_install_payload()
        call = service.host.lifecycle_call("installed", payload, app_base_url=OLD)
        refused(service, service.send(call), 401, "aud_mismatch")


def test_the_qsh_is_relative_to_the_base_url_the_token_names() -> None:
    """A previous base URL with a path: the host signed the path under that base."""
    host = SimulatedHost()
    payload = make_install_payload()
    call = host.lifecycle_call("installed", payload, app_base_url="https://old.example.com/app")
    token = parse_token(call.token)
    wire_path = "/app/installed"  # what reaches the ledger when the proxy keeps the prefix
    query = [("v", "1")]

    def base(url: str) -> AppBase:
        return AppBase(url, query_string_hash("POST", relative_path(wire_path, url), query))

    current, previous = base("https://new.example.com"), base("https://old.example.com/app")
    assert current.qsh != previous.qsh
    options: dict[str, Any] = {
        "client_key": payload["clientKey"],
        "now": int(time.time()),
        "leeway": 30,
    }
    key = host.public_pem  # the simulated host's install key
    verified = verify_install_token(
        token, key, app_base_url=current.url or "", qsh=current.qsh, previous=[previous], **options
    )
    assert verified.app_base_url == "https://old.example.com/app"
    with pytest.raises(TokenError) as caught:  # aud names the old base; qsh of the new one
        verify_install_token(
            token,
            key,
            app_base_url=current.url or "",
            qsh=current.qsh,
            previous=[AppBase(previous.url, current.qsh)],
            **options,
        )
    assert caught.value.code == "qsh_mismatch"


# ------------------------------------------------------------------ rule 6




def with_body(call: LifecycleCall, body: bytes) -> LifecycleCall:
    return LifecycleCall(
        call.method, call.path, call.query, call.url_path_with_query, call.headers, body, call.token
    )


def test_the_same_token_with_the_same_json_value_is_a_duplicate(service: RunningService) -> None:
    payload = make_install_payload()
    call = service.call("installed", payload)
    assert service.send(call).status_code == 204
    events = len(service.stream(payload["clientKey"]))
    respelled = json.dumps(dict(reversed(list(payload.items()))), indent=2).encode()
    for again in (call, with_body(call, respelled)):
        answer = service.send(again)
        assert answer.status_code == 204, answer.text
    assert len(service.stream(payload["clientKey"])) == events


def test_the_same_token_with_another_body_is_token_reused(service: RunningService) -> None:
    payload = service.install()
    events = len(service.stream(payload["clientKey"]))
    rotate = service.call("installed", dict(payload, sharedSecret="rotated-" + "x" * 40))
    assert service.send(rotate).status_code == 204
    events += 1
    for changed in (
        dict(rotate.payload, sharedSecret="attacker-" + "y" * 40),  # roll the secret
        dict(rotate.payload, description="another body"),
        dict(rotate.payload, baseUrl="https://elsewhere.atlassian.net"),
    ):
        answer = service.send(with_body(rotate, json.dumps(changed).encode()))
        refused(service, answer, 409, "token_reused")
        assert "attacker" not in answer.text
    enable = service.call("enabled", rotate.payload, alg="HS256")
    assert service.send(enable).status_code == 204
    events += 1
    other = json.dumps(dict(rotate.payload, displayUrl="https://x.atlassian.net")).encode()
    refused(service, service.send(with_body(enable, other)), 409, "token_reused")
    assert len(service.stream(payload["clientKey"])) == events
    rejection = service.store.list_rejections(1)[0]
    assert rejection.client_key == payload["clientKey"]


def test_a_copy_racing_in_with_another_body_is_never_silent(service: RunningService) -> None:
    """Two copies of one token sent at once with different bodies: one is stored, the
    other is refused (by the decider, or by the store's backstop when they race)."""
    for _ in range(4):
        payload = make_install_payload()
        call = service.call("installed", payload)
        other = with_body(call, json.dumps(dict(payload, description="raced")).encode())
        answers: list[int] = []
        barrier = threading.Barrier(2)

        def send(
            which: LifecycleCall, answers: list[int] = answers, barrier: Any = barrier
        ) -> None:
            with httpx.Client(base_url=service.url, timeout=30) as client:
                barrier.wait()
                response = client.post(
                    which.url_path_with_query, content=which.body, headers=which.headers
                )
                answers.append(response.status_code)

        threads = [threading.Thread(target=send, args=(c,)) for c in (call, other)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert sorted(answers) == [204, 409]
        assert len(service.stream(payload["clientKey"])) == 1
