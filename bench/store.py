"""PostgreSQL store figures (SPEC §9): append rate and reading the whole log.

Every event comes from the product's synthetic log (``eventstore.testing.synthetic.RandomLog``:
all nine event types with realistic metadata, secrets sealed with AES-GCM).

a. Single-event appends, one transaction each, one writer: this project's
   ``PostgresEventStore.append`` (with the idempotency key the service passes) against
   the ``eventsourcing`` library's ``PostgresApplicationRecorder`` (one ``StoredEvent``
   per ``insert_events`` call, same payload bytes), each in its own fresh database on
   the same server. The two run in alternating rounds so that background noise (a
   checkpoint, another process) falls on both.

c. 32 concurrent writers, each appending single events to its own stream and awaiting
   each append, through the store's async log with group commit
   (``PostgresEventStore.async_log``): events/s, batches, and the chain verified.

b. ``read_all`` of 1,000,000 events decoded to typed ``RecordedEvent``s. The log is
   bulk-loaded with the store's own ``import_rows`` (binary COPY; the import recomputes
   the chain), checked with the store's own ``verify()``, and one real ``append`` is
   made on top. ``sum(1 for _ in store.read_all(0, batch_size))`` is timed for several
   batch sizes, then one pass is profiled.

Run: ``.venv/bin/python bench/store.py`` (full figures), or quicker:
``.venv/bin/python bench/store.py --events 3000 --seconds 3 --read-events 100000``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# LEDGER_BENCH_CODE names another checkout whose store is measured: an A/B with one bench.
if os.environ.get("LEDGER_BENCH_CODE"):
    sys.path.insert(0, os.environ["LEDGER_BENCH_CODE"])
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _benchkit import (
    load_synthetic,
    print_environment,
    print_profile,
    result_line,
    scratch_database,
)

from eventstore.chain import ChainCheck, column_links, verify_links
from eventstore.clock import utcnow
from eventstore.events import EventData, Metadata, data_to_json, metadata_to_json
from eventstore.postgres.store import PostgresEventStore
from eventstore.testing.synthetic import RandomLog
from eventstore.values import AppendRequest, NewEvent, prepare

APPEND_TARGET = 3000.0
APPEND_RATIO_TARGET = 3.0
READ_TARGET = 400_000.0
CONCURRENT_TARGET = 15_000.0


# ---------------------------------------------------------------- a. appends


@dataclass
class Rate:
    events: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class AppendWorkload:
    """Single-event appends: the synthetic log's events, one call each, in log order.

    ``ready(n)`` generates the next ``n`` before a round's clock starts: the synthetic
    log seals secrets with AES-GCM, which is not the store's work (nor the peer's)."""

    def __init__(self, seed: int) -> None:
        self.events = RandomLog(seed=seed).events(10**9)
        self.made: deque[tuple[int, str, EventData, Metadata]] = deque()

    def ready(self, count: int) -> None:
        self.made.extend(self._make() for _ in range(count - len(self.made)))

    def take(self) -> tuple[int, str, EventData, Metadata]:
        return self.made.popleft() if self.made else self._make()

    def _make(self) -> tuple[int, str, EventData, Metadata]:
        event = next(self.events)
        return event.version - 1, event.stream_id, event.data, event.metadata


def ledger_round(store: PostgresEventStore, work: AppendWorkload, limit: int, seconds: float) -> Rate:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while count < limit:
        version, stream_id, data, metadata = work.take()
        store.append(
            stream_id,
            [NewEvent(data, metadata)],
            expected_version=version,
            idempotency_key=metadata.token_sha256,
        )
        count += 1
        if count & 31 == 0 and time.perf_counter() > deadline:
            break
    return Rate(count, time.perf_counter() - started)


def eventsourcing_round(recorder: Any, work: AppendWorkload, limit: int, seconds: float) -> Rate:
    from eventsourcing.persistence import StoredEvent

    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while count < limit:
        version, stream_id, data, metadata = work.take()
        # Same bytes as the ledger stores: the event's data and metadata as JSON.
        state = b'{"data":' + data_to_json(data) + b',"metadata":' + metadata_to_json(metadata) + b"}"
        recorder.insert_events(
            [
                StoredEvent(
                    originator_id=uuid.UUID(stream_id[len("tenant:") :]),
                    originator_version=version + 1,
                    topic=f"ledger.events:{type(data).__name__}",
                    state=state,
                )
            ]
        )
        count += 1
        if count & 31 == 0 and time.perf_counter() > deadline:
            break
    return Rate(count, time.perf_counter() - started)


def eventsourcing_recorder(url: str) -> tuple[Any, Any]:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    datastore = PostgresDatastore(
        dbname=str(conninfo["dbname"]),
        host=str(conninfo.get("host", "127.0.0.1")),
        port=str(conninfo.get("port", 5432)),
        user=str(conninfo.get("user", "postgres")),
        password=str(conninfo.get("password", "")),
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
    recorder.create_table()
    return datastore, recorder


# The ceiling of part a: the physical work of one durable append and nothing else, one
# row of the events' shape (its table made LIKE events: the same columns, primary key
# and unique (stream_id, version)), one INSERT and its COMMIT per event (autocommit),
# a prepared statement, the row's bytes made before the clock starts.
_CEILING_TABLE = "CREATE TABLE ceiling_events (LIKE events INCLUDING ALL)"
_CEILING_INSERT = (
    "INSERT INTO ceiling_events (position, stream_id, version, type, schema_version, data,"
    " metadata, recorded_at, hash, call_id, chain_version)"
    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 2)"
)


class CeilingWorkload:
    """The same synthetic events as rows ready to insert (positions counted here)."""

    def __init__(self, seed: int) -> None:
        self.work = AppendWorkload(seed)
        self.position = 0

    def rows(self, count: int) -> list[tuple[Any, ...]]:
        made = []
        for _ in range(count):
            version, stream_id, data, metadata = self.work.take()
            p = prepare(NewEvent(data, metadata))
            self.position += 1
            made.append((self.position, stream_id, version + 1, p.type, p.schema_version,
                         p.data.decode(), p.metadata.decode(), utcnow(), os.urandom(32),
                         p.call_id))  # fmt: skip
        return made


def ceiling_round(
    conn: psycopg.Connection[Any], work: CeilingWorkload, limit: int, seconds: float
) -> Rate:
    rows = work.rows(limit)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    for row in rows:
        conn.execute(_CEILING_INSERT, row, prepare=True)
        count += 1
        if count & 31 == 0 and time.perf_counter() > deadline:
            break
    return Rate(count, time.perf_counter() - started)


def bench_append(events: int, seconds: float, rounds: int) -> None:
    from importlib.metadata import version

    print(
        f"\n-- a. single-event appends, one transaction each, one writer: up to {events} events"
        f" or {seconds:.0f} s per store, in {rounds} alternating rounds (the events made"
        " before each round's clock starts)"
    )
    with scratch_database("append") as ledger_url, scratch_database("es") as es_url:
        store = PostgresEventStore(ledger_url, min_connections=1, max_connections=1)
        datastore, recorder = eventsourcing_recorder(es_url)
        ceiling = psycopg.connect(ledger_url, autocommit=True)
        ceiling.execute(_CEILING_TABLE)
        print(
            f"   eventsourcing {version('eventsourcing')}: "
            f"PostgresApplicationRecorder, enable_db_functions={datastore.enable_db_functions}"
            " (library default: pipelined BEGIN; LOCK TABLE; NOTIFY; INSERT ... unnest; COMMIT)"
        )
        try:
            ours_work, es_work, top_work = AppendWorkload(1), AppendWorkload(2), CeilingWorkload(3)
            per_round = max(1, events // rounds)
            runs: dict[str, Callable[[int, float], Rate]] = {
                "ledger": lambda n, s: ledger_round(store, ours_work, n, s),
                "es": lambda n, s: eventsourcing_round(recorder, es_work, n, s),
                "ceiling": lambda n, s: ceiling_round(ceiling, top_work, n, s),
            }
            # Warm up: connections, prepared statements, the first pages of each index.
            for run in runs.values():
                run(300, 5)
            totals = {name: Rate() for name in runs}
            for number in range(rounds):
                ours_work.ready(per_round)
                es_work.ready(per_round)
                order = list(runs) if number % 2 == 0 else list(reversed(runs))
                for name in order:
                    rate = runs[name](per_round, seconds / rounds)
                    totals[name].events += rate.events
                    totals[name].seconds += rate.seconds
                    print(f"   round {number + 1} {name:<7} {rate.events:>6} events in "
                          f"{rate.seconds:6.2f} s = {rate.per_second:8.0f} events/s")
        finally:
            store.close()
            datastore.close()
            ceiling.close()
    ours, theirs, top = totals["ledger"], totals["es"], totals["ceiling"]
    print(f"   tenant ledger PostgresEventStore.append : {ours.per_second:8.0f} events/s "
          f"({ours.events} events, {ours.seconds:.2f} s, {1e3 / ours.per_second:.3f} ms each)")
    print(f"   eventsourcing PostgresApplicationRecorder: {theirs.per_second:8.0f} events/s "
          f"({theirs.events} events, {theirs.seconds:.2f} s, {1e3 / theirs.per_second:.3f} ms each)")
    print(f"   ceiling: one INSERT + COMMIT of an events row: {top.per_second:8.0f} events/s "
          f"({top.events} events, {top.seconds:.2f} s, {1e3 / top.per_second:.3f} ms each);"
          f" the append runs at {ours.per_second / top.per_second:.0%} of it")
    print(result_line("append_events_per_s", ours.per_second, "events/s", APPEND_TARGET))
    print(result_line("append_vs_eventsourcing", ours.per_second / theirs.per_second, "x",
                      APPEND_RATIO_TARGET))


# ---------------------------------------------------------------- c. group commit


async def concurrent_round(
    url: str, writers: int, seconds: float, seed: int
) -> tuple[int, float, list[int]]:
    """``writers`` tasks, each appending single events to its own stream, one after the
    other, each append awaited (acknowledged only after its commit), for ``seconds``."""
    store = PostgresEventStore(url, min_connections=1, max_connections=4)
    batches: list[int] = []
    log = store.async_log(on_batch=batches.append)
    await log.open()
    # Made before the clock starts: the synthetic log seals secrets, which is not the
    # store's work.
    work = iter(list(itertools.islice(RandomLog(seed=seed).events(10**9), int(seconds * 40_000))))
    deadline = time.perf_counter() + seconds
    done = 0

    async def writer(number: int) -> None:
        nonlocal done
        stream, version = f"tenant:{uuid.UUID(int=seed << 32 | number)}", 0
        while time.perf_counter() < deadline:
            event = next(work, None)
            if event is None:
                return
            await log.append(
                AppendRequest(stream, [NewEvent(event.data, event.metadata)], version,
                              idempotency_key=event.metadata.token_sha256)
            )  # fmt: skip
            version += 1
            done += 1

    started = time.perf_counter()
    try:
        await asyncio.gather(*(writer(n) for n in range(writers)))
        elapsed = time.perf_counter() - started
    finally:
        await log.aclose()
        store.close()
    return done, elapsed, batches


def bench_concurrent(writers: int, seconds: float) -> None:
    print(f"\n-- c. {writers} concurrent writers, single-event appends, group commit"
          f" (PostgresEventStore.async_log), {seconds:.0f} s")
    with scratch_database("group") as url:
        asyncio.run(concurrent_round(url, writers, 1.0, 1))  # warm-up: pool, prepared statements
        done, elapsed, batches = asyncio.run(concurrent_round(url, writers, seconds, 2))
        with PostgresEventStore(url) as store:
            if not store.verify().ok:
                raise SystemExit("the group-committed log does not verify")
    rate = done / elapsed
    print(f"   {done} appends in {elapsed:.2f} s, {len(batches)} transactions, mean batch"
          f" {sum(batches) / max(1, len(batches)):.1f}, largest {max(batches, default=0)};"
          " the log verifies")
    print(result_line("concurrent_append_events_per_s", rate, "events/s", CONCURRENT_TARGET))


# ---------------------------------------------------------------- b. read_all


def timed_count(make: Callable[[], Iterator[Any]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(1 for _ in make())
    return count, time.perf_counter() - started


# The ceilings of part b: the same rows, over one connection, in the same pages as
# read_all's (binary, text columns as bytes, recorded_at as the JSON string of its UTC
# time), the next page fetched by a thread while this one is used, as read_all does.
_CEILING_PAGE = (
    "SELECT position, stream_id::varchar, version, type, schema_version, data, metadata,"
    " '\"' || (recorded_at AT TIME ZONE 'UTC')::text || 'Z\"', hash"
    " FROM events WHERE position > %s ORDER BY position LIMIT %s"
)


def raw_pages(url: str, batch: int) -> Iterator[list[Any]]:
    """Every page of the log as psycopg's rows, one fetched ahead by a thread."""
    from concurrent.futures import ThreadPoolExecutor

    from psycopg.types.string import ByteaBinaryLoader

    with psycopg.connect(url, autocommit=True) as conn, ThreadPoolExecutor(1) as ahead:
        cursor = conn.cursor(binary=True)
        cursor.adapters.register_loader("text", ByteaBinaryLoader)

        def page(after: int) -> list[Any]:
            return cursor.execute(_CEILING_PAGE, [after, batch], prepare=True).fetchall()

        rows = page(0)
        while rows:
            following = ahead.submit(page, rows[-1][0]) if len(rows) == batch else None
            yield rows
            rows = following.result() if following else []


