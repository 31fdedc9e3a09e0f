"""Group commit (``eventstore.async_log``) on both stores: concurrent appends committed
together keep every guarantee of a single append (expected versions, gap-free
positions, the chain, idempotency); a conflict inside a batch fails only its own
append; a batch that fails or a writer killed mid-batch leaves nothing half-stored
and loses nothing it acknowledged."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest

from app.ingest import shell
from eventstore import open_store
from eventstore.async_log import AsyncEventLog, GroupCommit
from eventstore.errors import ConcurrencyConflict, StoreFault, StoreUnavailable
from eventstore.events import DetailsChanged, Enabled, Metadata, stream_id_for
from eventstore.store import EventStore
from eventstore.values import AppendRequest, AppendResult, BatchOutcome, NewEvent
from tests.conftest import PostgresDatabases
from tests.contract.test_shell import STREAM, Add
from tests.contract.test_shell import Counter as CounterDecider

ROOT = Path(__file__).resolve().parents[2]


def _event(i: int) -> NewEvent:
    return NewEvent(DetailsChanged(changes={"i": i}), Metadata(call_id=f"call-{i}"))


def _request(stream: str, expected: int, i: int, key: str | None = None) -> AppendRequest:
    return AppendRequest(stream_id_for(stream), [_event(i), NewEvent(Enabled(), Metadata())],
                         expected, idempotency_key=key)  # fmt: skip


async def _with_log(store: EventStore, batches: list[int] | None = None) -> AsyncEventLog:
    log = store.async_log(on_batch=None if batches is None else batches.append)
    await log.open()
    return log


def _assert_log_is_whole(store: EventStore) -> None:
    positions = [e.position for e in store.read_all()]
    assert positions == list(range(1, len(positions) + 1))
    assert store.verify().ok
    versions: dict[str, list[int]] = {}
    for event in store.read_all():
        versions.setdefault(event.stream_id, []).append(event.version)
    for stream, seen in versions.items():
        assert seen == list(range(1, len(seen) + 1)), stream


def test_a_batch_commits_together_and_a_conflict_fails_only_its_own_append(
    store: EventStore,
) -> None:
    requests = [
        _request("a", 0, 1),
        _request("b", 0, 2),
        _request("a", 0, 3),  # the same expected version as the first: a conflict
        _request("c", 0, 4, key="k-1"),
        _request("d", 0, 5, key="k-1"),  # the key of the fourth: a duplicate of it
    ]
    outcomes = store.append_batch(requests)
    assert isinstance(outcomes[0], AppendResult) and not outcomes[0].duplicate
    assert isinstance(outcomes[1], AppendResult)
    assert isinstance(outcomes[2], ConcurrencyConflict) and outcomes[2].actual in (2, None)
    assert isinstance(outcomes[3], AppendResult) and not outcomes[3].duplicate
    fourth, fifth = outcomes[3], outcomes[4]
    assert isinstance(fifth, AppendResult) and fifth.duplicate
    assert [e.position for e in fifth.events] == [e.position for e in fourth.events]
    assert store.stream_version(stream_id_for("a")) == 2
    assert store.stream_version(stream_id_for("d")) == 0
    assert store.read_stream(stream_id_for("a"))[0].data == _event(1).data
    _assert_log_is_whole(store)


def test_concurrent_appends_are_batched_and_every_acknowledged_one_is_stored(
    store: EventStore,
) -> None:
    writers, per_writer = 32, 8
    batches: list[int] = []

    async def main() -> list[AppendResult]:
        log = await _with_log(store, batches)
        try:

            async def writer(w: int) -> list[AppendResult]:
                return [await log.append(_request(f"w{w}", 2 * i, i)) for i in range(per_writer)]

            done = await asyncio.gather(*(writer(w) for w in range(writers)))
            return [r for results in done for r in results]
        finally:
            await log.aclose()

    results = asyncio.run(main())
    assert len(results) == writers * per_writer
    assert sum(batches) == writers * per_writer  # each append was in exactly one batch
    assert max(batches) > 1, batches  # 32 writers at once do share commits
    stored = {(e.stream_id, e.version): e.position for e in store.read_all()}
    for result in results:
        for event in result.events:
            assert stored[(event.stream_id, event.version)] == event.position
    _assert_log_is_whole(store)


def test_the_shell_retries_a_conflict_lost_inside_a_batch(store: EventStore) -> None:
    """Writers of one stream race in the same batches; every command lands once."""

    async def main() -> list[shell.Result]:
        log = await _with_log(store)
        try:
            return await asyncio.gather(
                *(shell.run(CounterDecider(), log, STREAM, Add(1)) for _ in range(24))
            )
        finally:
            await log.aclose()

    results = asyncio.run(main())
    assert all(r.appended for r in results)
    assert max(r.attempts for r in results) > 1  # some lost a race and decided again
    assert store.stream_version(STREAM) == 24
    _assert_log_is_whole(store)


def test_a_failed_batch_fails_every_caller_and_stores_nothing() -> None:
    """The writer's contract, independent of a database: the batch's error reaches each
    caller of it; the next batch is independent of it."""
    calls: list[list[str]] = []

    async def commit(requests: list[AppendRequest]) -> list[BatchOutcome]:
        calls.append([r.stream_id for r in requests])
        await asyncio.sleep(0.01)
        if len(calls) == 2:
            raise StoreUnavailable("gone")
        return [AppendResult([], duplicate=False) for _ in requests]

    async def main() -> list[object]:
        writer = GroupCommit(commit)
        first = asyncio.ensure_future(writer.append(_request("x", 0, 0)))
        await asyncio.sleep(0)  # the first batch is in flight: the next ones queue
        rest = [asyncio.ensure_future(writer.append(_request(f"y{i}", 0, i))) for i in range(5)]
        outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        after = await writer.append(_request("z", 0, 9))
        return [*outcomes, after]

    outcomes = asyncio.run(main())
    assert calls[0] == [stream_id_for("x")] and len(calls[1]) == 5 and len(calls) == 3
    assert isinstance(outcomes[0], AppendResult)
    assert all(isinstance(o, StoreUnavailable) for o in outcomes[1:6])
    assert isinstance(outcomes[6], AppendResult)


def test_a_batch_whose_connection_dies_mid_commit_stores_nothing(
    postgres_databases: PostgresDatabases,
) -> None:
    """PostgreSQL: a batch waits on the head lock another session holds; its backend is
    terminated meanwhile. Every append of it is refused as retryable, nothing of it is
    stored, and the next batch commits on a new connection."""
    # SQLite's writer has no backend of its own to end: the kill test covers it.
    store_url = postgres_databases.create()
    store = open_store(store_url)
    store.append(stream_id_for("before"), [_event(0)], 0)

    async def main() -> tuple[list[object], AppendResult]:
        log = await _with_log(store)
        with psycopg.connect(store_url, autocommit=False) as blocker:
            blocker.execute("SELECT 1 FROM ledger_head FOR UPDATE")
            # Queued in one tick: the writer takes all six as one batch.
            batch = [asyncio.ensure_future(log.append(_request(f"s{i}", 0, i))) for i in range(6)]
            await asyncio.sleep(0.5)  # the batch now waits on the lock, mid-transaction
            killed = blocker.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname ="
                " current_database() AND pid <> pg_backend_pid() AND state = 'active' AND query LIKE"
                " '%ledger_try_append_batch%'"
            ).fetchall()
            assert killed, "no batch was waiting on the head lock"
            outcomes = await asyncio.gather(*batch, return_exceptions=True)
            blocker.rollback()
        after = await log.append(_request("after", 0, 9))
        await log.aclose()
        return outcomes, after

    try:
        outcomes, after = asyncio.run(main())
        assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        assert all(store.stream_version(stream_id_for(f"s{i}")) == 0 for i in range(6))
        assert [e.version for e in after.events] == [1, 2]
        _assert_log_is_whole(store)
    finally:
        store.close()


def test_a_batch_refused_by_the_database_is_refused_whole(
    postgres_databases: PostgresDatabases,
) -> None:
    """PostgreSQL: a value the database refuses (a NUL in text) in the last append of a
    batch fails every append of it; the first ones are not left stored."""
    with open_store(postgres_databases.create()) as store:
        requests = [_request("ok-1", 0, 1), _request("ok-2", 0, 2), _request("bad\x00", 0, 3)]
        with pytest.raises(StoreFault):
            store.append_batch(requests)

        async def main() -> list[object]:
            log = await _with_log(store)
            try:
                batch = [asyncio.ensure_future(log.append(r)) for r in requests]
                return await asyncio.gather(*batch, return_exceptions=True)
            finally:
                await log.aclose()

        assert all(isinstance(o, StoreFault) for o in asyncio.run(main()))
        assert store.head().position == 0
        assert store.stream_version(stream_id_for("ok-1")) == 0


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from eventstore.events import DetailsChanged, Enabled, Metadata, stream_id_for
    from eventstore import open_store
    from eventstore.values import AppendRequest, NewEvent

    async def main(url):
        store = open_store(url)
        log = store.async_log()
        await log.open()

        async def writer(w):
            for i in range(10_000):
                events = [NewEvent(DetailsChanged(changes={"i": i}), Metadata()),
                          NewEvent(Enabled(), Metadata())]
                await log.append(AppendRequest(stream_id_for(f"w{w}"), events, 2 * i))
                print(f"w{w} {2 * i + 2}", flush=True)  # acknowledged: committed

        await asyncio.gather(*(writer(w) for w in range(16)))

    asyncio.run(main(sys.argv[1]))
    """
)


