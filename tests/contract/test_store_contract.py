"""The store contract (SPEC §8), run against every store through the ``store`` fixture."""

from __future__ import annotations

import gc
import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from eventstore import open_store
from eventstore.clock import format_timestamp, utcnow
from eventstore.errors import ConcurrencyConflict, StoreError, StoreFault, StoreUnavailable
from eventstore.events import (
    BaseUrlChanged,
    DescriptorUpgraded,
    DetailsChanged,
    Enabled,
    Installed,
    Metadata,
    SealedSecret,
    Uninstalled,
    stream_id_for,
)
from eventstore.rejections import REJECTION_WINDOW_SECONDS, Rejection, rejection_log_counters
from eventstore.store import EventStore
from eventstore.values import NewEvent
from tests.conftest import ADMIN_URL

SEALED = SealedSecret(alg="A256GCM", nonce="bm9uY2U=", ct="Y2lwaGVy", ad="tenant:a#1")


def meta(call_id: str = "call-1") -> Metadata:
    return Metadata(call_id=call_id, descriptor_version="1", alg="RS256")


def installed(client_key: str = "a", base_url: str = "https://a.atlassian.net") -> NewEvent:
    return NewEvent(
        Installed(
            key="tenant-ledger",
            client_key=client_key,
            base_url=base_url,
            shared_secret=SEALED,
            details={"productType": "jira", "futureField": {"nested": [1, 2]}},
        ),
        meta(),
    )


def test_append_and_read_back_typed_events(store: EventStore) -> None:
    stream = stream_id_for("a")
    first = store.append(stream, [installed()], expected_version=0)
    assert [e.version for e in first.events] == [1]
    assert first.events[0].position == 1
    second = store.append(
        stream,
        [
            NewEvent(
                BaseUrlChanged(from_="https://a.atlassian.net", to="https://b.atlassian.net"),
                meta("c2"),
            ),
            NewEvent(DescriptorUpgraded(from_="1", to="2"), meta("c2")),
        ],
        expected_version=1,
    )
    assert [(e.position, e.version) for e in second.events] == [(2, 2), (3, 3)]

    events = store.read_stream(stream)
    assert [e.type for e in events] == ["Installed", "BaseUrlChanged", "DescriptorUpgraded"]
    assert events[0].data == installed().data  # unknown payload fields survive the round trip
    assert events[1].data == BaseUrlChanged(
        from_="https://a.atlassian.net", to="https://b.atlassian.net"
    )
    assert events[2].metadata.call_id == "c2"
    assert [e.hash for e in events] == [e.hash for e in first.events + second.events]
    assert store.stream_version(stream) == 3
    assert store.stream_version(stream_id_for("nobody")) == 0
    assert store.head().position == 3
    assert store.head().hash == events[-1].hash


def test_wrong_expected_version_is_a_typed_retryable_conflict(store: EventStore) -> None:
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0)
    with pytest.raises(ConcurrencyConflict) as caught:
        store.append(stream, [NewEvent(Enabled(), meta())], expected_version=0)
    assert caught.value.expected == 0
    assert caught.value.actual in (1, None)
    # retrying with the right version succeeds
    store.append(stream, [NewEvent(Enabled(), meta())], expected_version=1)
    assert store.stream_version(stream) == 2


def test_idempotency_key_returns_the_first_events_and_writes_nothing(store: EventStore) -> None:
    stream = stream_id_for("a")
    first = store.append(stream, [installed()], 0, idempotency_key="token-sha")
    again = store.append(stream, [installed()], 0, idempotency_key="token-sha")
    assert again.duplicate and not first.duplicate
    assert [e.position for e in again.events] == [e.position for e in first.events]
    assert store.head().position == 1
    found = store.find_idempotent("token-sha")
    assert found is not None and [e.position for e in found] == [1]
    assert store.find_idempotent("never-used") is None


def test_a_repeated_key_of_several_events_returns_them_all_in_order(store: EventStore) -> None:
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0)
    events = [NewEvent(Enabled(), meta("call-2")), NewEvent(Uninstalled(), meta("call-3"))]
    first = store.append(stream, events, 1, idempotency_key="token-2")
    again = store.append(stream, events, 1, idempotency_key="token-2")
    assert again.duplicate and not first.duplicate
    assert [(e.position, e.version, e.hash) for e in again.events] == [
        (e.position, e.version, e.hash) for e in first.events
    ]
    assert [e.position for e in first.events] == [2, 3] and store.head().position == 3
    assert store.verify().ok


