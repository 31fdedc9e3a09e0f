"""The hash chain over the log (SPEC §3).

hash(n) = SHA-256( hash(n-1) ‖ position as 8 bytes big-endian ‖ digest(row n) )
digest(row) = SHA-256( canonical JSON of [stream_id, version, type, schema_version,
              recorded_at] ‖ "\\n" ‖ data bytes ‖ "\\n" ‖ metadata bytes )

The row digest is computed by the writer, outside any lock; only the cheap link
step needs the previous hash, so PostgreSQL can do it inside the append function
in the same round trip (``sha256(prev || int8send(position) || digest)``).
Data bytes are the stored ciphertext-bearing JSON, so destroying a data key
leaves the chain verifiable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from eventstore.events import canonical_json
from eventstore.store import (
    NewEvent,
    PreparedEvent,
    RawEvent,
    VerifyReport,
    format_timestamp,
    prepare,
    utcnow,
)

GENESIS = bytes(32)


def row_digest(
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    recorded_at: str,
    data: bytes,
    metadata: bytes,
) -> bytes:
    head = canonical_json([stream_id, version, event_type, schema_version, recorded_at])
    return hashlib.sha256(head + b"\n" + data + b"\n" + metadata).digest()


def link(previous: bytes, position: int, digest: bytes) -> bytes:
    return hashlib.sha256(previous + position.to_bytes(8, "big") + digest).digest()


def verify_chain(rows: Iterable[RawEvent]) -> VerifyReport:
    """Recompute the chain from the first row; name the first row that does not match."""
    previous = GENESIS
    count = 0
    for row in rows:
        expected_position = count + 1
        if row.position != expected_position:
            return VerifyReport(
                ok=False,
                events=count,
                head=previous.hex(),
                first_bad_position=row.position,
                reason=f"position {row.position} follows {count}: an event is missing",
            )
        digest = row_digest(
            row.stream_id,
            row.version,
            row.type,
            row.schema_version,
            row.recorded_at,
            row.data,
            row.metadata,
        )
        computed = link(previous, row.position, digest)
        if computed.hex() != row.hash:
            return VerifyReport(
                ok=False,
                events=count,
                head=previous.hex(),
                first_bad_position=row.position,
                reason="stored hash does not match the row's contents and the previous hash",
            )
        previous = computed
        count += 1
    return VerifyReport(ok=True, events=count, head=previous.hex())


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """An append's events as the exact bytes to store, with their row digests."""

    recorded_at: datetime
    stamp: str
    events: list[PreparedEvent]
    digests: list[bytes]


def prepare_append(
    stream_id: str, events: Sequence[NewEvent], expected_version: int
) -> PreparedAppend:
    """Encoding and digests, done before any lock is taken (every store's first step)."""
    if not events:
        raise ValueError("append needs at least one event")
    recorded_at = utcnow()
    stamp = format_timestamp(recorded_at)
    prepared = [prepare(e) for e in events]
    digests = [
        row_digest(
            stream_id, expected_version + i, p.type, p.schema_version, stamp, p.data, p.metadata
        )
        for i, p in enumerate(prepared, start=1)
    ]
    return PreparedAppend(recorded_at, stamp, prepared, digests)
