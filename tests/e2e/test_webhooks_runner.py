"""Webhook deliveries beside the projection runner: a standby resumes from the
checkpoint the leader left (no event lost, order kept), and the derived facts come
right after the event that made them. Both stores; two runners on one database."""

from __future__ import annotations

import random
import re
import time

from app.bootstrap import start_runner
from app.outbound.config import new_secret
from app.settings import Settings
from eventstore import open_store
from projections.backends import storage_for
from projections.health import RunnerHealth
from tests.log_builder import append_random_calls
from tests.webhook_receiver import Receiver, running_receiver

_ID = re.compile(r"^evt_(\d+)(?:_(\d+))?$")


def _order(webhook_id: str) -> tuple[int, int]:
    found = _ID.match(webhook_id)
    assert found, webhook_id
    return int(found.group(1)), int(found.group(2) or 0)


def _delivered_through(receiver: Receiver, position: int, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ids = [m.id for m in receiver.inbox.messages]
        if f"evt_{position}" in ids:
            return ids
        time.sleep(0.05)
    raise AssertionError(f"evt_{position} never arrived; got {len(receiver.inbox.messages)}")


def test_a_standby_takes_over_from_the_checkpoint_without_loss(store_url: str) -> None:
    secret = new_secret()
    with running_receiver(secret) as receiver, open_store(store_url) as one, open_store(
        store_url
    ) as two:
        settings = Settings(database_url=store_url, webhook_urls=receiver.url, webhook_secret=secret)
        leader = start_runner(settings, one, RunnerHealth(), None, poll_seconds=0.05)
        while leader.role != "leader":
            time.sleep(0.02)
        standby = start_runner(settings, two, RunnerHealth(), None, poll_seconds=0.05)
        try:
            rng = random.Random(7)
            append_random_calls(one, rng, 40)
            _delivered_through(receiver, one.head().position)
            leader.stop()
            append_random_calls(one, rng, 40)
            head = one.head().position
            ids = _delivered_through(receiver, head)
            assert standby.role == "leader"
        finally:
            standby.stop()
            leader.stop()
        # Every event, each once (the receiver deduplicates), in log order.
        positions = sorted({_order(i)[0] for i in ids})
        assert positions == list(range(1, head + 1))
        assert ids == sorted(ids, key=_order)
        _facts_follow_their_events(receiver, one, store_url)


def _facts_follow_their_events(receiver: Receiver, store, store_url: str) -> None:  # type: ignore[no-untyped-def]
    reimports = storage_for(store).load_rows("reimports")
    assert reimports, "the random log should hold a reimport"
    messages = {m.id: m for m in receiver.inbox.messages}
    detected = [m for m in messages.values() if m.type == "tenant.reimport_detected"]
    assert sorted(m.payload["data"]["link"]["client_key"] for m in detected) == sorted(
        r.client_key for r in reimports
    )
    for message in detected:
        position = _order(message.id)[0]
        made_by = messages[f"evt_{position}"]
        assert made_by.type == "tenant.installed"
        assert made_by.payload["data"]["stream_id"] == f"tenant:{message.payload['data']['link']['client_key']}"