def test_an_append_is_all_or_nothing(store: EventStore) -> None:
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0)
    # The second event of this call collides with nothing but the first is fine:
    # force a failure mid-call by appending at a conflicting version from another writer.
    with pytest.raises(ConcurrencyConflict):
        store.append(stream, [NewEvent(Enabled(), meta()), NewEvent(Uninstalled(), meta())], 5)
    assert store.stream_version(stream) == 1
    assert store.head().position == 1
    assert store.verify().ok


def test_concurrent_appends_to_one_stream_never_both_win(store_url: str) -> None:
    stream = stream_id_for("a")
    with open_store(store_url) as setup:
        setup.append(stream, [installed()], 0)
    winners: list[int] = []
    conflicts: list[int] = []
    barrier = threading.Barrier(6)

    def writer(index: int) -> None:
        with open_store(store_url) as own:
            barrier.wait()
            try:
                own.append(stream, [NewEvent(DetailsChanged(changes={"n": index}), meta())], 1)
                winners.append(index)
            except ConcurrencyConflict:
                conflicts.append(index)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(conflicts) == 5
    with open_store(store_url) as check:
        assert [e.version for e in check.read_stream(stream)] == [1, 2]
        assert check.verify().ok


def test_read_all_streams_lazily_in_batches_in_global_order(store: EventStore) -> None:
    for i in range(25):
        store.append(stream_id_for(f"t{i % 4}"), [NewEvent(Enabled(), meta())], i // 4)
    iterator = store.read_all(after_position=0, batch_size=7)
    assert next(iterator).position == 1  # lazy: nothing beyond the first batch is required
    positions = [1] + [e.position for e in iterator]
    assert positions == list(range(1, 26))
    assert [e.position for e in store.read_all(after_position=20, batch_size=3)] == [
        21,
        22,
        23,
        24,
        25,
    ]
    assert list(store.read_all(after_position=25)) == []


def test_read_stream_up_to_a_position_or_a_time(store: EventStore) -> None:
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0)
    store.append(stream_id_for("b"), [installed("b", "https://b.atlassian.net")], 0)
    third = store.append(stream, [NewEvent(Enabled(), meta())], 1).events[0]
    store.append(stream, [NewEvent(Uninstalled(), meta())], 2)
    assert [e.version for e in store.read_stream(stream, up_to=third.position)] == [1, 2]
    assert [e.version for e in store.read_stream(stream, up_to=1)] == [1]
    at_third = store.read_stream(stream, up_to=third.recorded_at)
    assert [e.version for e in at_third][-1] >= 2
    before_all = store.read_stream(stream, up_to=third.recorded_at - timedelta(days=1))
    assert before_all == []


def test_read_stream_stored_gives_the_stream_rows_as_stored(store: EventStore) -> None:
    """The same rows as ``read_stream`` (and its ``up_to``), their data and metadata the
    stored bytes (as ``read_raw`` gives them), the time as its stored text."""
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0)
    store.append(stream_id_for("b"), [installed("b", "https://b.atlassian.net")], 0)
    changed = NewEvent(DetailsChanged(changes={"x": "é\n\x00", "n": 2**70}), meta("c2"))
    third = store.append(stream, [changed, NewEvent(Enabled(), meta("c2"))], 1).events[0]
    columns = ("position", "stream_id", "version", "type", "schema_version", "data",
               "metadata", "recorded_at", "hash")  # fmt: skip
    raw = [[getattr(r, c) for c in columns] for r in store.read_raw() if r.stream_id == stream]
    stored = store.read_stream_stored(stream)
    assert [[getattr(e, c) for c in columns] for e in stored] == raw
    assert {(type(e.data), type(e.metadata), type(e.recorded_at)) for e in stored} == {
        (bytes, bytes, str)
    }
    assert [e.version for e in store.read_stream_stored(stream, up_to=third.position)] == [1, 2]
    assert [e.version for e in store.read_stream_stored(stream, up_to=third.recorded_at)] == [
        e.version for e in store.read_stream(stream, up_to=third.recorded_at)
    ]
    assert store.read_stream_stored(stream, up_to=third.recorded_at - timedelta(days=1)) == []
    assert store.read_stream_stored(stream_id_for("nobody")) == []


