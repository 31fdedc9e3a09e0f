"""What the SQLite and PostgreSQL stores share: each statement written once, and the
methods that are the same on both but for the placeholder and how a time is held.

``Statements`` renders every shared statement for one backend from its placeholder
(``?`` or ``%s``) and the few column expressions that differ. ``SQLStore`` implements
the reads, the data keys and the rejection log over four primitives a backend
provides (``_rows``, ``_count``, ``_time_param``, ``_time_value``); a backend writes
only what is its own: the schema, the append, the fast read path, the head.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypeVar

import msgspec

from eventstore.clock import utcnow
from eventstore.data_keys import KeyCopiesRemain
from eventstore.rejections import (
    REJECTION_FIELDS,
    REJECTION_PURGE_BATCH,
    REJECTION_PURGE_BATCHES,
    REJECTION_ROW_BUDGET,
    PurgeSchedule,
    Rejection,
    escape_text,
    overflow_rejection,
    purge_quietly,
    rejection_fingerprint,
    rejection_log_counters,
    rejection_window,
    storable_rejection,
)
from eventstore.store import EventStore
from eventstore.values import RawEvent, RecordedEvent

# A row as the driver returns it.
Row = tuple[Any, ...]
# One statement in a transaction (``SQLStore._in_one_transaction``): its rows.
Run = Callable[[str, Sequence[object]], list[Row]]
_T = TypeVar("_T")

# Where the two times of a rejection row are among its columns.
_AT, _SEEN = REJECTION_FIELDS.index("at"), REJECTION_FIELDS.index("last_seen_at")


class Statements:
    """The shared statements of one backend.

    ``mark``: the driver's placeholder; ``hash_hex``: the hash column as hex text;
    ``recorded_at_text``: recorded_at in its stored text form (SPEC §3).
    """

    def __init__(self, mark: str, hash_hex: str, recorded_at_text: str) -> None:
        m = self.mark = mark
        base = "position, stream_id, version, type, schema_version, data, metadata"
        self.event_columns = f"{base}, recorded_at, {hash_hex}"
        self.raw_columns = f"{base}, {recorded_at_text}, {hash_hex}, call_id, chain_version"
        self.read_stream = f"SELECT {self.event_columns} FROM events WHERE stream_id = {m}"
        self.up_to_time = f" AND recorded_at <= {m}"
        self.up_to_position = f" AND position <= {m}"
        self.read_positions = (
            f"SELECT {self.event_columns} FROM events"
            f" WHERE position BETWEEN {m} AND {m} ORDER BY position"
        )
        self.stream_version = f"SELECT coalesce(max(version), 0) FROM events WHERE stream_id = {m}"
        self.idempotency_key = (
            f"SELECT first_position, last_position FROM idempotency_keys WHERE key = {m}"
        )
        self._data_keys(m)
        self._rejections(m)

    def page(self, columns: str) -> str:
        """Keyset pages of the log: no transaction is held open between batches."""
        m = self.mark
        return f"SELECT {columns} FROM events WHERE position > {m} ORDER BY position LIMIT {m}"

    def _data_keys(self, m: str) -> None:
        self.get_data_key = f"SELECT wrapped FROM data_keys WHERE stream_id = {m}"
        self.put_data_key = (
            f"INSERT INTO data_keys (stream_id, wrapped, created_at) VALUES ({m}, {m}, {m})"
            " ON CONFLICT (stream_id) DO NOTHING RETURNING wrapped"
        )
        self.data_key_length = f"SELECT length(wrapped) FROM data_keys WHERE stream_id = {m}"
        self.overwrite_data_key = f"UPDATE data_keys SET wrapped = {m} WHERE stream_id = {m}"
        self.destroy_data_key = f"DELETE FROM data_keys WHERE stream_id = {m}"
        self.list_data_keys = (
            f"SELECT stream_id, wrapped FROM data_keys WHERE stream_id > {m}"
            f" ORDER BY stream_id LIMIT {m}"
        )
        self.swap_data_key = (
            f"UPDATE data_keys SET wrapped = {m} WHERE stream_id = {m} AND wrapped = {m}"
        )

    def _rejections(self, m: str) -> None:
        # A row of its own for a refusal: its fields, its fingerprint and window.
        columns = (*REJECTION_FIELDS, "fingerprint", "window_number")
        self.rejection_columns = ", ".join(columns)
        self.rejection_marks = ", ".join([m] * len(columns))
        # A refusal identical to one its window holds a row for: that row counts it.
        self.coalesce_rejection = (
            "UPDATE rejections SET count = count + 1, last_seen_at = CASE"
            f" WHEN {m} > last_seen_at THEN {m} ELSE last_seen_at END"
            f" WHERE fingerprint = {m} AND window_number = {m} RETURNING count"
        )
        # The insert of a new row, or of one raced in meanwhile: then that row counts it.
        self.rejection_upsert = (
            " ON CONFLICT (fingerprint, window_number) DO UPDATE"
            " SET count = rejections.count + 1, last_seen_at = CASE"
            " WHEN excluded.last_seen_at > rejections.last_seen_at"
            " THEN excluded.last_seen_at ELSE rejections.last_seen_at END"
            " RETURNING count"
        )
        self.insert_rejection = (
            f"INSERT INTO rejections ({self.rejection_columns})"
            f" VALUES ({self.rejection_marks}){self.rejection_upsert}"
        )
        self.claim_rejection_row = self.claim_rejection_row_if("true")
        # Rows from before coalescing may have no last_seen_at: their first time stands in.
        listed = [
            c if c != "last_seen_at" else "coalesce(last_seen_at, at)" for c in REJECTION_FIELDS
        ]
        self.list_rejections = f"SELECT {', '.join(listed)} FROM rejections"
        self.list_rejections_order = f" ORDER BY last_seen_at DESC, id DESC LIMIT {m} OFFSET {m}"
        self.purge_rejections = (
            "DELETE FROM rejections WHERE id IN (SELECT id FROM rejections"
            f" WHERE at < {m} AND last_seen_at < {m} ORDER BY at LIMIT {m})"
        )
        self.purge_rejection_windows = (
            "DELETE FROM rejection_windows WHERE window_number IN (SELECT window_number"
            f" FROM rejection_windows WHERE window_number < {m} ORDER BY window_number LIMIT {m})"
        )

    def claim_rejection_row_if(self, guard: str) -> str:
        """Claim one of a window's REJECTION_ROW_BUDGET rows (when ``guard`` holds;
        parameters: the window, twice): a row back while the window had one left, none
        once it is spent. Atomic: the claim locks the window's counter row, so
        concurrent writers claim one after the other, never more than the budget
        between them. A spent budget stays spent, so a window seen spent is not locked
        at all: a flood beyond the budget contends only for its overflow row."""
        m = self.mark
        return (
            f"INSERT INTO rejection_windows (window_number, rows_kept) SELECT {m}, 1"
            f" WHERE {guard} AND NOT EXISTS (SELECT 1 FROM rejection_windows"
            f" WHERE window_number = {m} AND rows_kept >= {REJECTION_ROW_BUDGET})"
            " ON CONFLICT (window_number) DO UPDATE"
            " SET rows_kept = rejection_windows.rows_kept + 1"
            f" WHERE rejection_windows.rows_kept < {REJECTION_ROW_BUDGET} RETURNING rows_kept"
        )


class RejectionWrite(NamedTuple):
    """One refusal, ready for the backend's ``_store_rejections``: the coalescing key
    (fingerprint, window), its time as a parameter, and the columns
    (``Statements.rejection_columns``) of its own row and of its window's overflow row."""

    fingerprint: str
    window: int
    seen: object
    own: tuple[object, ...]
    overflow: tuple[object, ...]

    @property
    def key(self) -> tuple[object, ...]:
        """The parameters of ``Statements.coalesce_rejection``."""
        return (self.seen, self.seen, self.fingerprint, self.window)


