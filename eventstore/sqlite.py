"""The SQLite store: the embedded default, one file in WAL mode, zero set-up.

Global order: writers open `BEGIN IMMEDIATE`, which takes SQLite's single write
lock before the head is read, so positions are assigned and committed strictly one
transaction after another; a tailing reader can never see position n+1 before n.
Several processes may append; they queue on that lock (busy timeout).
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from itertools import starmap
from pathlib import Path
from typing import TypeVar

from eventstore.bulk import ImportRefused, checked
from eventstore.chain import GENESIS, PreparedAppend, link, prepare_append
from eventstore.clock import format_timestamp, parse_timestamp, utcnow
from eventstore.data_keys import KeyCopiesRemain
from eventstore.database import SQLiteDatabase
from eventstore.errors import (
    ConcurrencyConflict,
    StoreError,
    StoreFault,
    StoreMissing,
    StoreUnavailable,
    error_boundary,
)
from eventstore.rejections import REJECTION_PURGE_INTERVAL_SECONDS
from eventstore.schema_status import SchemaStatus
from eventstore.schema_status import require_current as check_current
from eventstore.sql import RejectionWrite, Row, Run, SQLStore, Statements
from eventstore.values import (
    AppendRequest,
    AppendResult,
    BatchOutcome,
    Head,
    NewEvent,
    RawEvent,
    RecordedEvent,
    StoredEvent,
    decode_event,
)

# SQLite's primary result codes after which the same work may succeed later (a 503
# and the host's retry): BUSY and LOCKED (another writer past the busy timeout),
# NOMEM, IOERR (disk I/O), FULL (database or disk is full), CANTOPEN, PROTOCOL (WAL
# lock race) and READONLY (the file or its directory made read-only).
RETRYABLE_SQLITE_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})

_T = TypeVar("_T")


def translate_error(exc: Exception) -> StoreError | None:
    """The one mapping of SQLite errors to store errors (see error_boundary)."""
    if isinstance(exc, sqlite3.Error):
        code: int | None = getattr(exc, "sqlite_errorcode", None)
        if code is None:
            retryable = isinstance(exc, sqlite3.OperationalError)
        else:
            retryable = code & 0xFF in RETRYABLE_SQLITE_CODES
        name: str | None = getattr(exc, "sqlite_errorname", None)
        if retryable:
            # The error's name (SQLITE_BUSY, SQLITE_FULL…) says which; never a value.
            return StoreUnavailable(f"SQLite is unavailable ({name or type(exc).__name__})")
        return StoreFault(f"SQLite refused the work ({type(exc).__name__})", name)
    if isinstance(exc, UnicodeError | OverflowError):
        # A value SQLite cannot hold (a lone surrogate, an integer beyond 64 bits).
        return StoreFault(f"SQLite cannot hold a value ({type(exc).__name__})")
    return None


MIGRATIONS: list[str] = [
    """
    CREATE TABLE events (
        position        INTEGER PRIMARY KEY,
        stream_id       TEXT NOT NULL,
        version         INTEGER NOT NULL CHECK (version > 0),
        type            TEXT NOT NULL,
        schema_version  INTEGER NOT NULL,
        data            TEXT NOT NULL,
        metadata        TEXT NOT NULL,
        recorded_at     TEXT NOT NULL,
        hash            TEXT NOT NULL,
        call_id         TEXT,
        UNIQUE (stream_id, version)
    );
    CREATE INDEX events_recorded_at ON events (stream_id, recorded_at);
    CREATE TRIGGER events_no_update BEFORE UPDATE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: UPDATE is refused'); END;
    -- SQLite has no TRUNCATE: an unqualified DELETE is its truncate, and this trigger
    -- also turns off the truncate optimisation, so it is refused row by row.
    CREATE TRIGGER events_no_delete BEFORE DELETE ON events
        BEGIN SELECT RAISE(ABORT, 'events are append-only: DELETE is refused'); END;

    CREATE TABLE idempotency_keys (
        key             TEXT PRIMARY KEY,
        stream_id       TEXT NOT NULL,
        first_position  INTEGER NOT NULL,
        last_position   INTEGER NOT NULL
    );
    CREATE TABLE data_keys (
        stream_id   TEXT PRIMARY KEY,
        wrapped     BLOB NOT NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE rejections (
        id            INTEGER PRIMARY KEY,
        at            TEXT NOT NULL,
        path          TEXT NOT NULL,
        reason        TEXT NOT NULL,
        status        INTEGER NOT NULL,
        client_key    TEXT,
        base_url      TEXT,
        remote_addr   TEXT,
        token_sha256  TEXT,
        detail        TEXT
    );
    """,
    # 2: chain version 2 (eventstore/chain.py): each row records which row digest hashed
    # it; rows written before this migration keep version 1.
    """
    ALTER TABLE events ADD COLUMN chain_version INTEGER NOT NULL DEFAULT 1;
    """,
    # 3: no insert over an existing event. INSERT OR REPLACE deletes the old row
    # without firing delete triggers, so the guard is on the insert itself.
    """
    CREATE TRIGGER events_no_overwrite BEFORE INSERT ON events
        WHEN EXISTS (SELECT 1 FROM events WHERE position = NEW.position)
          OR EXISTS (SELECT 1 FROM events
                     WHERE stream_id = NEW.stream_id AND version = NEW.version)
        BEGIN SELECT RAISE(ABORT, 'events are append-only: an insert over an event is refused');
        END;
    """,
    # 4: identical refusals coalesced into one row per window (count, last_seen_at),
    # and the indexes the retention purge and the newest-first listing use.
    """
    ALTER TABLE rejections ADD COLUMN count INTEGER NOT NULL DEFAULT 1;
    ALTER TABLE rejections ADD COLUMN last_seen_at TEXT;
    ALTER TABLE rejections ADD COLUMN fingerprint TEXT;
    ALTER TABLE rejections ADD COLUMN window_number INTEGER;
    UPDATE rejections SET last_seen_at = at;
    CREATE UNIQUE INDEX rejections_coalesce ON rejections (fingerprint, window_number);
    CREATE INDEX rejections_at ON rejections (at);
    CREATE INDEX rejections_last_seen ON rejections (last_seen_at, id);
    """,
    # 5: a row budget per window (eventstore.rejections.REJECTION_ROW_BUDGET): the
    # refusals beyond it are counted on an overflow row. rejection_windows counts the
    # rows each window has claimed (it starts empty: the window of the upgrade may keep
    # up to one budget more).
    """
    ALTER TABLE rejections ADD COLUMN overflow INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE rejection_windows (
        window_number  INTEGER PRIMARY KEY,
        rows_kept      INTEGER NOT NULL
    );
    """,
    # 6: webhook deliveries (SPEC §11, app.outbound): per webhook URL, the last position
    # delivered (every message of it), bumped ``generation`` on a replay, and the last
    # attempt. Keyed by the URL's SHA-256; ``label`` is the URL without credentials.
    """
    CREATE TABLE webhook_deliveries (
        url_id        TEXT PRIMARY KEY,
        label         TEXT NOT NULL,
        position      INTEGER NOT NULL,
        generation    INTEGER NOT NULL DEFAULT 0,
        failures      INTEGER NOT NULL DEFAULT 0,
        attempted_at  TEXT,
        delivered_at  TEXT,
        last_error    TEXT
    );
    """,
    # 7: nothing here; PostgreSQL's step 7 sets how its append function is planned
    # (SQLite's append is no server function). Kept so both stores count the same steps.
    "",
]

# Times are kept as text in their one stored form; the hash as hex text.
STATEMENTS = Statements("?", hash_hex="hash", recorded_at_text="recorded_at")
_INSERT_EVENT = (
    f"INSERT INTO events ({STATEMENTS.raw_columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


HEAD_QUERY = "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
# A stream's rows as stored (``read_stream_stored``): the JSON text as its UTF-8 bytes,
# the time and the hash already in their text forms.
_STORED_STREAM = (
    "SELECT position, stream_id, version, type, schema_version, CAST(data AS BLOB),"
    " CAST(metadata AS BLOB), recorded_at, hash FROM events WHERE stream_id = ?"
)


def _into_wal(conn: sqlite3.Connection, patience: float) -> None:
    """WAL mode, waiting for it as for any lock: switching a new file into WAL needs it
    alone for a moment, and SQLite may answer SQLITE_BUSY at once rather than call the
    busy handler (several processes opening a new store together)."""
    deadline = time.monotonic() + patience
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def sqlite_path(url: str) -> str:
    if not url.startswith("sqlite:///"):
        raise ValueError("a SQLite URL looks like sqlite:///relative/path.db or sqlite:////abs.db")
    return url[len("sqlite:///") :]


class _ThreadConnection:
    """One thread's connection. It lives in the store's thread-local slot only, so when
    the thread ends (anyio retires idle workers) the slot is cleared and the
    connection is closed: descriptors stay bounded by the threads alive."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __del__(self) -> None:
        self.conn.close()


@error_boundary(translate_error)
class SQLiteEventStore(SQLStore):
    sql = STATEMENTS

    def __init__(
        self,
        url: str,
        *,
        busy_timeout: float = 30.0,
        migrate: bool = True,
        create: bool = True,
        require_current: bool = False,
        rejection_retention_days: int = 90,
        rejection_purge_interval: float = REJECTION_PURGE_INTERVAL_SECONDS,
        **_other_backends: object,  # open_store passes every option; another backend's are ignored
    ) -> None:
        self.url = url
        self.path = sqlite_path(url)
        # Not created: opened by a file: URI in mode=rw, so a file removed meanwhile is
        # not created afresh by a connection either.
        self._uri = None if create else Path(self.path).resolve().as_uri() + "?mode=rw"
        if create:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        elif not Path(self.path).is_file():
            raise StoreMissing(
                f"no ledger store at {Path(self.path).resolve()} (LEDGER_DATABASE_URL={url}):"
                " point LEDGER_DATABASE_URL at the store, or run `ledger migrate` to create"
                " one; nothing was created"
            )
        self._init_rejection_log(rejection_retention_days, rejection_purge_interval)
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._open: weakref.WeakSet[_ThreadConnection] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.database = SQLiteDatabase(self.path, self.connection, translate_error)
        if migrate:
            self.migrate()
        if require_current:
            check_current(self.schema_status(), url)

    # -- connections: one per live thread (sqlite3 connections are not thread-safe)

    def connection(self) -> sqlite3.Connection:
        held: _ThreadConnection | None = getattr(self._local, "held", None)
        if held is None:
            conn = sqlite3.connect(
                self._uri or self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                uri=self._uri is not None,
            )
            try:
                _into_wal(conn, self._busy_timeout)
                # FULL: an accepted call survives a power cut, not only a crash.
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
            except BaseException:
                conn.close()
                raise
            held = self._local.held = _ThreadConnection(conn)
            with self._lock:
                self._open.add(held)
        return held.conn

    def migrate(self) -> None:
        conn = self.connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = conn.execute(
                "SELECT coalesce(max(version), 0) FROM schema_migrations"
            ).fetchone()[0]
            for number, script in enumerate(MIGRATIONS, start=1):
                if number > current:
                    for statement in _split_script(script):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)",
                        (number, format_timestamp(utcnow())),
                    )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def schema_status(self) -> SchemaStatus:
        conn = self.connection()
        known = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
        ).fetchone()
        rows = (
            conn.execute("SELECT version, applied_at FROM schema_migrations ORDER BY version")
            if known
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
        # One write transaction for the batch; a savepoint per append, so a conflict
        # undoes its own append only.
        batches = [prepare_append(r.stream_id, r.events, r.expected_version) for r in requests]
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [
                self._append_one(conn, r, b) for r, b in zip(requests, batches, strict=True)
            ]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outcomes

    def _append_one(
        self, conn: sqlite3.Connection, request: AppendRequest, batch: PreparedAppend
    ) -> BatchOutcome:
        key, stream_id, expected = (
            request.idempotency_key,
            request.stream_id,
            request.expected_version,
        )
        seen = None if key is None else conn.execute(STATEMENTS.idempotency_key, (key,)).fetchone()
        if seen is not None:
            return AppendResult(self._read_positions(seen[0], seen[1]), duplicate=True)
        conn.execute("SAVEPOINT one_append")
        try:
            self._check_version(conn, stream_id, expected, request.data_key, batch.stamp)
            links = self._insert_events(conn, stream_id, expected, batch)
            if key is not None:
                conn.execute(
                    "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)",
                    (key, stream_id, links[0][0], links[-1][0]),
                )
        except (ConcurrencyConflict, sqlite3.IntegrityError) as error:
            conn.execute("ROLLBACK TO one_append")
            conn.execute("RELEASE one_append")
            if isinstance(error, ConcurrencyConflict):
                return error
            return ConcurrencyConflict(stream_id, expected)
        conn.execute("RELEASE one_append")
        return AppendResult(batch.recorded(stream_id, expected, request.events, links), False)

    @staticmethod
    def _check_version(
        conn: sqlite3.Connection,
        stream_id: str,
        expected_version: int,
        data_key: bytes | None,
        stamp: str,
    ) -> None:
        """Under the write lock: the stream is at ``expected_version``, and a first
        install's data key is stored (ConcurrencyConflict if either fails)."""
        actual = conn.execute(STATEMENTS.stream_version, (stream_id,)).fetchone()[0]
        if actual != expected_version:
            raise ConcurrencyConflict(stream_id, expected_version, actual)
        if data_key is not None:
            stored = conn.execute(STATEMENTS.put_data_key, (stream_id, data_key, stamp))
            if stored.fetchone() is None:  # the stream has a key already
                raise ConcurrencyConflict(stream_id, expected_version, actual)

    @staticmethod
    def _insert_events(
        conn: sqlite3.Connection, stream_id: str, expected_version: int, batch: PreparedAppend
    ) -> list[tuple[int, str]]:
        """Chain the events onto the head and insert them; each one's (position, hash)."""
        last = conn.execute(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        ).fetchone()
        position, previous = (last[0], bytes.fromhex(last[1])) if last else (0, GENESIS)
        links: list[tuple[int, str]] = []
        for i, (p, digest) in enumerate(zip(batch.events, batch.digests, strict=True), 1):
            position += 1
            previous = link(previous, position, digest)
            row = (position, stream_id, expected_version + i, p.type, p.schema_version)
            conn.execute(
                _INSERT_EVENT,
                (*row, p.data.decode(), p.metadata.decode(), batch.stamp, previous.hex(),
                 p.call_id, batch.chain_version),
            )  # fmt: skip
            links.append((position, previous.hex()))
        return links

    def read_stream_stored(
        self, stream_id: str, up_to: int | datetime | None = None
    ) -> list[StoredEvent]:
        query, params = self._stream_query(_STORED_STREAM, stream_id, up_to)
        return list(starmap(StoredEvent, self._rows(query, params)))

    def import_rows(self, rows: Iterable[RawEvent]) -> Head:
        conn, batch = self.connection(), []

        def write(row: RawEvent) -> None:
            batch.append(_import_columns(row))
            if len(batch) >= 5000:
                flush()

        def flush() -> None:
            conn.executemany(_INSERT_EVENT, batch)
            batch.clear()

        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                new_head = checked(rows, self.head(), write)
                flush()
                conn.execute("COMMIT")
                return new_head
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError as exc:  # a (stream, version) or position taken already
            raise ImportRefused(f"import refused: {exc}") from None
        # Other driver errors are left to the store's error boundary.

    # -- the primitives of SQLStore: sqlite3 runs in autocommit mode, so every
    # statement outside append() is its own transaction. Errors reach the caller
    # through the class's error boundary (translate_error).

    def _rows(
        self, sql: str, params: Sequence[object] = (), *, quick: bool = False, prepare: bool = False
    ) -> list[Row]:
        return self.connection().execute(sql, params).fetchall()

    def _count(self, sql: str, params: Sequence[object] = ()) -> int:
        return self.connection().execute(sql, params).rowcount

    def _in_one_transaction(self, work: Callable[[Run], _T]) -> _T:
        conn = self.connection()
        # secure_delete for this work only: what it deletes is zeroed in the page.
        previous = int(conn.execute("PRAGMA secure_delete").fetchone()[0])
        conn.execute("PRAGMA secure_delete=ON")
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = work(lambda sql, params: conn.execute(sql, params).fetchall())
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.execute(f"PRAGMA secure_delete={previous}")

    def _scrub_data_keys(self) -> None:
        # The old page versions live on in the WAL until a checkpoint copies the new
        # ones into the file; TRUNCATE then empties the WAL file. It waits (busy
        # timeout) for readers and writers, and says busy when one held on longer.
        busy, _, _ = self.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise KeyCopiesRemain(
                "SQLite could not checkpoint its WAL (another connection held on); run it again"
            )

    def _store_rejections(self, writes: Sequence[RejectionWrite]) -> list[int]:
        # One write transaction (one sync to disk); SQLite has one writer at a time, so
        # each refusal's statements see the effects of those before and no other writer's.
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            counts = [self._store_rejection(conn, write) for write in writes]
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return counts

    def _store_rejection(self, conn: sqlite3.Connection, write: RejectionWrite) -> int:
        sql = self.sql
        rows = conn.execute(sql.coalesce_rejection, write.key).fetchall()
        if not rows:
            kept = conn.execute(sql.claim_rejection_row, (write.window,) * 2).fetchall()
            row = write.own if kept else write.overflow
            rows = conn.execute(sql.insert_rejection, row).fetchall()
        return int(rows[0][0])

    def _time_param(self, value: datetime) -> str:
        return format_timestamp(value)

    def _time_value(self, value: str) -> datetime:
        return parse_timestamp(value)

    def _decode_row(self, row: Row) -> RecordedEvent:
        position, stream_id, version, event_type, schema, data, metadata, recorded_at, h = row
        recorded = parse_timestamp(recorded_at)
        return decode_event(
            position, stream_id, version, event_type, schema, data, metadata, recorded, h
        )

    def head(self) -> Head:
        rows = self._rows(HEAD_QUERY)
        return Head(rows[0][0], rows[0][1]) if rows else Head(0, GENESIS.hex())

    def ping(self) -> None:
        self._rows("SELECT 1")

    def close(self) -> None:
        with self._lock:
            for held in list(self._open):
                held.conn.close()
            self._open.clear()
        self._local = threading.local()


def _import_columns(row: RawEvent) -> tuple[object, ...]:
    """A stored row as the columns of _INSERT_EVENT (SQLite keeps it as text)."""
    return (
        row.position,
        row.stream_id,
        row.version,
        row.type,
        row.schema_version,
        row.data.decode(),
        row.metadata.decode(),
        row.recorded_at,
        row.hash,
        row.call_id,
        row.chain_version,
    )


def _split_script(script: str) -> list[str]:
    """Statements of a migration; trigger bodies keep their inner semicolons."""
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            if buffer.strip(" \n;"):
                statements.append(buffer.strip())
            buffer = ""
    return statements
