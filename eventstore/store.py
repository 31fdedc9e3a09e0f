"""The event log's interface (``EventLog``) and the store's (``EventStore``).

Its values are in ``eventstore.values``; ``open_store`` (the one place that tells the
backends apart by URL) is the package's own: ``from eventstore import open_store``.

A store has three jobs, each with its own interface: the append-only log (here), the
data keys (``eventstore.data_keys``) and the rejection log (``eventstore.rejections``).
A backend implements all three on one connection pool (``EventStore``); callers type
against the one they use. Errors live in ``eventstore.errors`` and the time helpers in
``eventstore.clock``; both are re-exported here because nearly every caller of a store
uses them (one import line instead of three).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Self

from eventstore.data_keys import DataKeyStore
from eventstore.errors import ConcurrencyConflict
from eventstore.rejections import RejectionLog
from eventstore.schema_status import SchemaStatus
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
    VerifyReport,
)

if TYPE_CHECKING:
    from eventstore.async_log import AsyncEventLog
    from eventstore.database import Database


class EventLog(abc.ABC):
    """An append-only log of events in streams, with a global order and a hash chain."""

    url: str
    # How to reach the database (its kind, and its pool or connection factory), for
    # the projections that keep their tables beside the log.
    database: Database

    @abc.abstractmethod
    def migrate(self) -> None:
        """Create or upgrade the schema; idempotent."""

    @abc.abstractmethod
    def schema_status(self) -> SchemaStatus:
        """The migration steps the store ran, and how many the code knows (read only)."""

    @abc.abstractmethod
    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        idempotency_key: str | None = None,
        data_key: bytes | None = None,
    ) -> AppendResult:
        """Append all events atomically after ``expected_version`` (0: a new stream).

        Raises ConcurrencyConflict when the stream is at another version. When
        ``idempotency_key`` was used before, returns the events recorded then and
        writes nothing (``duplicate=True``). ``data_key``, a wrapped data key, is
        stored for the stream in the same transaction (a first install seals its
        secret with it); ConcurrencyConflict if the stream has one already.
        """

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        """Several appends, each as ``append`` would do it, with one outcome each: its
        result, or its own ConcurrencyConflict (the others are not affected). A store
        that can commits them in one transaction (group commit); a StoreError means
        the batch as a whole failed and nothing of it was stored. This default commits
        each in its own transaction, so a failure leaves the earlier ones stored."""
        outcomes: list[BatchOutcome] = []
        for r in requests:
            try:
                outcomes.append(
                    self.append(
                        r.stream_id, r.events, r.expected_version, r.idempotency_key, r.data_key
                    )
                )
            except ConcurrencyConflict as conflict:
                outcomes.append(conflict)
        return outcomes

    @abc.abstractmethod
    def read_stream(
        self, stream_id: str, up_to: int | datetime | None = None
    ) -> list[RecordedEvent]:
        """The stream in version order, up to a global position or a recorded time."""

    @abc.abstractmethod
    def read_stream_stored(
        self, stream_id: str, up_to: int | datetime | None = None
    ) -> list[StoredEvent]:
        """``read_stream``'s rows with data and metadata as stored (undecoded JSON
        bytes) and the time as its text: for answers that show events as they are."""

    @abc.abstractmethod
    def read_all(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RecordedEvent]:
        """Every event after a position in global order, fetched lazily in batches."""

    @abc.abstractmethod
    def read_raw(self, after_position: int = 0, batch_size: int = 1000) -> Iterator[RawEvent]:
        """Rows as stored (undecoded), for the hash chain and exports."""

    @abc.abstractmethod
    def import_rows(self, rows: Iterable[RawEvent]) -> Head:
        """Bulk-load stored rows (e.g. a synthetic log) in one transaction; the new head.

        Only after the current head: the rows must continue its positions and chain
        (see ``eventstore.bulk``), or ImportRefused is raised and nothing is stored.
        Idempotency keys and data keys are not part of the rows.
        """

    def read_chain(
        self, after_position: int = 0, through: int | None = None, batch_size: int = 5000
    ) -> Iterator[ChainRow]:
        """Rows after ``after_position`` (up to ``through``) as the hash chain reads them
        (``eventstore.chain.ChainRow``), for verify; a store may override this with a
        faster path that yields the same values."""
        for r in self.read_raw(after_position, batch_size):
            if through is not None and r.position > through:
                return
            yield (r.position, r.stream_id, r.version, r.type, r.schema_version, r.recorded_at,
                   r.data, r.metadata, r.hash, r.chain_version)  # fmt: skip

    @abc.abstractmethod
    def head(self) -> Head:
        """The last position and the chain hash at it (0 and the genesis hash if empty)."""

    @abc.abstractmethod
    def stream_version(self, stream_id: str) -> int:
        """The stream's last version, 0 for a stream that does not exist."""

    @abc.abstractmethod
    def find_idempotent(self, idempotency_key: str) -> list[RecordedEvent] | None:
        """The events appended with this key, or None if it was never used."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def verify(self) -> VerifyReport:
        """Recompute the hash chain (``eventstore.chain.verify_store``)."""
        from eventstore.chain import verify_store

        return verify_store(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventStore(EventLog, DataKeyStore, RejectionLog, abc.ABC):
    """A whole store: the log, its data keys and its rejection log on one database.

    Implementations: ``SQLiteEventStore`` (embedded default) and
    ``PostgresEventStore`` (production). One contract test suite runs against both.
    """

    def async_log(self, on_batch: Callable[[int], None] | None = None) -> AsyncEventLog:
        """This store's log for an event loop (``eventstore.async_log``), with group
        commit; ``on_batch`` hears each committed batch's size. ``await open()`` it
        before use and ``await aclose()`` it after. This default runs the store's own
        calls in worker threads; a backend with an async driver overrides it."""
        from eventstore.async_log import ThreadedLog

        return ThreadedLog(self, on_batch)


__all__ = ["EventLog", "EventStore"]
