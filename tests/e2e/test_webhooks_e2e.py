"""Webhooks to the app, end to end over real HTTP (SPEC §11 "Proven end to end"): the
ledger delivers every event, signed, in order, to the example app's receiver, retries a
failing URL without holding up another, resumes from its checkpoint on a standby, and
replays from a position."""

from __future__ import annotations

import json
import secrets
import time

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.outbound.config import new_secret
from app.outbound.sender import DELIVERY_TIMEOUT_SECONDS, Sender
from app.sim.connect import make_install_payload
from tests.harness import ADMIN_TOKEN, running_service
from tests.webhook_receiver import running_receiver


def _first_seen(ids: list[str]) -> list[str]:
    seen: dict[str, None] = {}
    for found in ids:
        seen.setdefault(found, None)
    return list(seen)


def test_the_app_hears_install_rotation_and_uninstall_signed_and_in_order(store_url: str) -> None:
    secret = new_secret()
    with running_receiver(secret) as receiver, running_service(
        store_url, webhook_urls=receiver.url, webhook_secret=secret
    ) as service:
        payload = service.install()
        rotated = dict(payload, sharedSecret=secrets.token_urlsafe(40))
        service.install(rotated)
        gone = service.send(service.call("uninstalled", rotated))
        assert gone.status_code == 204
        ids = receiver.wait_for(3)
        messages = list(receiver.inbox.messages)
        assert [m.type for m in messages] == [
            "tenant.installed", "tenant.secret_rotated", "tenant.uninstalled"
        ], ids
        assert ids == ["evt_1", "evt_2", "evt_3"]
        assert receiver.inbox.refused == 0  # every signature verified
        for message in messages:
            text = message.body.decode()
            assert payload["sharedSecret"] not in text
            assert rotated["sharedSecret"] not in text
            assert '"ct"' not in text  # not even the sealed form
            data = message.payload["data"]
            assert data["stream_id"] == f"tenant:{payload['clientKey']}"
            assert data["event"]["position"] == data["position"]
        installed, rotation, uninstalled = (m.payload["data"] for m in messages)
        assert installed["tenant"]["state"] == "installed"
        assert rotation["event"]["data"]["sharedSecret"] == "[redacted]"
        assert uninstalled["tenant"]["state"] == "uninstalled"
        ready = service.client.get("/readyz").json()
        (progress,) = ready["runner"]["webhooks"]
        assert progress["host"] == "127.0.0.1" and progress["failures"] == 0
        metrics = service.client.get("/metrics").text
        assert 'ledger_webhook_deliveries_total{host="127.0.0.1",webhook="0"} 3.0' in metrics
        assert receiver.url not in metrics
        service.client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console"})
        page = service.client.get("/console/webhooks")
        assert page.status_code == 200
        assert "Webhook deliveries" in page.text and "/webhooks/ledger" in page.text


def test_a_failing_url_is_retried_in_order_while_another_keeps_receiving(store_url: str) -> None:
    secret = new_secret()
    with running_receiver(secret) as failing, running_receiver(secret) as healthy:
        failing.fail_status = 500
        with running_service(
            store_url, webhook_urls=f"{failing.url},{healthy.url}", webhook_secret=secret
        ) as service:
            for _ in range(3):
                service.install(make_install_payload())
            assert healthy.wait_for(3) == ["evt_1", "evt_2", "evt_3"]
            assert failing.inbox.messages == deque_empty()
            deadline = time.monotonic() + 30
            while len(failing.attempts) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # retried (1 s back-off), never skipped
            assert set(failing.attempts) == {"evt_1"}
            webhooks = service.client.get("/readyz").json()["runner"]["webhooks"]
            assert webhooks[0]["consecutive_failures"] >= 1
            assert webhooks[0]["last_error"] == "HTTP 500"
            assert webhooks[1]["lag_events"] == 0
            assert 'ledger_webhook_failures_total{host="127.0.0.1",webhook="0"}' in (
                service.client.get("/metrics").text
            )
            failing.fail_status = None
            assert failing.wait_for(3, timeout=30) == ["evt_1", "evt_2", "evt_3"]


