"""The projection runner under real faults (issue 8 item 6): it never dies, says what
is wrong in the log, /readyz and /metrics, and catches up by itself once the cause is
gone. Also: projection storage errors are StoreUnavailable/StoreError, never a driver
error, and the leadership connection cannot hang on a black-holed server."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from eventstore import events as catalog
from eventstore.clock import format_timestamp, utcnow
from eventstore.errors import StoreError, StoreUnavailable
from eventstore.events import stream_id_for
from eventstore.postgres.session import translate_error
from eventstore.store import EventStore
from projections.backends import lock_for, storage_for
from projections.health import LastError, RunnerHealth, backoff_delay, short_message
from projections.locks import ADVISORY_KEYS, AdvisoryLock
from projections.runner import EventNotFoldable, ProjectionRunner, RunnerThread
from projections.storage.tables import SPECS
from tests.conftest import ADMIN_URL
from tests.contract.test_runner import snapshot
from tests.harness import running_service
from tests.log_builder import append_random_calls


def until(condition: Callable[[], Any], what: str, seconds: float = 60) -> Any:
    """Poll ``condition`` until it is truthy (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + seconds
    while not (value := condition()):
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)
    return value


def insert_raw_event(
    url: str, stream_id: str, event_type: str, schema_version: int, data: str
) -> int:
    """Write an event row straight into the log, as newer code would (INSERT is allowed
    by the log's guards); the position it got."""
    position = 0
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:///") :], isolation_level=None) as conn:
            conn.execute("BEGIN IMMEDIATE")
            position = conn.execute("SELECT coalesce(max(position), 0) + 1 FROM events").fetchone()[
                0
            ]
            version = conn.execute(
                "SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = ?", (stream_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO events (position, stream_id, version, type, schema_version, data,"
                " metadata, recorded_at, hash) VALUES (?, ?, ?, ?, ?, ?, '{}', ?, ?)",
                (
                    position,
                    stream_id,
                    version,
                    event_type,
                    schema_version,
                    data,
                    format_timestamp(utcnow()),
                    os.urandom(32).hex(),
                ),
            )
            conn.execute("COMMIT")
        return int(position)
    with psycopg.connect(url, autocommit=False) as conn:
        row = conn.execute("SELECT position FROM ledger_head FOR UPDATE").fetchone()
        assert row is not None
        position = row[0] + 1
        version_row = conn.execute(
            "SELECT coalesce(max(version), 0) + 1 FROM events WHERE stream_id = %s", [stream_id]
        ).fetchone()
        assert version_row is not None
        digest = os.urandom(32)
        conn.execute(
            "INSERT INTO events (position, stream_id, version, type, schema_version, data,"
            " metadata, recorded_at, hash) VALUES (%s, %s, %s, %s, %s, %s, '{}', now(), %s)",
            [position, stream_id, version_row[0], event_type, schema_version, data, digest],
        )
        conn.execute("UPDATE ledger_head SET position = %s, hash = %s", [position, digest])
    return int(position)


def metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{labels} not in /metrics"
    return float(match.group(1))


# -- pure parts


def test_backoff_doubles_from_half_a_second_and_stops_at_thirty() -> None:
    delays = [backoff_delay(n) for n in range(1, 12)]
    assert delays[:7] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0]
    assert set(delays[6:]) == {30.0}
    assert backoff_delay(0) == 0.0
    assert backoff_delay(10_000) == 30.0


def test_a_standby_ends_a_streak_of_store_failures_but_not_of_unfoldable_events() -> None:
    health = RunnerHealth()
    store_down = LastError("StoreUnavailable", "PostgreSQL is unavailable", utcnow())
    assert [health.failed(store_down, store_failure=True) for _ in range(3)] == [0.5, 1.0, 2.0]
    health.succeeded(as_leader=False)  # the store answers again
    assert health.snapshot()["consecutive_failures"] == 0
    unfoldable = LastError("EventNotFoldable", "event at position 9 ...", utcnow(), 9)
    assert [health.failed(unfoldable, store_failure=False) for _ in range(2)] == [0.5, 1.0]
    health.succeeded(as_leader=False)  # another process leads (and may fail in turn)
    assert health.failed(unfoldable, store_failure=False) == 2.0  # the backoff keeps growing
    health.succeeded(as_leader=True)
    snapshot = health.snapshot()
    assert snapshot["consecutive_failures"] == 0 and snapshot["failures"] == 6
    assert snapshot["last_error"]["position"] == 9


def test_error_text_is_one_short_line_without_credentials() -> None:
    error = RuntimeError(
        "connect to postgresql://ledger:s3cret@db/x failed\npassword=hunter2 " + "x" * 500
    )
    text = short_message(error)
    assert "s3cret" not in text and "hunter2" not in text
    assert "\n" not in text and len(text) <= 201


# -- a rolling deploy: an event from newer code


def test_an_event_newer_than_the_code_is_a_clear_error_and_deploying_the_code_heals_it(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with running_service(store_url) as service:
        append_random_calls(service.store, random.Random(11), 30, tenants=6)
        payload = service.install()
        stream = stream_id_for(payload["clientKey"])
        # DescriptorUpgraded is at schema version 2 in this code; a newer release writes 3.
        bad = insert_raw_event(store_url, stream, "DescriptorUpgraded", 3, '{"from":null,"to":"9"}')
        append_random_calls(service.store, random.Random(12), 20, tenants=6)
        head = service.store.head().position
        assert head > bad

        def failing() -> dict[str, Any] | None:
            runner = service.client.get("/readyz").json()["runner"]
            return runner if runner["failures"] >= 2 and runner["last_error"] else None

        runner = until(failing, "the runner reports the unreadable event")
        error = runner["last_error"]
        assert error["type"] == "EventNotFoldable"
        assert error["position"] == bad
        assert "DescriptorUpgraded" in error["message"] and "schema version 3" in error["message"]
        # Everything before the unreadable event is folded; nothing after it is.
        assert {p["checkpoint"] for p in runner["projections"].values()} == {bad - 1}
        assert runner["lag_events"] == head - bad + 1 > 0
        assert any(t.name == "projection-runner" and t.is_alive() for t in threading.enumerate())
        errors = [
            json.loads(line) for line in service.logs.getvalue().splitlines() if '"error"' in line
        ]
        stuck = [e for e in errors if e["logger"] == "ledger.projections"]
        assert stuck and f"position {bad}" in stuck[-1]["message"]
        assert "DescriptorUpgraded" in stuck[-1]["message"] and stuck[-1]["position"] == bad
        metrics = service.client.get("/metrics").text
        failures = metric(metrics, "ledger_projection_failures_total")
        assert failures >= 2
        assert metric(metrics, "ledger_projection_lag_events", '{projection="tenants"}') > 0
        until(
            lambda: (
                metric(service.client.get("/metrics").text, "ledger_projection_failures_total")
                > failures
            ),
            "the runner keeps retrying (the failures counter grows)",
        )

        # The new release is deployed: it knows schema version 3 (and how to upcast 2).
        monkeypatch.setitem(catalog.SCHEMA_VERSIONS, "DescriptorUpgraded", 3)
        monkeypatch.setitem(catalog.UPCASTERS, ("DescriptorUpgraded", 2), lambda data: data)

        def caught_up() -> dict[str, Any] | None:
            runner = service.client.get("/readyz").json()["runner"]
            return runner if runner["lag_events"] == 0 and runner["role"] == "leader" else None

        runner = until(caught_up, "the runner catches up by itself")
        assert runner["consecutive_failures"] == 0
        assert runner["last_error"]["position"] == bad  # kept, with its time, for the operator
        assert {p["checkpoint"] for p in runner["projections"].values()} == {head}
        rows = {r.client_key: r for r in storage_for(service.store).load_rows("tenants")}
        assert rows[payload["clientKey"]].descriptor_version == "9"  # the new event is folded


# -- the projection tables refuse writes (disk full, permissions), then accept them again


def _make_tenants_unwritable(url: str) -> None:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            for op in ("INSERT", "UPDATE"):
                conn.execute(
                    f"CREATE TRIGGER tenants_refuse_{op} BEFORE {op} ON tenants"
                    " BEGIN SELECT RAISE(ABORT, 'tenants is not writable'); END"
                )
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_writes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'could not extend file: No space left on device'"
            " USING ERRCODE = 'disk_full'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER tenants_refuse BEFORE INSERT OR UPDATE ON tenants"
            " FOR EACH ROW EXECUTE FUNCTION refuse_writes()"
        )


def _make_tenants_writable(url: str) -> None:
    if url.startswith("sqlite:"):
        with sqlite3.connect(url[len("sqlite:///") :]) as conn:
            conn.execute("DROP TRIGGER tenants_refuse_INSERT")
            conn.execute("DROP TRIGGER tenants_refuse_UPDATE")
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER tenants_refuse ON tenants")


def test_a_projection_table_that_refuses_writes_is_retried_until_it_accepts_them(
    store: EventStore, store_url: str
) -> None:
    storage_for(store).ensure()
    append_random_calls(store, random.Random(21), 20)
    _make_tenants_unwritable(store_url)
    thread = RunnerThread(
        store, poll_seconds=0.05, standby_seconds=0.05, health=RunnerHealth(0.05, 0.2)
    ).start()
    try:
        status = until(lambda: (s := thread.status())["failures"] >= 3 and s, "failures counted")
        assert thread.is_alive()
        expected = "StoreUnavailable" if store_url.startswith("postgres") else "StoreFault"
        assert status["last_error"]["type"] == expected  # never a raw driver error
        assert status["lag_events"] == store.head().position > 0
        _make_tenants_writable(store_url)
        until(lambda: thread.status()["lag_events"] == 0, "the runner catches up")
        assert set(storage_for(store).checkpoints().values()) == {store.head().position}
        assert thread.status()["consecutive_failures"] == 0
    finally:
        thread.stop()
    assert thread.role == "stopped" and not thread.is_alive()
    incremental = snapshot(store)
    from projections.rebuild import rebuild

    rebuild(store)
    assert snapshot(store) == incremental


def test_sqlite_disk_full_is_store_unavailable_and_the_batch_is_retried(tmp_path: Any) -> None:
    from eventstore import open_store

    with open_store(f"sqlite:///{tmp_path / 'full.db'}") as store:
        runner = ProjectionRunner(store)
        append_random_calls(store, random.Random(31), 200, tenants=200)
        conn = store.connection()  # this thread's connection: the runner's too
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the "disk" is full now
        with pytest.raises(StoreUnavailable, match="SQLITE_FULL"):
            runner.run_once()
        conn.execute("PRAGMA max_page_count = 1073741823")
        retry = ProjectionRunner(store)  # as the runner thread does after a failure
        assert retry.run_once() == store.head().position
        assert set(storage_for(store).checkpoints().values()) == {store.head().position}


# -- PostgreSQL unreachable: reads and the runner


@contextmanager
def refused(url: str) -> Iterator[None]:
    """The test database refuses connections and its sessions are terminated."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def test_a_postgres_outage_is_store_unavailable_and_the_runner_recovers(
    postgres_databases: Any,
) -> None:
    from eventstore import open_store

    url = postgres_databases.create()
    with open_store(url, timeout=1.0) as store:  # a short pool wait keeps the test quick
        storage = storage_for(store)
        storage.ensure()
        append_random_calls(store, random.Random(41), 20)
        thread = RunnerThread(
            store, poll_seconds=0.05, standby_seconds=0.05, health=RunnerHealth(0.05, 0.5)
        ).start()
        try:
            until(lambda: thread.status()["lag_events"] == 0, "first catch-up")
            with refused(url):
                for read in (
                    storage.checkpoints,
                    storage.list_tenants,
                    lambda: storage.load_rows("reimports"),
                    lambda: storage.count("tenants"),
                ):
                    with pytest.raises(StoreUnavailable):
                        read()
                status = until(
                    lambda: (s := thread.status())["consecutive_failures"] >= 2 and s,
                    "the runner notices the outage",
                )
                assert thread.is_alive() and status["role"] == "standby"
                assert status["last_error"]["type"] == "StoreUnavailable"
            until(lambda: _appended(store, 20), "the store serves again")
            until(
                lambda: (
                    thread.status()["lag_events"] == 0
                    and thread.status()["head"] == store.head().position
                ),
                "the runner catches up after the outage",
            )
            assert thread.role == "leader"
        finally:
            thread.stop()


def _appended(store: EventStore, calls: int) -> bool:
    try:
        append_random_calls(store, random.Random(42), calls)
    except StoreUnavailable:
        return False  # the store's pool reconnects with its own backoff
    return True


def test_a_refused_statement_is_store_error_not_a_driver_error(store: EventStore) -> None:
    storage = storage_for(store)
    storage.ensure()
    with pytest.raises(StoreError) as caught:
        storage._query("SELECT no_such_column FROM tenants")
    assert not isinstance(caught.value, StoreUnavailable)


# -- leadership connection bounds


def test_leadership_on_a_black_holed_database_fails_instead_of_hanging() -> None:
    # A listening socket nobody accepts on: the TCP handshake completes, no answer ever.
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(1)
    port = hole.getsockname()[1]
    lock = AdvisoryLock(
        f"postgresql://postgres@127.0.0.1:{port}/ledger", ADVISORY_KEYS["runner"], translate_error
    )
    outcome: list[BaseException | bool] = []
    attempt = threading.Thread(target=lambda: _capture(outcome, lock.try_acquire), daemon=True)
    try:
        attempt.start()
        attempt.join(timeout=60)  # connect timeout is 5 s; a hang would never end
        assert not attempt.is_alive(), "acquire hung on a black-holed database"
        assert len(outcome) == 1 and isinstance(outcome[0], StoreUnavailable)
    finally:
        hole.close()


def _capture(outcome: list[BaseException | bool], call: Callable[[], bool]) -> None:
    try:
        outcome.append(call())
    except BaseException as error:
        outcome.append(error)


def test_the_leadership_connection_has_a_statement_timeout(postgres_databases: Any) -> None:
    from eventstore import open_store

    with open_store(postgres_databases.create()) as store:
        lock = lock_for(store, "runner")
        assert isinstance(lock, AdvisoryLock)
        try:
            assert lock.try_acquire()
            assert lock._conn is not None
            row = lock._conn.execute("SHOW statement_timeout").fetchone()
            assert row is not None and row[0] == "5s"
        finally:
            lock.release()


def test_readyz_shows_a_healthy_runner_and_a_process_without_one(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'ready.db'}"
    with running_service(url) as service:
        service.install()
        head = service.store.head().position

        def current() -> dict[str, Any] | None:
            runner = service.client.get("/readyz").json()["runner"]
            return runner if runner["head"] == head and runner["lag_events"] == 0 else None

        runner = until(current, "the runner folds the install")
        assert runner["role"] == "leader" and runner["failures"] == 0
        assert runner["last_error"] is None and set(runner["projections"]) == set(SPECS)
        assert metric(service.client.get("/metrics").text, "ledger_projection_failures_total") == 0
    with running_service(url, run_projections=False) as service:
        answer = service.client.get("/readyz")
        assert answer.status_code == 200
        assert answer.json()["runner"]["role"] == "stopped"


def test_an_unknown_event_type_names_its_position_first_unreadable_then_unfoldable(
    store: EventStore, store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from projections import tenants

    append_random_calls(store, random.Random(51), 15)
    before = store.head().position
    bad = insert_raw_event(store_url, stream_id_for("client-99"), "Frobnicated", 1, "{}")
    append_random_calls(store, random.Random(52), 10, tenants=3)  # not client-99
    with pytest.raises(EventNotFoldable, match=rf"position {bad} \(Frobnicated") as caught:
        ProjectionRunner(store).run_once()
    assert caught.value.position == bad and caught.value.event_type == "Frobnicated"
    assert set(storage_for(store).checkpoints().values()) == {before}  # folded up to it
    # Newer code that can read the type but whose tenants fold forgot it: the tenants
    # group stops alone at that event and names it (SPEC §6); the others go on.
    monkeypatch.setitem(catalog._EMPTY, "Frobnicated", catalog.Enabled())
    runner = ProjectionRunner(store)
    runner.run_once()
    stalled = runner.stalled
    assert set(stalled) == {"tenants", "descriptors"}
    assert stalled["tenants"]["position"] == bad and stalled["tenants"]["type"] == "Frobnicated"
    checkpoints = storage_for(store).checkpoints()
    assert checkpoints["tenants"] == bad - 1 and checkpoints["base_urls"] == store.head().position
    monkeypatch.setitem(tenants._UPDATES, "Frobnicated", tenants._UPDATES["Enabled"])
    ProjectionRunner(store).run_once()
    assert set(storage_for(store).checkpoints().values()) == {store.head().position}