def test_old_event_shapes_are_upcast_on_read_never_rewritten(store_url: str) -> None:
    """A DescriptorUpgraded stored with schema version 1 ({"version": ...}) reads as v2."""
    from eventstore.chain import GENESIS, link, row_digest

    with open_store(store_url) as store:
        pass
    data = '{"version":"7"}'
    metadata = '{"call_id":"legacy"}'
    stamp = "2024-01-02T03:04:05.000006Z"
    digest = row_digest(
        "tenant:old", 1, "DescriptorUpgraded", 1, stamp, data.encode(), metadata.encode()
    )
    chained = link(GENESIS, 1, digest).hex()
    row = (1, "tenant:old", 1, "DescriptorUpgraded", 1, data, metadata, stamp, chained)
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        conn.execute(
            "INSERT INTO events (position, stream_id, version, type, schema_version, data,"
            " metadata, recorded_at, hash) VALUES (?,?,?,?,?,?,?,?,?)",
            row,
        )
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute(
                "INSERT INTO events (position, stream_id, version, type, schema_version, data,"
                " metadata, recorded_at, hash) VALUES (%s,%s,%s,%s,%s,%s,%s,%s, decode(%s, 'hex'))",
                row,
            )
            pg.execute("UPDATE ledger_head SET position = 1, hash = decode(%s, 'hex')", [chained])
    with open_store(store_url) as store:
        [event] = store.read_stream("tenant:old")
        assert event.schema_version == 1
        assert event.data == DescriptorUpgraded(from_=None, to="7")
        assert store.verify().ok  # the stored bytes were not touched


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET type = 'Uninstalled'", "DELETE FROM events", "TRUNCATE events"],
)
def test_events_cannot_be_changed_inside_the_database(store_url: str, statement: str) -> None:
    with open_store(store_url) as store:
        store.append(stream_id_for("a"), [installed()], 0)
    if store_url.startswith("sqlite"):
        if statement.startswith("TRUNCATE"):
            statement = "DELETE FROM events"  # SQLite's truncate is an unqualified DELETE
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(statement)
        conn.close()
    else:
        for role in ("origin", "replica"):
            with psycopg.connect(store_url, autocommit=True) as pg:
                pg.execute(f"SET session_replication_role = {role}")
                with pytest.raises(psycopg.Error, match="append-only"):
                    pg.execute(statement)  # type: ignore[call-overload]
    with open_store(store_url) as store:
        assert store.head().position == 1
        assert store.verify().ok


def test_verify_names_the_first_tampered_event(store_url: str) -> None:
    with open_store(store_url) as store:
        for i in range(5):
            store.append(
                stream_id_for(f"t{i}"), [installed(f"t{i}", f"https://t{i}.atlassian.net")], 0
            )
        assert store.verify().ok
    # A superuser disables the guard and rewrites history.
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute(
            "UPDATE events SET data = replace(data, 't2.atlassian', 'evil.atlassian') WHERE position = 3"
        )
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            pg.execute(
                "UPDATE events SET data = replace(data, 't2.atlassian', 'evil.atlassian') WHERE position = 3"
            )
    with open_store(store_url) as store:
        report = store.verify()
    assert not report.ok
    assert report.first_bad_position == 3
    assert report.events == 2
    assert report.reason


def test_verify_notices_a_missing_event(store_url: str) -> None:
    with open_store(store_url) as store:
        for i in range(3):
            store.append(stream_id_for(f"t{i}"), [NewEvent(Enabled(), meta())], 0)
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER events_no_delete")
        conn.execute("DELETE FROM events WHERE position = 2")
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            pg.execute("DELETE FROM events WHERE position = 2")
    with open_store(store_url) as store:
        report = store.verify()
    assert not report.ok and report.first_bad_position == 2  # the missing one


def test_migrate_is_idempotent(store_url: str) -> None:
    with open_store(store_url) as store:
        store.append(stream_id_for("a"), [installed()], 0)
        store.migrate()
        store.migrate()
    with open_store(store_url) as again:
        assert again.head().position == 1