QUICKER_TIMEOUT_SECONDS = 3.0  # a delivery's limit in the test below (the service's: 10 s)


class _QuickerSender(Sender):
    """The service's sender, with a delivery limit of 3 s instead of the 10 s it is
    given: an answer past the limit then costs the test 4 s instead of 11 s a store.
    Records the limit the service gave, which the test asserts."""

    given: list[float] = []

    def __init__(self, url: str, secret: str, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        _QuickerSender.given.append(timeout)
        super().__init__(url, secret, timeout=QUICKER_TIMEOUT_SECONDS)


def test_a_url_that_answers_too_late_is_retried_and_order_kept(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("app.outbound.worker.Sender", _QuickerSender)
    monkeypatch.setattr(_QuickerSender, "given", [])
    secret = new_secret()
    with running_receiver(secret) as slow, running_receiver(secret) as healthy:
        # 1 s past the limit a delivery may take, as 11 s is past the service's 10 s.
        slow.slow_seconds, slow.slow_answers = QUICKER_TIMEOUT_SECONDS + 1, 1
        with running_service(
            store_url, webhook_urls=f"{slow.url},{healthy.url}", webhook_secret=secret
        ) as service:
            for _ in range(2):
                service.install(make_install_payload())
            assert healthy.wait_for(2) == ["evt_1", "evt_2"]
            assert slow.wait_for(2, timeout=40) == ["evt_1", "evt_2"]
            assert slow.attempts[:2] == ["evt_1", "evt_1"]  # the late answer did not count
            assert [m.id for m in slow.inbox.messages].count("evt_1") == 1
            assert slow.inbox.duplicates <= 1  # at most the late one, deduplicated
    # Each URL's sender was given the SPEC's limit (§11: 2xx within 10 s).
    assert _QuickerSender.given == [10.0, 10.0]


def deque_empty() -> object:
    from collections import deque

    return deque()


def test_replay_from_a_position_delivers_again_in_order(store_url: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    secret = new_secret()
    with running_receiver(secret) as receiver, running_service(
        store_url, webhook_urls=receiver.url, webhook_secret=secret
    ) as service:
        for _ in range(3):
            service.install(make_install_payload())
        receiver.wait_for(3)
        before = len(receiver.attempts)
        for name, value in {
            "LEDGER_DATABASE_URL": store_url,
            "LEDGER_WEBHOOK_URLS": receiver.url,
            "LEDGER_WEBHOOK_SECRET": secret,
        }.items():
            monkeypatch.setenv(name, value)
        result = CliRunner().invoke(cli, ["webhooks", "replay", receiver.url, "--from", "2"])
        assert result.exit_code == 0, result.output
        deadline = time.monotonic() + 30
        # Acknowledged as repeats by the receiver (after its middleware saw them arrive).
        while receiver.inbox.duplicates < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.attempts[before:] == ["evt_2", "evt_3"]
        assert receiver.inbox.duplicates == 2  # the receiver deduplicated them
        status = CliRunner().invoke(cli, ["webhooks", "--json"])
        assert status.exit_code == 0, status.output
        (shown,) = json.loads(status.output)["webhooks"]
        assert shown["position"] == 3 and shown["lag_events"] == 0
        assert secret not in status.output


def test_a_link_to_a_forge_installation_follows_the_event_that_showed_it(store_url: str) -> None:
    secret = new_secret()
    installation = "8d6e3c1a-5f0b-4b7e-9a52-2f1c7e0d4b9a"
    with running_receiver(secret) as receiver, running_service(
        store_url, webhook_urls=receiver.url, webhook_secret=secret
    ) as service:
        service.install(dict(make_install_payload(), installationId=installation))
        assert receiver.wait_for(2) == ["evt_1", "evt_1_1"]
        installed, linked = (m.payload for m in receiver.inbox.messages)
        assert (installed["type"], linked["type"]) == ("tenant.installed", "installation.linked")
        link = linked["data"]["link"]
        assert (link["kind"], link["installation_id"]) == ("connect", installation)
        assert link["evidence"]["position"] == 1
        assert linked["data"]["tenant"]["installation_id"] == installation