class SQLStore(EventStore):
    """The methods both SQL backends share, over the backend's primitives."""

    sql: Statements
    rejection_retention: timedelta
    _purges: PurgeSchedule

    def _init_rejection_log(self, retention_days: int, purge_interval: float) -> None:
        self.rejection_retention = timedelta(days=retention_days)
        self._purges = PurgeSchedule(purge_interval)

    # -- the backend's primitives

    @abc.abstractmethod
    def _rows(
        self, sql: str, params: Sequence[object] = (), *, quick: bool = False, prepare: bool = False
    ) -> list[Row]:
        """Run one statement; its rows. ``quick``: a short wait for a connection
        (best-effort work beside a call); ``prepare``: a hot statement worth preparing."""

    @abc.abstractmethod
    def _count(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abc.abstractmethod
    def _time_param(self, value: datetime) -> object:
        """A time as this backend stores it."""

    @abc.abstractmethod
    def _time_value(self, value: Any) -> datetime:
        """A stored time back as a datetime."""

    @abc.abstractmethod
    def _decode_row(self, row: Row) -> RecordedEvent:
        """A row of ``Statements.event_columns`` as the typed event."""

    @abc.abstractmethod
    def _in_one_transaction(self, work: Callable[[Run], _T]) -> _T:
        """``work`` run with a statement runner, all in one write transaction (SQLite
        with ``secure_delete`` on, so what it deletes is zeroed in the page)."""

    @abc.abstractmethod
    def _scrub_data_keys(self) -> None:
        """Make the store's files forget deleted data-key bytes (see destroy_data_key);
        KeyCopiesRemain when that cannot finish now."""

    @abc.abstractmethod
    def _store_rejections(self, writes: Sequence[RejectionWrite]) -> list[int]:
        """Count each refusal on exactly one row, atomically against concurrent writers:
        the row of its window it is identical to (``coalesce_rejection``); else a new
        row of its own if the window has one of its budget left
        (``claim_rejection_row``); else the window's overflow row for its reason and
        path. Best effort beside a call (a short wait for a connection); several in as
        few transactions as the backend keeps cheap. The count of the row each one
        went to."""

    # -- reading the log

    def _read_positions(self, first: int, last: int) -> list[RecordedEvent]:
        return [self._decode_row(r) for r in self._rows(self.sql.read_positions, (first, last))]

    def read_stream(
        self, stream_id: str, up_to: int | datetime | None = None
    ) -> list[RecordedEvent]:
        query, params = self._stream_query(self.sql.read_stream, stream_id, up_to)
        rows = self._rows(query, params, prepare=True)
        return [self._decode_row(r) for r in rows]

    def _stream_query(
        self, select: str, stream_id: str, up_to: int | datetime | None, *, ordered: bool = True
    ) -> tuple[str, list[object]]:
        """``select`` (ending in ``WHERE stream_id = <mark>``) limited to ``up_to`` (a
        position or a recorded time), in version order unless not ``ordered`` (the
        caller sorts), and its parameters: the one rule of a stream read."""
        query, params = select, list[object]([stream_id])
        if isinstance(up_to, datetime):
            query += self.sql.up_to_time
            params.append(self._time_param(up_to))
        elif up_to is not None:
            query += self.sql.up_to_position
            params.append(up_to)
        return query + " ORDER BY version" if ordered else query, params

    def _pages(self, columns: str, after_position: int, batch_size: int) -> Iterator[list[Row]]:
        # The order guarantee of each backend's append makes paging by position safe
        # for tailing readers.
        query = self.sql.page(columns)
        cursor_position = after_position
        while True:
            rows = self._rows(query, (cursor_position, batch_size), prepare=True)
            if not rows:
                return
            yield rows
            cursor_position = rows[-1][0]
            if len(rows) < batch_size:
                return

    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        for rows in self._pages(self.sql.event_columns, after_position, batch_size):
            yield from map(self._decode_row, rows)

    def read_raw(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RawEvent]:
        for rows in self._pages(self.sql.raw_columns, after_position, batch_size):
            for r in rows:
                yield RawEvent(r[0], r[1], r[2], r[3], r[4], r[5].encode(), r[6].encode(), *r[7:])

    def stream_version(self, stream_id: str) -> int:
        rows = self._rows(self.sql.stream_version, (stream_id,))
        return int(rows[0][0]) if rows else 0

    def find_idempotent(self, idempotency_key: str) -> list[RecordedEvent] | None:
        rows = self._rows(self.sql.idempotency_key, (idempotency_key,))
        return self._read_positions(rows[0][0], rows[0][1]) if rows else None

    # -- data keys

    def get_data_key(self, stream_id: str) -> bytes | None:
        rows = self._rows(self.sql.get_data_key, (stream_id,))
        return bytes(rows[0][0]) if rows else None

    def put_data_key(self, stream_id: str, wrapped: bytes) -> bytes:
        params = (stream_id, wrapped, self._time_param(utcnow()))
        rows = self._rows(self.sql.put_data_key, params)
        # No row: another call created the key first, and that one is in force.
        stored = bytes(rows[0][0]) if rows else self.get_data_key(stream_id)
        assert stored is not None
        return stored

    def destroy_data_key(self, stream_id: str) -> bool:
        sql = self.sql

        def overwrite_then_delete(run: Run) -> bool:
            found = run(sql.data_key_length, (stream_id,))
            if not found:
                return False
            # Zeros over the key where it lies (same length), then the row goes: a
            # delete alone leaves the bytes in the page's free space.
            run(sql.overwrite_data_key, (bytes(int(found[0][0])), stream_id))
            run(sql.destroy_data_key, (stream_id,))
            return True

        destroyed = self._in_one_transaction(overwrite_then_delete)
        try:
            self._scrub_data_keys()  # even with no key: a second forget finishes a first one
        except KeyCopiesRemain as error:
            raise KeyCopiesRemain(str(error), destroyed) from None
        return destroyed

    def list_data_keys(self, after: str = "", limit: int = 500) -> list[tuple[str, bytes]]:
        rows = self._rows(self.sql.list_data_keys, (after, limit))
        return [(r[0], bytes(r[1])) for r in rows]

    def swap_data_key(self, stream_id: str, expected: bytes, wrapped: bytes) -> bool:
        return self._count(self.sql.swap_data_key, (wrapped, stream_id, expected)) > 0

    # -- the rejection log

    def record_rejection(self, rejection: Rejection) -> None:
        self.record_rejections((rejection,))

    def record_rejections(self, rejections: Iterable[Rejection]) -> None:
        counts = self._store_rejections([self._rejection_write(r) for r in rejections])
        rejection_log_counters.add(coalesced=sum(count > 1 for count in counts))
        if self._purges.due():
            purge_quietly(self, utcnow() - self.rejection_retention)

    def _rejection_write(self, rejection: Rejection) -> RejectionWrite:
        # A fresh refusal (count 1); whether it gets a row of its own is the budget's call.
        row = msgspec.structs.replace(storable_rejection(rejection), count=1, overflow=False)
        overflow = overflow_rejection(row)
        fingerprint, window = rejection_fingerprint(row), rejection_window(row.at)
        own_columns = self._rejection_columns(row)
        return RejectionWrite(
            fingerprint,
            window,
            own_columns[_SEEN],
            (*own_columns, fingerprint, window),
            (*self._rejection_columns(overflow), rejection_fingerprint(overflow), window),
        )

    def _rejection_columns(self, row: Rejection) -> tuple[object, ...]:
        """A rejection's fields as columns (REJECTION_FIELDS, times as this backend
        holds them)."""
        values = list(msgspec.structs.astuple(row))
        values[_AT] = self._time_param(row.at)
        values[_SEEN] = self._time_param(row.last_seen_at or row.at)
        return tuple(values)

    def purge_rejections(self, older_than: datetime) -> int:
        cutoff = self._time_param(older_than)
        purged = 0
        for _ in range(REJECTION_PURGE_BATCHES):
            deleted = self._count(
                self.sql.purge_rejections, (cutoff, cutoff, REJECTION_PURGE_BATCH)
            )
            purged += deleted
            if deleted < REJECTION_PURGE_BATCH:
                break
        # The budget counters of windows all of whose refusals are older than the cutoff
        # (one row a window: a purge a minute has one or two to delete).
        self._count(
            self.sql.purge_rejection_windows,
            (rejection_window(older_than), REJECTION_PURGE_BATCH * REJECTION_PURGE_BATCHES),
        )
        rejection_log_counters.add(purged=purged)
        return purged

    def list_rejections(
        self,
        limit: int = 100,
        *,
        reason: str | None = None,
        since: datetime | None = None,
        client_key: str | None = None,
        offset: int = 0,
    ) -> list[Rejection]:
        clauses: list[str] = []
        params: list[object] = []
        for column, value in (
            ("reason =", reason),
            ("coalesce(last_seen_at, at) >=", None if since is None else self._time_param(since)),
            ("client_key =", escape_text(client_key)),  # stored escaped
        ):
            if value is not None:
                clauses.append(f"{column} {self.sql.mark}")
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        query = self.sql.list_rejections + where + self.sql.list_rejections_order
        rows = self._rows(query, (*params, limit, max(offset, 0)))
        return [self._rejection(dict(zip(REJECTION_FIELDS, r, strict=True))) for r in rows]

    def _rejection(self, fields: dict[str, Any]) -> Rejection:
        fields["at"] = self._time_value(fields["at"])
        fields["last_seen_at"] = self._time_value(fields["last_seen_at"])
        fields["overflow"] = bool(fields["overflow"])  # SQLite holds it as 0 or 1
        return Rejection(**fields)