def test_data_keys_are_kept_once_and_can_be_destroyed(store: EventStore) -> None:
    assert store.get_data_key("tenant:a") is None
    assert store.put_data_key("tenant:a", b"first") == b"first"
    assert store.put_data_key("tenant:a", b"second") == b"first"
    assert store.destroy_data_key("tenant:a") is True
    assert store.get_data_key("tenant:a") is None
    assert store.destroy_data_key("tenant:a") is False


def test_postgres_is_unavailable_is_a_store_error() -> None:
    from eventstore.errors import StoreUnavailable

    bad = ADMIN_URL.rsplit("@", 1)[0] + "@127.0.0.1:1/postgres"
    with pytest.raises(StoreUnavailable):
        open_store(bad, timeout=1.0)


def test_a_first_install_stores_its_data_key_in_the_same_transaction(store: EventStore) -> None:
    stream = stream_id_for("a")
    store.append(stream, [installed()], 0, data_key=b"wrapped-1")
    assert store.get_data_key(stream) == b"wrapped-1"
    # A second key for the same stream is a conflict, and nothing of that call is stored.
    other = stream_id_for("b")
    store.put_data_key(other, b"already")
    with pytest.raises(ConcurrencyConflict):
        store.append(other, [installed("b")], 0, data_key=b"wrapped-2")
    assert store.get_data_key(other) == b"already"
    assert store.stream_version(other) == 0
    # A version conflict stores no key either.
    with pytest.raises(ConcurrencyConflict):
        store.append(stream_id_for("c"), [installed("c")], 3, data_key=b"wrapped-3")
    assert store.get_data_key(stream_id_for("c")) is None


# ------------------------------------------------------------------ hardening (issue 8)


@pytest.mark.parametrize("how", ["replace", "same position", "same stream version"])
def test_an_insert_over_an_existing_event_is_refused_inside_the_database(
    store_url: str, how: str
) -> None:
    with open_store(store_url) as store:
        store.append(stream_id_for("a"), [installed()], 0)
        store.append(stream_id_for("b"), [installed("b")], 0)
        before = [(e.position, e.hash) for e in store.read_all()]
    columns = "position, stream_id, version, type, schema_version, data, metadata, recorded_at"
    position, stream, version = {
        "replace": (1, "tenant:a", 1),
        "same position": (1, "tenant:z", 1),
        "same stream version": (99, "tenant:b", 1),
    }[how]
    if store_url.startswith("sqlite"):
        # REPLACE deletes the row in the way without firing delete triggers.
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute(
                f"INSERT OR REPLACE INTO events ({columns}, hash) VALUES (?, ?, ?, 'Uninstalled',"
                " 1, '{}', '{}', '2024-01-01T00:00:00.000000Z', '00')",
                (position, stream, version),
            )
        conn.close()
    else:
        # PostgreSQL has no REPLACE; its upsert updates the row, which the guard refuses.
        target = "(stream_id, version)" if how == "same stream version" else "(position)"
        with (
            psycopg.connect(store_url, autocommit=True) as pg,
            pytest.raises(psycopg.Error, match="append-only"),
        ):
            pg.execute(
                f"INSERT INTO events ({columns}, hash) VALUES (%s, %s, %s, 'Uninstalled', 1,"
                f" '{{}}', '{{}}', now(), '\\x00') ON CONFLICT {target}"
                " DO UPDATE SET type = 'Uninstalled'",
                (position, stream, version),
            )
    with open_store(store_url) as store:
        assert [(e.position, e.hash) for e in store.read_all()] == before
        assert store.verify().ok


def _refusal(at: datetime, **fields: Any) -> Rejection:
    base: dict[str, Any] = {
        "path": "/installed",
        "reason": "invalid_signature",
        "status": 401,
        "client_key": "ck-1",
        "base_url": "https://a.atlassian.net",
        "remote_addr": "203.0.113.7",
        "token_sha256": "ab" * 32,
        "detail": "the token's signature does not verify",
    }
    return Rejection(at=at, **(base | fields))