def test_a_writer_killed_mid_batch_loses_nothing_it_acknowledged(
    store_url: str, store: EventStore
) -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", _WRITER, store_url],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert process.stdout is not None
    acknowledged: dict[str, int] = {}
    deadline = time.monotonic() + 60
    while len(acknowledged) < 16 or sum(acknowledged.values()) < 400:
        line = process.stdout.readline()
        assert line and time.monotonic() < deadline, "the writer stopped early"
        stream, version = line.split()
        acknowledged[stream] = int(version)
    os.kill(process.pid, signal.SIGKILL)  # batches are in flight all the time
    process.wait(10)
    stored = Counter(stream for stream in (e.stream_id for e in store.read_all()))
    for stream, version in acknowledged.items():
        assert stored[stream_id_for(stream)] >= version  # nothing acknowledged is lost
    assert all(count % 2 == 0 for count in stored.values())  # no append half-stored
    _assert_log_is_whole(store)


def test_ledger_append_still_serves_writers_on_older_code(
    postgres_databases: PostgresDatabases,
) -> None:
    """PostgreSQL: ``ledger_append`` (what a process on older code calls during a rolling
    upgrade) is now a batch of one, and still raises a conflict as an error."""
    url = postgres_databases.create()
    with open_store(url) as store:
        store.append(stream_id_for("a"), [_event(0)], 0)
        with psycopg.connect(url, autocommit=True) as conn:
            call = (
                "SELECT o_position, o_duplicate FROM ledger_append(%s, %s, NULL, ARRAY['Enabled'],"
                " ARRAY[1]::smallint[], ARRAY['{}'], ARRAY['{}'], ARRAY[NULL]::text[], now(),"
                " ARRAY[%s]::bytea[], NULL)"
            )
            rows = conn.execute(call, [stream_id_for("a"), 1, b"\x01" * 32]).fetchall()
            assert rows == [(2, False)]
            with pytest.raises(psycopg.Error) as raised:
                conn.execute(call, [stream_id_for("a"), 1, b"\x01" * 32])
            assert raised.value.sqlstate == "LD001"
        assert store.stream_version(stream_id_for("a")) == 2
        assert store.head().position == 2
