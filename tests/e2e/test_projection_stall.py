"""A projection that fails on an event stops alone (SPEC §6): the others stay current,
it says so in /readyz, /metrics, the console and the log, it is retried with back-off,
and it catches up by itself once the code is fixed. No event is ever skipped."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections import runner as runner_module
from projections.backends import storage_for
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from projections.storage.tables import SPECS
from tests.contract.test_runner import snapshot
from tests.contract.test_runner_faults import metric, until
from tests.harness import ADMIN_TOKEN, running_service
from tests.log_builder import append_random_calls

STALLING = ("base_urls", "reimports")  # one group: folded in the same pass
HEALTHY = tuple(name for name in SPECS if name not in STALLING)


class FaultyFold:
    """The real base_urls fold with a bug: it raises on one event (while ``broken``)."""

    def __init__(self, real: Any, position: int) -> None:
        self.real = real
        self.position = position
        self.broken = True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    @property
    def handlers(self) -> dict[str, Callable[[Any, Any], None]]:
        """The real handlers, which a rebuild dispatches to without ``apply_many``
        (``projections.rebuild``), raising on the event too."""

        def broken(handler: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
            def handle(state: Any, event: Any) -> None:
                if self.broken and event.position == self.position:
                    raise ValueError(f"bug in the base_urls fold at {self.position}")
                handler(state, event)

            return handle

        return {event_type: broken(h) for event_type, h in self.real.handlers.items()}

    def apply_many(self, state: Any, events: Iterable[RecordedEvent]) -> Any:
        events = list(events)
        if self.broken and any(e.position == self.position for e in events):
            # Half-apply first, as a real bug would: the runner must not keep it.
            before = [e for e in events if e.position < self.position]
            self.real.apply_many(state, before)
            raise ValueError(f"bug in the base_urls fold at {self.position}")
        return self.real.apply_many(state, events)


def break_base_urls(monkeypatch: pytest.MonkeyPatch, position: int) -> FaultyFold:
    fault = FaultyFold(runner_module.PROJECTIONS["base_urls"], position)
    monkeypatch.setitem(runner_module.PROJECTIONS, "base_urls", fault)
    return fault


def test_a_failing_fold_stops_its_group_alone_and_catches_up_once_fixed(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_random_calls(store, random.Random(7), 60, tenants=8)
    head = store.head().position
    bad = head // 2
    fault = break_base_urls(monkeypatch, bad)
    runner = ProjectionRunner(store, batch_size=16, stall_backoff=lambda attempts: 0.0)

    runner.run_once()  # never raises for a fold's bug
    checkpoints = storage_for(store).checkpoints()
    assert {checkpoints[name] for name in HEALTHY} == {head}
    assert {checkpoints[name] for name in STALLING} == {bad - 1}  # up to the event, not past
    stalled = runner.stalled
    assert set(stalled) == set(STALLING)
    assert stalled["base_urls"]["position"] == bad
    assert stalled["base_urls"]["type"] == store.read_all(bad - 1, 1).__next__().type
    assert "ValueError: bug in the base_urls fold" in stalled["base_urls"]["error"]
    assert [stall.position for _, stall in runner.take_new_stalls()] == [bad]

    runner.run_once()  # retried (no back-off here), fails again: one more attempt
    assert runner.stalled["base_urls"]["attempts"] == 2
    assert storage_for(store).checkpoints()["base_urls"] == bad - 1

    fault.broken = False  # the fix is deployed
    append_random_calls(store, random.Random(8), 10, tenants=8)
    runner.run_once()
    assert runner.stalled == {}
    new_head = store.head().position
    assert set(storage_for(store).checkpoints().values()) == {new_head}
    folded = snapshot(store)
    rebuild(store)
    assert snapshot(store) == folded  # nothing skipped, nothing half-applied


def test_a_stalled_group_waits_for_its_back_off_before_it_is_retried(
    store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_random_calls(store, random.Random(9), 20, tenants=4)
    bad = store.head().position - 3
    break_base_urls(monkeypatch, bad)
    delays: list[int] = []

    def backoff(attempts: int) -> float:
        delays.append(attempts)
        return 3600.0

    runner = ProjectionRunner(store, batch_size=8, stall_backoff=backoff)
    runner.run_once()
    runner.run_once()
    append_random_calls(store, random.Random(10), 5, tenants=4)
    runner.run_once()  # the healthy groups go on; the stalled one is not retried yet
    assert delays == [1] and runner.stalled["base_urls"]["attempts"] == 1
    checkpoints = storage_for(store).checkpoints()
    assert checkpoints["tenants"] == store.head().position
    assert checkpoints["base_urls"] == bad - 1


def test_readyz_metrics_and_console_name_the_stalled_projection(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_service(store_url) as service:
        for _ in range(3):
            service.install()
        bad = service.store.head().position
        fault = break_base_urls(monkeypatch, bad + 2)
        for _ in range(3):
            service.install()
        head = service.store.head().position

        def degraded() -> dict[str, Any] | None:
            answer = service.client.get("/readyz")
            body = answer.json()
            return body if answer.status_code == 200 and body.get("degraded") else None

        body = until(degraded, "/readyz says degraded")
        assert body["status"] == "ready"
        projections = body["runner"]["projections"]
        stalled = projections["base_urls"]["stalled"]
        assert stalled["position"] == bad + 2 and stalled["type"] == "Installed"
        assert "bug in the base_urls fold" in stalled["error"]
        assert projections["reimports"]["stalled"]["position"] == bad + 2
        until(
            lambda: all(
                service.client.get("/readyz").json()["runner"]["projections"][n]["lag_events"] == 0
                for n in HEALTHY
            ),
            "the other projections reach the head",
        )
        text = service.client.get("/metrics").text
        assert metric(text, "ledger_projection_stalled", '{projection="base_urls"}') == 1
        assert metric(text, "ledger_projection_stalled", '{projection="tenants"}') == 0
        assert metric(text, "ledger_projection_failures_total") >= 1
        assert any(
            "stopped at position" in line and "base_urls" in line
            for line in service.logs.getvalue().splitlines()
        )
        service.client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console"})
        for page in ("/console", "/console/descriptors", "/console/integrity"):
            html = service.client.get(page).text
            assert "Read models stalled" in html and "base_urls" in html, page

        fault.broken = False  # the fix is deployed: it catches up by itself

        def healed() -> dict[str, Any] | None:
            body = service.client.get("/readyz").json()
            runner = body["runner"]
            return body if not body["degraded"] and runner["lag_events"] == 0 else None

        body = until(healed, "the stalled projection catches up", seconds=90)
        assert {p["checkpoint"] for p in body["runner"]["projections"].values()} == {head}
        text = service.client.get("/metrics").text
        assert metric(text, "ledger_projection_stalled", '{projection="base_urls"}') == 0
        assert "Read models stalled" not in service.client.get("/console").text


def test_rebuild_with_a_failing_fold_says_so_in_one_line_and_swaps_nothing(
    store: EventStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_random_calls(store, random.Random(12), 20, tenants=4)
    ProjectionRunner(store).run_once()
    before = snapshot(store)
    handled = runner_module.PROJECTIONS["base_urls"].handlers
    # An event the fold handles: a rebuild calls a fold's handlers for those only.
    bad = next(e.position for e in store.read_all() if e.position > 1 and e.type in handled)
    break_base_urls(monkeypatch, bad)
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    result = CliRunner().invoke(cli, ["rebuild", "base_urls"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: rebuild stopped")
    assert "base_urls" in lines[0] and "positions 1-" in lines[0]
    assert snapshot(store) == before  # the live tables are untouched
