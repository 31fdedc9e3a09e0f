"""The event store interface shared by every backend, its value types and errors."""

from __future__ import annotations

import abc
import functools
import hashlib
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

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

if TYPE_CHECKING:
    from eventstore.chain import ChainRow


class StoreError(Exception):
    """Base class of every error raised by a store.

    ``retryable``: whether the same call may succeed later unchanged (a host's retry
    after a 503). No driver exception leaves a store: each is one of the subclasses.
    """

    retryable = False


class ConcurrencyConflict(StoreError):
    """The stream's version was not the expected one. Re-read the stream and retry."""

    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        super().__init__(f"stream {stream_id!r}: expected version {expected}, found {actual}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StoreUnavailable(StoreError):
    """The database cannot be reached or refused the work; nothing was stored. Retryable."""

    retryable = True


class StoreFault(StoreError):
    """The database refused the work for a reason a retry will not fix (a bug, a value
    the database cannot hold, a broken invariant). Not retryable; ``code`` is the
    driver's error code (SQLSTATE or SQLite's), never a value of the call."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


_T = TypeVar("_T")


def error_boundary(
    translate: Callable[[Exception], StoreError | None],
) -> Callable[[type[_T]], type[_T]]:
    """Class decorator: the store's one error boundary.

    Every public method (and ``__init__``) of the decorated class, and every iterator
    a method returns lazily, passes driver exceptions through ``translate``; one that
    it maps (to StoreUnavailable or StoreFault) is raised in its place, chained. A
    StoreError passes unchanged; an exception ``translate`` does not know (a bug in
    our own code) is not disguised as a store error.
    """

    def guard(exc: Exception) -> BaseException:
        if isinstance(exc, StoreError):
            return exc
        mapped = translate(exc)
        return exc if mapped is None else mapped

    def wrap_function(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                raised = guard(exc)
                if raised is exc:
                    raise
                raise raised from exc

        return guarded

    def wrap_generator(function: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
        @functools.wraps(function)
        def guarded(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from function(*args, **kwargs)
            except Exception as exc:
                raised = guard(exc)
                if raised is exc:
                    raise
                raise raised from exc

        return guarded

    def decorate(cls: type[_T]) -> type[_T]:
        for name, member in list(vars(cls).items()):
            if not inspect.isfunction(member):
                continue
            if name.startswith("_") and name != "__init__":
                continue
            wrapper = wrap_generator if inspect.isgeneratorfunction(member) else wrap_function
            setattr(cls, name, wrapper(member))
        return cls

    return decorate


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


class Rejection(msgspec.Struct, frozen=True, omit_defaults=True):
    """One refused call. Never holds a token or a secret: only the token's SHA-256.

    Identical refusals (same reason, remote address, claimed clientKey and path) in
    one window of ``REJECTION_WINDOW_SECONDS`` are one row: ``at`` is the first,
    ``last_seen_at`` the last, ``count`` how many; the row keeps the first one's
    other fields (token hash, detail).
    """

    at: datetime
    path: str
    reason: str
    status: int
    client_key: str | None = None
    base_url: str | None = None
    remote_addr: str | None = None
    token_sha256: str | None = None
    detail: str | None = None
    count: int = 1
    last_seen_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self)
        out["at"] = format_timestamp(self.at)
        out["count"] = self.count
        out["last_seen_at"] = format_timestamp(self.last_seen_at or self.at)
        return dict(out)


def rejection_filters(
    mark: str, reason: str | None, since: Any, client_key: str | None
) -> tuple[str, list[Any]]:
    """The WHERE clause (with ``mark`` as placeholder) and parameters of a rejection query."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, op, value in (
        ("reason", "=", reason),
        ("coalesce(last_seen_at, at)", ">=", since),
        ("client_key", "=", escape_text(client_key)),  # stored escaped
    ):
        if value is not None:
            clauses.append(f"{column} {op} {mark}")
            params.append(value)
    return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params


# Identical refusals within one window are kept as one row (see Rejection).
REJECTION_WINDOW_SECONDS = 60
# Retention purges run at most this often per store object, each deleting at most
# REJECTION_PURGE_BATCH rows REJECTION_PURGE_BATCHES times: bounded work on the insert path.
REJECTION_PURGE_INTERVAL_SECONDS = 60.0
REJECTION_PURGE_BATCH = 1000
REJECTION_PURGE_BATCHES = 10
# Longest text kept in one field of a rejection row (claimed values are untrusted).
REJECTION_FIELD_LIMIT = 2048

# C0 and C1 control characters, DEL and lone surrogates: PostgreSQL cannot store NUL,
# neither store can encode a lone surrogate, and none of them belong in a log an
# operator reads on a terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(value: str | None, limit: int = REJECTION_FIELD_LIMIT) -> str | None:
    """A claimed value made storable: control characters escaped (NUL → ``\\x00``), cut
    to ``limit`` characters."""
    if value is None:
        return None
    return _UNPRINTABLE.sub(_escape_char, value[:limit])


