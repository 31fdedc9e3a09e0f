"""The PostgreSQL store (production), on psycopg 3 with a connection pool.

Global order: every append runs `ledger_append()`, which takes the row lock on the
single `ledger_head` row before it assigns positions and holds it until commit.
Appends are therefore serialised, positions are handed out in commit order, and a
reader that tails the log by position can never see position n+1 before n. The hash
chain needs the previous hash anyway, so this lock costs nothing extra; the row
digests are computed by the client beforehand, so the lock is held only for a few
index lookups and inserts, and the whole append is one round trip.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from operator import itemgetter
from typing import Any, TypeVar

import msgspec
import psycopg
from psycopg.rows import TupleRow
from psycopg.types.string import ByteaBinaryLoader
from psycopg_pool import ConnectionPool, PoolTimeout

from eventstore.async_log import AsyncEventLog
from eventstore.bulk import ImportRefused, checked
from eventstore.chain import GENESIS
from eventstore.clock import parse_timestamp
from eventstore.data_keys import KeyCopiesRemain
from eventstore.database import PostgresDatabase
from eventstore.errors import (
    ConcurrencyConflict,
    StoreUnavailable,
    error_boundary,
)
from eventstore.events import decode_data, decode_metadata
from eventstore.postgres.append import Duplicate, PendingBatch
from eventstore.postgres.schema import MIGRATIONS, STATEMENTS
from eventstore.postgres.session import (
    QUICK_TIMEOUT_SECONDS,
    connect_once,
    libpq_url,
    probe,
    session_options,
    translate_error,
)
from eventstore.read_ahead import paged, read_ahead
from eventstore.rejections import REJECTION_PURGE_INTERVAL_SECONDS
from eventstore.schema_status import SchemaStatus
from eventstore.schema_status import require_current as check_current
from eventstore.sql import RejectionWrite, Row, Run, SQLStore
from eventstore.values import (
    AppendRequest,
    AppendResult,
    BatchOutcome,
    ChainRow,
    Head,
    NewEvent,
    RawEvent,
    RecordedEvent,
    StoredEvent,
    decode_event,
)

# How long destroying a data key waits to lock data_keys for its rewrite.
_SCRUB_LOCK_TIMEOUT = "3s"
_T = TypeVar("_T")


# A refusal in one statement (one round trip, its own transaction): coalesced into its
# row of the window (hit); else a row of the budget claimed (slot), and the refusal's own
# row inserted if it got one, the window's overflow row if not (the two candidates'
# columns are the parameters; the one that applies is inserted). Each refusal adds one
# to exactly one count. Two writers of the same new refusal may both claim a row; the
# second one's insert then coalesces, so a race can waste a row of the budget but never
# exceed it.
_RECORD_REJECTION = (
    f"WITH hit AS ({STATEMENTS.coalesce_rejection}),"
    f" slot AS ({STATEMENTS.claim_rejection_row_if('NOT EXISTS (SELECT 1 FROM hit)')}),"
    f" added AS (INSERT INTO rejections ({STATEMENTS.rejection_columns})"
    f" SELECT {STATEMENTS.rejection_columns} FROM (VALUES"
    f" (true, {STATEMENTS.rejection_marks}), (false, {STATEMENTS.rejection_marks}))"
    f" AS candidate (own, {STATEMENTS.rejection_columns})"
    " WHERE NOT EXISTS (SELECT 1 FROM hit) AND own = EXISTS (SELECT 1 FROM slot)"
    f"{STATEMENTS.rejection_upsert})"
    " SELECT count FROM hit UNION ALL SELECT count FROM added"
)
# Refusals recorded together commit in transactions of this many: every update of a row
# in one transaction walks the versions the transaction left of it before, so a batch
# that counts thousands on one overflow row in one transaction takes quadratic time.
_REJECTIONS_PER_TRANSACTION = 200


_IMPORT_COPY = (
    "COPY events (position, stream_id, version, type, schema_version, data, metadata,"
    " recorded_at, hash, call_id, chain_version) FROM STDIN (FORMAT BINARY)"
)
_IMPORT_TYPES = [
    "int8", "text", "int4", "text", "int2", "text", "text", "timestamptz", "bytea", "text", "int2"
]  # fmt: skip


def _import_columns(row: RawEvent) -> tuple[Any, ...]:
    return (
        row.position,
        row.stream_id,
        row.version,
        row.type,
        row.schema_version,
        row.data.decode(),
        row.metadata.decode(),
        parse_timestamp(row.recorded_at),
        bytes.fromhex(row.hash),
        row.call_id,
        row.chain_version,
    )


_CHAIN_QUERY = (
    "SELECT position, stream_id, version, type::varchar, schema_version,"
    " to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')::varchar,"
    " data, metadata, encode(hash, 'hex')::varchar, chain_version"
    " FROM events WHERE position > %s AND position <= %s ORDER BY position LIMIT %s"
)
_MAX_POSITION = 2**63 - 1
_VERSION = itemgetter(2)
# A stream's rows as stored (``read_stream_stored``), read in binary with text columns
# as bytes: data and metadata come as the stored JSON bytes, never decoded; the columns
# wanted as str are cast to varchar (which loads as str), the time in its one text form.
_STORED_STREAM = (
    "SELECT position, stream_id::varchar, version, type::varchar, schema_version, data,"
    " metadata, to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
    "::varchar, encode(hash, 'hex')::varchar FROM events WHERE stream_id = %s"
)

# read_all's page. recorded_at comes as the JSON string of its UTC time, which
# msgspec reads (in C) as an aware datetime: PostgreSQL writes the text cheaply, while
# psycopg's binary timestamptz loader costs more than the rest of the row. The text is
# ISO 8601 (with a space) under DateStyle ISO, every server's default; to_char, dearer
# for the server, makes it so under any other.
_EVENT_PAGE = (
    "SELECT position, stream_id::varchar, version, type, schema_version, data, metadata,"
    " '\"' || (recorded_at AT TIME ZONE 'UTC')::text || 'Z\"', hash"
    " FROM events WHERE position > %s ORDER BY position LIMIT %s"
)
_EVENT_PAGE_ANY_DATESTYLE = _EVENT_PAGE.replace(
    "(recorded_at AT TIME ZONE 'UTC')::text",
    "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
)
_decode_time = msgspec.json.Decoder(datetime).decode
_COLUMNS = [itemgetter(i) for i in range(9)]


def _page_events(rows: list[Any]) -> Iterator[RecordedEvent]:
    """A page of ``_EVENT_PAGE`` rows as typed events (``decode_event``'s work).

    Binary rows with text columns as bytes (msgspec decodes them without an
    intermediate str); one str per event type name per page. Lazy C-level ``map``s,
    no Python loop: each event is decoded as it is taken, so a row that cannot be
    decoded raises only after the events before it, and only a few objects are alive
    at a time (decoding a whole page first was slower: cache misses and
    garbage-collector passes over thousands of fresh objects).
    """
    position, stream, version, kind, schema, data, metadata, at, digest = (
        map(column, rows) for column in _COLUMNS
    )
    names = {name: name.decode() for name in set(map(_COLUMNS[3], rows))}
    types = list(map(names.__getitem__, kind))
    schemas = list(schema)
    return map(
        RecordedEvent,
        position,
        stream,
        version,
        types,
        schemas,
        map(decode_data, types, schemas, data),
        map(decode_metadata, metadata),
        map(_decode_time, at),
        map(bytes.hex, digest),
    )


def _append_cursor(conn: psycopg.Connection[TupleRow]) -> psycopg.Cursor[TupleRow]:
    """The connection's cursor for appends, kept on it for as long as it lives (a
    pooled connection serves one thread at a time). Kept, a cursor keeps its
    adapters and, while the statement is the same, the dumper found for each
    parameter: a new cursor per append looked them all up again (~20 µs of an
    append's client CPU)."""
    cursor: psycopg.Cursor[TupleRow] | None = getattr(conn, _APPEND_CURSOR, None)
    if cursor is None or cursor.closed:
        cursor = conn.cursor()
        setattr(conn, _APPEND_CURSOR, cursor)
    return cursor


_APPEND_CURSOR = "_ledger_append_cursor"


@error_boundary(translate_error)
class PostgresEventStore(SQLStore):
    sql = STATEMENTS

    def __init__(
        self,
        url: str,
        *,
        min_connections: int = 1,
        max_connections: int = 10,
        timeout: float = 5.0,
        statement_timeout: float = 15.0,
        migrate: bool = True,
        require_current: bool = False,
        rejection_retention_days: int = 90,
        rejection_purge_interval: float = REJECTION_PURGE_INTERVAL_SECONDS,
        **_other_backends: object,  # open_store passes every option; another backend's are ignored
    ) -> None:
        self.url = url
        self._bounds = (max_connections, timeout, statement_timeout)  # for async_log
        self._init_rejection_log(rejection_retention_days, rejection_purge_interval)
        self._quick_timeout = min(timeout, QUICK_TIMEOUT_SECONDS)
        # One plain connection first: a server that refuses it for good (no such
        # database, role or password) is said as such, not retried by the pool.
        connect_once(url, timeout)
        self._pool = ConnectionPool(
            libpq_url(url),
            min_size=min_connections,
            max_size=max_connections,
            timeout=timeout,
            kwargs={"connect_timeout": max(1, int(timeout))} | session_options(statement_timeout),
            # A pooled connection is tested before it is handed out: after a restart or
            # a failover, a dead one is replaced instead of failing one call each.
            check=self._check_connection,
            # The pool retries a lost connection with a doubling back-off; giving up
            # after a few seconds lets the next waiting call start afresh at once, so
            # the service is back within seconds of the database, after any outage.
            reconnect_timeout=max(1.0, timeout),
            open=False,
            name="ledger",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable("PostgreSQL did not answer") from exc
        self.database = PostgresDatabase(url, self._pool, translate_error)
        try:
            if migrate:
                self.migrate()
            if require_current:
                check_current(self.schema_status(), url)
        except BaseException:
            self._pool.close()
            raise

    def async_log(self, on_batch: Callable[[int], None] | None = None) -> AsyncEventLog:
        """An async psycopg pool of its own, with the same bounds (``postgres_async``)."""
        from eventstore.postgres.aio import AsyncPostgresLog

        connections, timeout, statement_timeout = self._bounds
        return AsyncPostgresLog(
            self.url,
            max_connections=connections,
            timeout=timeout,
            statement_timeout=statement_timeout,
            on_batch=on_batch,
        )

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    # -- schema

    def migrate(self) -> None:
        with self._connection() as conn, conn.transaction():
            # Serialise concurrent migrators (several service processes starting at once).
            conn.execute("SELECT pg_advisory_xact_lock(7406000001)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            current = row[0] if row else 0
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > current:
                    conn.execute(script)
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", [number])

    def schema_status(self) -> SchemaStatus:
        with self._connection() as conn:
            row = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            rows = (
                conn.execute(
                    "SELECT version, to_char(applied_at AT TIME ZONE 'UTC',"
                    ' \'YYYY-MM-DD"T"HH24:MI:SS"Z"\') FROM schema_migrations ORDER BY version'
                ).fetchall()
                if row and row[0]
                else []
            )
        return SchemaStatus(tuple((int(v), str(at)) for v, at in rows), len(MIGRATIONS))

    # -- writing

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        idempotency_key: str | None = None,
        data_key: bytes | None = None,
    ) -> AppendResult:
        request = AppendRequest(stream_id, events, expected_version, idempotency_key, data_key)
        (outcome,) = self.append_batch([request])
        if isinstance(outcome, ConcurrencyConflict):
            raise outcome
        return outcome

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        batches = PendingBatch.split(requests)  # encoded before any lock is taken
        with self._connection() as conn:
            cursor = _append_cursor(conn)
            if len(batches) == 1:  # one statement: its own transaction
                rows = [cursor.execute(*batches[0].statement(), prepare=True).fetchall()]
            else:  # a stream or key repeated: one statement per part, one transaction
                with conn.transaction():
                    rows = [
                        cursor.execute(*b.statement(), prepare=True).fetchall() for b in batches
                    ]
        outcomes = PendingBatch.outcomes_of(batches, rows, len(requests))
        return [self._outcome(outcome) for outcome in outcomes]

    def _outcome(self, outcome: BatchOutcome | Duplicate) -> BatchOutcome:
        if isinstance(outcome, Duplicate):
            return AppendResult(self._read_positions(outcome.first, outcome.last), duplicate=True)
        return outcome

    # -- reading

    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        # The hot path of every rebuild and full read (see _page_events). When the
        # first page is full, the next pages are fetched by a helper thread while this
        # one decodes: the server (on another core) and the decoding overlap.
        first = self._event_page(after_position, batch_size)
        pages: Iterator[list[Any]] = iter([first])
        stop = threading.Event()
        if len(first) == batch_size:
            pages = itertools.chain(pages, self._prefetched(first[-1][0], batch_size, stop))
        try:
            for rows in pages:
                yield from _page_events(rows)
        finally:
            stop.set()  # a reader that stops early releases the helper thread

    def _event_page(self, after: int, batch_size: int) -> list[Any]:
        with self._connection() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader("text", ByteaBinaryLoader)
            iso = (conn.info.parameter_status("DateStyle") or "").startswith("ISO")
            query = _EVENT_PAGE if iso else _EVENT_PAGE_ANY_DATESTYLE
            return cur.execute(query, [after, batch_size], prepare=True).fetchall()

    def _prefetched(
        self,
        after: int,
        batch_size: int,
        stop: threading.Event,
        page: Callable[[int, int], list[Any]] | None = None,
    ) -> Iterator[list[Any]]:
        """Pages after ``after`` (``page``, by default ``_event_page``), fetched one
        ahead by a daemon thread."""
        pages = paged(page or self._event_page, after, batch_size, itemgetter(0))
        return read_ahead(pages, depth=2, name="ledger-read-ahead", stop=stop)

    def read_chain(
        self, after_position: int = 0, through: int | None = None, batch_size: int = 10_000
    ) -> Iterator[ChainRow]:
        # verify's path: binary pages fetched one ahead by a helper thread (as read_all),
        # text columns as bytes (data and metadata are hashed as they come), and the
        # columns the chain needs as str cast to varchar, which loads as str.
        last = _MAX_POSITION if through is None else through
        stop = threading.Event()
        try:
            for rows in self._prefetched(
                after_position, batch_size, stop, lambda a, n: self._chain_page(a, last, n)
            ):
                yield from rows
        finally:
            stop.set()

    def _chain_page(self, after: int, last: int, batch_size: int) -> list[Any]:
        # Driver errors are left to the store's error boundary (raised in read_chain).
        with self._connection() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader("text", ByteaBinaryLoader)
            params = [after, last, batch_size]
            return cur.execute(_CHAIN_QUERY, params, prepare=True).fetchall()

    def read_stream_stored(
        self, stream_id: str, up_to: int | datetime | None = None
    ) -> list[StoredEvent]:
        # Sorted here, not by the server: unless the planner picks the index scan, it
        # sorts the whole rows (data and all: most of the statement's time for a long
        # stream), while the rows come nearly in order and sort here in linear time.
        query, params = self._stream_query(_STORED_STREAM, stream_id, up_to, ordered=False)
        with self._connection() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader("text", ByteaBinaryLoader)
            rows = cur.execute(query.encode(), params, prepare=True).fetchall()
        rows.sort(key=_VERSION)
        return list(itertools.starmap(StoredEvent, rows))

    def import_rows(self, rows: Iterable[RawEvent]) -> Head:
        # Binary COPY: no text escaping of the JSON bodies on either side. The head row
        # stays locked until commit, so appends wait and then chain onto the new head.
        try:
            with self._connection() as conn, conn.transaction():
                row = conn.execute("SELECT position, hash FROM ledger_head FOR UPDATE").fetchone()
                head = Head(row[0], bytes(row[1]).hex()) if row else Head(0, GENESIS.hex())
                with conn.cursor().copy(_IMPORT_COPY) as copy:
                    copy.set_types(_IMPORT_TYPES)
                    new_head = checked(rows, head, lambda r: copy.write_row(_import_columns(r)))
                conn.execute(
                    "UPDATE ledger_head SET position = %s, hash = %s",
                    [new_head.position, bytes.fromhex(new_head.hash)],
                )
                conn.execute("SELECT pg_notify('ledger_events', %s)", [str(new_head.position)])
        except psycopg.errors.UniqueViolation as exc:  # a (stream, version) taken already
            raise ImportRefused(f"import refused: {exc.diag.message_detail}") from None
        # Other driver errors are left to the store's error boundary.
        return new_head

    def head(self) -> Head:
        with self._connection() as conn:
            row = conn.execute("SELECT position, hash FROM ledger_head").fetchone()
        if row is None:
            return Head(0, GENESIS.hex())
        return Head(row[0], bytes(row[1]).hex())

    # -- the primitives of SQLStore. Errors raised here reach the caller through the
    # class's error boundary (translate_error), the one place they are mapped.

    def _rows(
        self, sql: str, params: Sequence[object] = (), *, quick: bool = False, prepare: bool = False
    ) -> list[Row]:
        with self._connection(self._quick_timeout if quick else None) as conn:
            cursor = conn.execute(sql.encode(), params, prepare=prepare or None)
            return cursor.fetchall() if cursor.description else []

    def _count(self, sql: str, params: Sequence[object] = ()) -> int:
        with self._connection() as conn:
            return conn.execute(sql.encode(), params).rowcount

    def _in_one_transaction(self, work: Callable[[Run], _T]) -> _T:
        with self._connection() as conn, conn.transaction():

            def run(sql: str, params: Sequence[object]) -> list[Row]:
                cursor = conn.execute(sql.encode(), params)
                return cursor.fetchall() if cursor.description else []

            return work(run)

    def _scrub_data_keys(self) -> None:
        # An UPDATE or DELETE leaves the old tuple's bytes in the page, and a plain
        # VACUUM only marks their space free (tested: the bytes stay readable);
        # VACUUM FULL writes the live rows into a new file and drops the old one.
        # The table is small (a key per tenant), but the rewrite locks it: waiting for
        # that lock is bounded, so calls that read keys are not held up behind it.
        # A role that does not own the table gets a warning, not an error, and nothing
        # rewritten: the warnings are caught and said.
        warnings: list[str] = []

        def on_notice(notice: psycopg.errors.Diagnostic) -> None:
            if notice.severity_nonlocalized == "WARNING":
                warnings.append(notice.message_primary or "a warning")

        with self._connection() as conn:
            conn.execute(f"SET lock_timeout = '{_SCRUB_LOCK_TIMEOUT}'")
            conn.add_notice_handler(on_notice)
            try:
                conn.execute("VACUUM FULL data_keys")
            except psycopg.errors.LockNotAvailable:
                raise KeyCopiesRemain(
                    "PostgreSQL could not lock data_keys to rewrite it (busy); run it again"
                ) from None
            finally:
                conn.remove_notice_handler(on_notice)
                conn.execute("RESET lock_timeout")
        if warnings:
            raise KeyCopiesRemain(
                f"PostgreSQL did not rewrite data_keys ({'; '.join(warnings)});"
                " run it again as the table's owner"
            )

    def _store_rejections(self, writes: Sequence[RejectionWrite]) -> list[int]:
        # _RECORD_REJECTION's parameters: hit's, slot's (the window, twice), added's.
        params = [(*w.key, w.window, w.window, *w.own, *w.overflow) for w in writes]
        if not params:
            return []
        with self._connection(self._quick_timeout) as conn:
            if len(params) == 1:  # the service's case: one statement, its own transaction
                return [conn.execute(_RECORD_REJECTION, params[0], prepare=True).fetchall()[0][0]]
            counts: list[int] = []
            for first in range(0, len(params), _REJECTIONS_PER_TRANSACTION):
                chunk = params[first : first + _REJECTIONS_PER_TRANSACTION]
                with conn.transaction(), conn.cursor() as cursor:  # pipelined
                    cursor.executemany(_RECORD_REJECTION, chunk, returning=True)
                    counts.append(cursor.fetchall()[0][0])
                    while cursor.nextset():
                        counts.append(cursor.fetchall()[0][0])
            return counts

    def _time_param(self, value: datetime) -> datetime:
        return value

    def _time_value(self, value: datetime) -> datetime:
        return value

    def _decode_row(self, row: Row) -> RecordedEvent:
        return decode_event(*row)

    # -- plumbing

    def ping(self) -> None:
        # A readiness probe answers quickly, whatever the pool's wait for a connection.
        with self._connection(self._quick_timeout) as conn:
            conn.execute("SELECT 1")

    def close(self) -> None:
        self._pool.close()

    def _check_connection(self, conn: psycopg.Connection[Any]) -> None:
        """The pool's check of a connection it is about to hand out."""
        try:
            probe(conn)
        except psycopg.Error:
            # One dead connection means a restart or a failover: the idle ones are dead
            # too. Replace them all now; checking them one by one, the pool would back
            # off 1, 2, 4 s between failures and the first calls would time out.
            self._pool.drain()
            raise

    def _connection(
        self, timeout: float | None = None
    ) -> AbstractContextManager[psycopg.Connection[TupleRow]]:
        # Errors raised here or in the block reach the caller through the class's
        # error boundary (translate_error), the one place they are mapped.
        return self._pool.connection(timeout=timeout)
