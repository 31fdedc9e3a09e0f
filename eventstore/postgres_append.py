"""An append on PostgreSQL, for the synchronous store and the async log alike: the
statement, its parameters, and what its rows mean.

Every append runs ``ledger_try_append`` (migration 4), which answers a version
conflict with a row instead of an error, so the appends of a group commit, pipelined
in one transaction, fail one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from eventstore.chain import PreparedAppend, prepare_append
from eventstore.errors import ConcurrencyConflict
from eventstore.store import AppendRequest, AppendResult, BatchOutcome

# %b: binary parameters. Text-format arrays would escape every quote of the JSON
# bodies on the client and parse them again on the server.
TRY_APPEND: Final = (
    "SELECT o_position, encode(o_hash, 'hex'), o_duplicate, o_actual FROM ledger_try_append("
    "%b, %b, %b, %b::text[], %b::smallint[], %b::text[], %b::text[], %b::text[],"
    " %b, %b::bytea[], %b::bytea)"
)


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The idempotency key was used before: the events of that append are at these
    positions (the caller reads them back: ``AppendResult(duplicate=True)``)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class PendingAppend:
    """One request made ready to send: encoded, digested, before any lock is taken."""

    request: AppendRequest
    prepared: PreparedAppend

    @classmethod
    def of(cls, request: AppendRequest) -> PendingAppend:
        return cls(
            request, prepare_append(request.stream_id, request.events, request.expected_version)
        )

    def params(self) -> list[Any]:
        r, batch = self.request, self.prepared
        return [
            r.stream_id,
            r.expected_version,
            r.idempotency_key,
            [p.type for p in batch.events],
            [p.schema_version for p in batch.events],
            [p.data.decode() for p in batch.events],
            [p.metadata.decode() for p in batch.events],
            [p.call_id for p in batch.events],
            batch.recorded_at,
            batch.digests,
            r.data_key,
        ]

    def outcome(self, rows: list[tuple[Any, ...]]) -> BatchOutcome | Duplicate:
        """What ``ledger_try_append``'s rows say of this append."""
        r = self.request
        if not rows or rows[0][0] is None:
            actual = rows[0][3] if rows else None
            return ConcurrencyConflict(r.stream_id, r.expected_version, actual)
        if rows[0][2]:
            return Duplicate(rows[0][0], rows[-1][0])
        links = [(row[0], row[1]) for row in rows]
        recorded = self.prepared.recorded(r.stream_id, r.expected_version, r.events, links)
        return AppendResult(recorded, duplicate=False)