def storable_rejection(rejection: Rejection) -> Rejection:
    """The rejection with every text field escaped (see escape_text); both stores write this."""
    return msgspec.structs.replace(
        rejection,
        path=escape_text(rejection.path) or "",
        reason=escape_text(rejection.reason) or "",
        client_key=escape_text(rejection.client_key),
        base_url=escape_text(rejection.base_url),
        remote_addr=escape_text(rejection.remote_addr),
        token_sha256=escape_text(rejection.token_sha256),
        detail=escape_text(rejection.detail),
    )


def rejection_fingerprint(rejection: Rejection) -> str:
    """What makes two refusals identical for coalescing: reason, remote address,
    claimed clientKey and path (of an already escaped rejection)."""
    parts = (rejection.reason, rejection.remote_addr, rejection.client_key, rejection.path)
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()


def rejection_window(at: datetime) -> int:
    """The number of the coalescing window a refusal at ``at`` falls in."""
    return int(at.timestamp()) // REJECTION_WINDOW_SECONDS


class RejectionLogCounters:
    """Process-wide counts of coalesced and purged rejection rows, for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.coalesced = 0
        self.purged = 0

    def add(self, *, coalesced: int = 0, purged: int = 0) -> None:
        with self._lock:
            self.coalesced += coalesced
            self.purged += purged


rejection_log_counters = RejectionLogCounters()


def purge_quietly(store: EventStore, older_than: datetime) -> None:
    """The retention purge run from the insert path: housekeeping, so a failure is
    logged and left to the next scheduled purge, never raised to the call that
    recorded its rejection row."""
    try:
        store.purge_rejections(older_than)
    except StoreError as error:
        logging.getLogger("ledger.store").warning(
            "rejection purge failed: %s; retried at the next purge", type(error).__name__
        )


class PurgeSchedule:
    """At most one retention purge per interval for one store object (thread-safe)."""

    def __init__(self, interval: float = REJECTION_PURGE_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self._interval
            return True


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """The one text form of a time used in hashes, exports and answers (microseconds, Z)."""
    # isoformat is several times cheaper than strftime, and this runs for every
    # event an answer or an export shows.
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class EventStore(abc.ABC):
    """An append-only log of events in streams, with a global order and a hash chain.

    Implementations: ``SQLiteEventStore`` (embedded default) and
    ``PostgresEventStore`` (production). One contract test suite runs against both.
    """

    url: str

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

    # -- data keys (mutable by design: destroying one is how `forget` works)

    @abc.abstractmethod
    def get_data_key(self, stream_id: str) -> bytes | None:
        """The stream's wrapped data key, or None."""

    @abc.abstractmethod
    def put_data_key(self, stream_id: str, wrapped: bytes) -> bytes:
        """Store a wrapped data key unless one exists; return the one in force."""

    @abc.abstractmethod
    def destroy_data_key(self, stream_id: str) -> bool:
        """Delete the stream's data key; True if there was one."""

    @abc.abstractmethod
    def list_data_keys(self, after: str = "", limit: int = 500) -> list[tuple[str, bytes]]:
        """(stream_id, wrapped) pairs in stream_id order after ``after``: one batch."""

    @abc.abstractmethod
    def swap_data_key(self, stream_id: str, expected: bytes, wrapped: bytes) -> bool:
        """Replace the stream's wrapped key only if it is still ``expected``
        (compare-and-swap: a key destroyed or changed meanwhile is left alone)."""

    # -- rejection log

    @abc.abstractmethod
    def record_rejection(self, rejection: Rejection) -> None:
        """Store a refusal: text escaped (storable_rejection), coalesced with an identical
        one of the same window, and now and then rejections older than the retention
        period purged. Never fails on odd text."""

    @abc.abstractmethod
    def purge_rejections(self, older_than: datetime) -> int:
        """Delete rejections last seen before ``older_than`` (bounded batches); the count."""

    @abc.abstractmethod
    def list_rejections(
        self,
        limit: int = 100,
        *,
        reason: str | None = None,
        since: datetime | None = None,
        client_key: str | None = None,
    ) -> list[Rejection]:
        """Most recently seen first; only those with this reason, at or after ``since``, for this clientKey."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def verify(self) -> VerifyReport:
        from eventstore.chain import verify_store

        return verify_store(self)

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(url: str, **options: Any) -> EventStore:
    """A store for a ``sqlite:///path`` or ``postgresql://…`` URL."""
    if url.startswith("sqlite:"):
        from eventstore.sqlite import SQLiteEventStore

        return SQLiteEventStore(url, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from eventstore.postgres import PostgresEventStore

        return PostgresEventStore(url, **options)
    raise ValueError("LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://")


__all__ = [
    "AppendResult",
    "ConcurrencyConflict",
    "EventStore",
    "Head",
    "NewEvent",
    "PreparedEvent",
    "RawEvent",
    "RecordedEvent",
    "Rejection",
    "StoreError",
    "StoreFault",
    "StoreUnavailable",
    "VerifyReport",
    "canonical_json",
    "format_timestamp",
    "open_store",
    "parse_timestamp",
    "prepare",
    "utcnow",
]
