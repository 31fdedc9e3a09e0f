"""The event log's interface (``EventLog``), its value types, and the store factory.

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
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self, TypedDict, Unpack

import msgspec

from eventstore.clock import format_timestamp, parse_timestamp, utcnow
from eventstore.data_keys import DataKeyStore
from eventstore.errors import ConcurrencyConflict, StoreError, StoreFault, StoreUnavailable
from eventstore.events import (
    SCHEMA_VERSIONS,
    EventData,
    Metadata,
    canonical_json,
    data_as_dict,
    data_to_json,
    decode_data,
    decode_metadata,
    metadata_to_json,
)
from eventstore.rejections import RejectionLog

if TYPE_CHECKING:
    from eventstore.async_log import AsyncEventLog
    from eventstore.chain import ChainRow
    from eventstore.database import Database


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended. Its schema version is the current one."""

    data: EventData
    metadata: Metadata

    @property
    def type(self) -> str:
        return type(self.data).__name__


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """One row of the log, decoded to typed data of the current schema version."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: EventData
    metadata: Metadata
    recorded_at: datetime
    hash: str

    def as_dict(self) -> dict[str, Any]:
        """The event object of the admin API and exports (SPEC §3 field names).

        Shared secrets stay sealed here; callers that show events to people redact
        them further (see ``redacted``).
        """
        return {
            "position": self.position,
            "stream_id": self.stream_id,
            "version": self.version,
            "type": self.type,
            "schema_version": self.schema_version,
            "data": data_as_dict(self.data),
            "metadata": msgspec.to_builtins(self.metadata),
            "recorded_at": format_timestamp(self.recorded_at),
            "hash": self.hash,
        }


def decode_event(
    position: int,
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    data: bytes | str,
    metadata: bytes | str,
    recorded_at: datetime,
    hash_hex: str,
) -> RecordedEvent:
    """A stored row's columns → the typed event (upcast to the current schema)."""
    # Positional: this runs once per event on every full read of the log.
    return RecordedEvent(
        position,
        stream_id,
        version,
        event_type,
        schema_version,
        decode_data(event_type, schema_version, data),
        decode_metadata(metadata),
        recorded_at,
        hash_hex,
    )


@dataclass(frozen=True, slots=True)
class RawEvent:
    """A row exactly as stored: the bytes the hash chain covers."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: str
    hash: str
    call_id: str | None = None
    chain_version: int = 1  # which row digest hashed it (eventstore.chain)


@dataclass(frozen=True, slots=True)
class PreparedEvent:
    """A NewEvent encoded to the exact bytes that will be stored and hashed."""

    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    call_id: str | None


def prepare(event: NewEvent) -> PreparedEvent:
    return PreparedEvent(
        type=event.type,
        schema_version=SCHEMA_VERSIONS[event.type],
        data=data_to_json(event.data),
        metadata=metadata_to_json(event.metadata),
        call_id=event.metadata.call_id,
    )


@dataclass(frozen=True, slots=True)
class AppendResult:
    events: list[RecordedEvent]
    duplicate: bool  # True when the idempotency key had been used: nothing was written


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """One append of a batch (``EventLog.append_batch``); fields as ``EventLog.append``."""

    stream_id: str
    events: Sequence[NewEvent]
    expected_version: int
    idempotency_key: str | None = None
    data_key: bytes | None = None


# What a batch gives each of its appends, in order: its result, or its own conflict.
BatchOutcome = AppendResult | ConcurrencyConflict


@dataclass(frozen=True, slots=True)
class Head:
    position: int
    hash: str


@dataclass(frozen=True, slots=True)
class VerifyReport:
    ok: bool
    events: int
    head: str
    first_bad_position: int | None = None
    reason: str | None = None


class StoreOptions(TypedDict, total=False):
    """Keyword options of ``open_store``; each backend takes those it knows."""

    migrate: bool
    rejection_retention_days: int
    rejection_purge_interval: float
    busy_timeout: float  # SQLite
    min_connections: int  # PostgreSQL
    max_connections: int
    timeout: float
    statement_timeout: float


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


def open_store(url: str, **options: Unpack[StoreOptions]) -> EventStore:
    """A store for a ``sqlite:///path`` or ``postgresql://…`` URL: the one place that
    tells the backends apart by URL. ``options`` a backend does not take are ignored."""
    if url.startswith("sqlite:"):
        from eventstore.sqlite import SQLiteEventStore

        return SQLiteEventStore(url, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from eventstore.postgres.store import PostgresEventStore

        return PostgresEventStore(url, **options)
    raise ValueError("LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://")


__all__ = [
    "AppendRequest",
    "AppendResult",
    "BatchOutcome",
    "ConcurrencyConflict",
    "EventLog",
    "EventStore",
    "Head",
    "NewEvent",
    "PreparedEvent",
    "RawEvent",
    "RecordedEvent",
    "StoreError",
    "StoreFault",
    "StoreOptions",
    "StoreUnavailable",
    "VerifyReport",
    "canonical_json",
    "format_timestamp",
    "open_store",
    "parse_timestamp",
    "prepare",
    "utcnow",
]