def raw_decoded(url: str, batch: int) -> Iterator[tuple[Any, ...]]:
    """Each row with its JSON decoded by msgspec in C, nothing more: data untyped (a
    dict), metadata as ``Metadata``, the time as a datetime, the hash as hex."""
    import msgspec

    data, meta = msgspec.json.Decoder().decode, msgspec.json.Decoder(Metadata).decode
    at = msgspec.json.Decoder(datetime).decode
    for rows in raw_pages(url, batch):
        for p, s, v, t, n, d, m, r, h in rows:
            yield p, s, v, t.decode(), n, data(d), meta(m), at(r), h.hex()


def bench_read(events: int, batch_sizes: list[int], profile: bool, repeats: int) -> None:
    print(f"\n-- b. read_all of {events:,} events decoded to typed RecordedEvents")
    with scratch_database("read") as url:
        # The import is one COPY that lasts as long as generating the log (minutes at 1M).
        store = PostgresEventStore(
            url, min_connections=1, max_connections=2, statement_timeout=3600.0
        )
        try:
            load_synthetic(store, events)
            check_chain(store)
            # Warm the page cache (the table is larger than shared_buffers) with one pass.
            count, seconds = timed_count(lambda: store.read_all(0, batch_sizes[0]))
            print(f"   warm-up pass (batch {batch_sizes[0]}): {count:,} events in {seconds:.2f} s"
                  f" = {count / seconds:,.0f} events/s")
            assert count == events + 1, count
            best = (0.0, 0)
            for batch in batch_sizes:
                rates = []
                for _ in range(repeats):
                    count, seconds = timed_count(lambda b=batch: store.read_all(0, b))  # type: ignore[misc]
                    rates.append(count / seconds)
                rate = max(rates)
                print(f"   read_all batch_size={batch:>6}: {count:,} events, best of {repeats}"
                      f" {rate:10,.0f} events/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
                best = max(best, (rate, batch))
            rate, batch = best
            print_read_ceilings(url, batch, repeats, rate)
            if profile:
                print_profile(f"read_all (batch {batch}, whole log)",
                              lambda: sum(1 for _ in store.read_all(0, batch)))
            print(f"   best: batch_size={batch}, {rate:,.0f} events/s")
            print(result_line("read_all_events_per_s", rate, "events/s", READ_TARGET))
        finally:
            store.close()


def print_read_ceilings(url: str, batch: int, repeats: int, rate: float) -> None:
    """The ceilings beside read_all's best figure (best of ``repeats`` each)."""
    ceilings: dict[str, Callable[[], Iterator[Any]]] = {
        "the pages only (psycopg's rows, nothing decoded)": lambda: itertools.chain.from_iterable(
            raw_pages(url, batch)
        ),
        "the pages, each row's JSON decoded by msgspec (data untyped)": lambda: raw_decoded(
            url, batch
        ),
    }
    for label, make in ceilings.items():
        best = max(count / seconds for count, seconds in (timed_count(make) for _ in range(repeats)))
        print(f"   ceiling (batch {batch}): {label}: {best:10,.0f} events/s;"
              f" read_all runs at {rate / best:.0%} of it")


def check_chain(store: PostgresEventStore) -> None:
    """The bulk-loaded log is the store's own: verify(), then a real append on top."""
    started = time.perf_counter()
    report = store.verify()
    if not report.ok:
        raise SystemExit(f"bulk-loaded chain does not verify: {report}")
    print(f"   store.verify(): ok, {report.events:,} events in"
          f" {time.perf_counter() - started:.1f} s")
    before = store.head()
    event = next(RandomLog(seed=99).events(1))
    store.append(event.stream_id, [NewEvent(event.data, event.metadata)], 0)
    check = ChainCheck(before.position, bytes.fromhex(before.hash), stored_head=store.head())
    if not verify_links(column_links(store.read_chain(before.position)), check).ok:
        raise SystemExit("a real append on top of the bulk-loaded log does not chain")
    print("   a real store.append() on top of the imported head chains correctly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000,
                        help="appends per store in part a (default 20000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="time budget per store in part a (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds in part a")
    parser.add_argument("--read-events", type=int, default=1_000_000,
                        help="events bulk-loaded for part b (default 1000000)")
    parser.add_argument("--batch-sizes", default="5000,10000,20000,50000",
                        help="read_all batch sizes to try (default 5000,10000,20000,50000)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed read passes per batch size; the best counts (default 2)")
    parser.add_argument("--writers", type=int, default=32,
                        help="concurrent writers in part c (default 32)")
    parser.add_argument("--only", choices=("append", "concurrent", "read"),
                        help="run one part only")
    args = parser.parse_args()
    print_environment("bench/store.py: PostgreSQL event store")
    started = time.perf_counter()
    if args.only in (None, "append"):
        bench_append(args.events, args.seconds, args.rounds)
    if args.only in (None, "concurrent"):
        bench_concurrent(args.writers, args.seconds)
    if args.only in (None, "read"):
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
        bench_read(args.read_events, sizes, not args.no_profile, max(1, args.repeats))
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
