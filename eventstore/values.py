"""The log's values: events new, prepared, recorded and raw; what an append is asked
and answers; the head; a verification's report; the options of ``open_store``.

Plain data and their pure conversions: every module of the store imports them, and
they import no module of the store but the catalog (``eventstore.events``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict

import msgspec

from eventstore.clock import format_timestamp
from eventstore.errors import ConcurrencyConflict
from eventstore.events import (
    SCHEMA_VERSIONS,
    EventData,
    Metadata,
    data_as_dict,
    data_to_json,
    decode_data,
    decode_metadata,
    metadata_to_json,
)


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


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """One row of a stream with its data and metadata as the stored JSON bytes
    (undecoded) and its time in the one text form (``format_timestamp``): what a
    history answer is built from without decoding every event (``read_stream_stored``).
    A msgspec Struct, not a dataclass: the stores build one per row at C speed."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: str
    hash: str


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
    # False: a store that does not exist is refused (StoreMissing), never created.
    create: bool
    # True: a schema other than the code's is refused (SchemaMismatch) instead of used.
    require_current: bool
    rejection_retention_days: int
    rejection_purge_interval: float
    busy_timeout: float  # SQLite
    min_connections: int  # PostgreSQL
    max_connections: int
    timeout: float
    statement_timeout: float


# A stored row's columns as the chain reads them (``EventStore.read_chain``): position,
# stream id (str, or its UTF-8 bytes), version, type, schema version, recorded_at text,
# data bytes, metadata bytes, stored hash (hex), chain version.
ChainRow = tuple[int, str | bytes, int, str, int, str, bytes, bytes, str, int]