def test_control_characters_in_a_rejection_are_stored_escaped(store: EventStore) -> None:
    store.record_rejection(
        _refusal(
            utcnow(),
            client_key="evil\x00key",
            base_url="https://a.atlassian.net/\x1b[31m",
            path="/installed\x7f",
            detail="lone \ud800 surrogate\nand a newline",
        )
    )
    [row] = store.list_rejections()
    assert row.client_key == "evil\\x00key"
    assert row.base_url == "https://a.atlassian.net/\\x1b[31m"
    assert row.path == "/installed\\x7f"
    assert row.detail == "lone \\ud800 surrogate\\x0aand a newline"


def test_identical_refusals_in_one_window_are_one_row_with_a_count(store: EventStore) -> None:
    # A window starts on a multiple of REJECTION_WINDOW_SECONDS: stay inside one.
    window = REJECTION_WINDOW_SECONDS
    start = datetime.fromtimestamp((int(utcnow().timestamp()) // window) * window, UTC)
    coalesced = rejection_log_counters.coalesced
    for second in range(3):
        store.record_rejection(
            _refusal(start + timedelta(seconds=second), token_sha256=f"{second:064x}")
        )
    store.record_rejection(_refusal(start, reason="token_expired"))  # another reason
    store.record_rejection(_refusal(start, remote_addr="198.51.100.1"))  # another address
    store.record_rejection(_refusal(start, client_key="ck-2"))  # another tenant
    store.record_rejection(_refusal(start, path="/enabled"))  # another path
    store.record_rejection(_refusal(start + timedelta(seconds=window)))  # the next window
    rows = store.list_rejections()
    assert len(rows) == 6
    assert rejection_log_counters.coalesced - coalesced == 2
    [folded] = [r for r in rows if r.count > 1]
    assert folded.count == 3
    assert folded.at == start and folded.last_seen_at == start + timedelta(seconds=2)
    assert folded.token_sha256 == f"{0:064x}"  # the first refusal's
    assert all(r.count == 1 and r.last_seen_at == r.at for r in rows if r is not folded)
    # Most recently seen first; the answer shows the count and the last time.
    assert rows[0].at == start + timedelta(seconds=window)
    answer = folded.as_dict()
    assert answer["count"] == 3 and answer["last_seen_at"] == format_timestamp(
        start + timedelta(seconds=2)
    )


def test_rejections_older_than_the_retention_are_purged(store_url: str) -> None:
    now = utcnow()
    with open_store(store_url) as writer:
        for i in range(5):
            writer.record_rejection(_refusal(now - timedelta(days=3), client_key=f"old-{i}"))
        writer.record_rejection(_refusal(now - timedelta(hours=1), client_key="recent"))
    purged = rejection_log_counters.purged
    with open_store(store_url, rejection_retention_days=2, rejection_purge_interval=3600) as store:
        store.record_rejection(_refusal(now, client_key="new"))  # the first insert purges
        assert rejection_log_counters.purged - purged == 5
        store.record_rejection(_refusal(now - timedelta(days=3), client_key="late"))
        # At most one purge per interval: the late old row waits for the next one.
        assert {r.client_key for r in store.list_rejections()} == {"recent", "new", "late"}
        assert store.purge_rejections(now - timedelta(days=2)) == 1
    assert rejection_log_counters.purged - purged == 6


def test_connections_do_not_outlive_their_threads(store: EventStore) -> None:
    store.append(stream_id_for("a"), [installed()], 0)

    def read() -> None:
        assert store.stream_version(stream_id_for("a")) == 1

    read()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):  # 200 short-lived threads, 10 at a time
        threads = [threading.Thread(target=read) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    gc.collect()
    # A connection per thread left open would be two or three descriptors each.
    assert len(os.listdir("/proc/self/fd")) <= before + 12


def test_a_value_the_database_cannot_hold_is_a_non_retryable_store_fault(
    store: EventStore,
) -> None:
    # PostgreSQL cannot hold a NUL in text; SQLite no integer beyond 64 bits.
    with pytest.raises(StoreFault) as caught:
        store.read_stream("tenant:\x00", up_to=10**20)
    assert not caught.value.retryable
    assert not isinstance(caught.value.__cause__, StoreError)  # the driver's, chained


def test_a_locked_sqlite_database_is_unavailable_not_a_driver_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with open_store(url, busy_timeout=0.05) as store:
        blocker = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for attempt in (
                lambda: store.append(stream_id_for("a"), [installed()], 0),
                lambda: store.record_rejection(_refusal(utcnow())),
                lambda: store.put_data_key("tenant:a", b"k"),
            ):
                with pytest.raises(StoreUnavailable) as caught:
                    attempt()
                assert caught.value.retryable
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        store.append(stream_id_for("a"), [installed()], 0)  # and it recovers by itself


def test_a_failing_purge_never_fails_the_rejection_it_follows(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with open_store(store_url, rejection_retention_days=365) as store:
        store.record_rejection(_refusal(utcnow() - timedelta(days=100), client_key="old"))
    refuse_delete = {
        "sqlite": [
            "CREATE TRIGGER no_purge BEFORE DELETE ON rejections"
            " BEGIN SELECT RAISE(ABORT, 'no purge today'); END"
        ],
        "postgres": [
            "CREATE FUNCTION no_purge() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no purge today'; END $$",
            "CREATE TRIGGER no_purge BEFORE DELETE ON rejections"
            " FOR EACH ROW EXECUTE FUNCTION no_purge()",
        ],
    }
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        for statement in refuse_delete["sqlite"]:
            conn.execute(statement)
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            for statement in refuse_delete["postgres"]:
                pg.execute(statement)  # type: ignore[call-overload]
    with open_store(store_url, rejection_purge_interval=0) as store:
        store.record_rejection(_refusal(utcnow(), client_key="new"))  # does not raise
        assert {r.client_key for r in store.list_rejections()} == {"old", "new"}
    assert "rejection purge failed: StoreFault" in caplog.text


def test_a_full_sqlite_database_is_unavailable_and_recovers(tmp_path: Path) -> None:
    with open_store(f"sqlite:///{tmp_path / 'ledger.db'}") as store:
        store.append(stream_id_for("a"), [installed()], 0)
        conn = store.connection()  # this thread's: the limit below is per connection
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # "database or disk is full"
        big = DetailsChanged(changes={"blob": "x" * 200_000})
        with pytest.raises(StoreUnavailable):
            store.append(stream_id_for("a"), [NewEvent(big, meta())], 1)
        assert store.stream_version(stream_id_for("a")) == 1  # nothing half-written
        conn.execute("PRAGMA max_page_count = 1073741823")  # space again
        store.append(stream_id_for("a"), [NewEvent(big, meta())], 1)
        assert store.verify().ok


def _logged(store: EventStore, events: int) -> list[str]:
    """A synthetic log of every Connect event type, bulk-loaded; its stream ids."""
    from eventstore.testing.synthetic import RandomLog, chain_rows

    rows = list(chain_rows(RandomLog(seed=3).events(events), store.head()))
    store.import_rows(rows)
    return sorted({row.stream_id for row in rows})


def test_read_all_decodes_every_event_as_read_stream_does(store: EventStore) -> None:
    """read_all has its own fast path on PostgreSQL: the same typed events, times and hashes."""
    streams = _logged(store, 400)
    by_stream = [event for stream in streams for event in store.read_stream(stream)]
    everything = list(store.read_all(0, batch_size=64))
    assert [e.position for e in everything] == list(range(1, 401))
    assert sorted(everything, key=lambda e: e.position) == sorted(
        by_stream, key=lambda e: e.position
    )
    assert {type(e.data).__name__ for e in everything} >= {"Installed", "SecretRotated"}
    assert all(e.recorded_at.utcoffset() == timedelta(0) for e in everything)


def test_read_all_times_are_right_under_any_datestyle_and_time_zone(
    postgres_databases: Any,
) -> None:
    """read_all has the server write recorded_at as text; a database whose sessions use
    another DateStyle and TimeZone must read the same instants."""
    url = postgres_databases.create()
    with open_store(url) as store:
        _logged(store, 50)
        expected = list(store.read_all())
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE \"{name}\" SET datestyle = 'SQL, DMY'")
        conn.execute(f"ALTER DATABASE \"{name}\" SET timezone = 'Asia/Kathmandu'")
    with open_store(url) as store:
        assert list(store.read_all(0, batch_size=7)) == expected
        assert [e.recorded_at for e in store.read_all()] == [e.recorded_at for e in expected]
        assert [format_timestamp(e.recorded_at) for e in store.read_all()] == [
            format_timestamp(e.recorded_at) for e in expected
        ]
