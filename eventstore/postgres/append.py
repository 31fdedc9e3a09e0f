"""Appends on PostgreSQL, for the synchronous store and the async log alike: the one
statement of a batch, its parameters, and what its rows mean.

A batch of appends (one, or a group commit's many) is one call of
``ledger_try_append_batch`` (migration 4): one statement, so one round trip and one
transaction, with no pipeline (psycopg's pipeline mode polls the socket for reading
and writing at once, which spins while the server works). Each append answers a
version conflict with a row of its own instead of an error, so a conflict fails only
its own append; any error fails the batch as a whole, and nothing of it is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, Final

from eventstore.chain import PreparedAppend, prepare_append
from eventstore.errors import ConcurrencyConflict
from eventstore.postgres.arrays import ByteaArray, Int2Array, Int4Array, TextArray, TimestamptzArray
from eventstore.values import AppendRequest, AppendResult, BatchOutcome

# %b: binary parameters. Text-format arrays would escape every quote of the JSON
# bodies on the client and parse them again on the server.
TRY_APPEND_BATCH: Final = (
    "SELECT o_index, o_position, encode(o_hash, 'hex'), o_duplicate, o_actual"
    " FROM ledger_try_append_batch(%b::text[], %b::int4[], %b::text[], %b::int4[],"
    " %b::text[], %b::int2[], %b::text[], %b::text[], %b::text[], %b::timestamptz[],"
    " %b::bytea[], %b::bytea[]) ORDER BY o_index, o_position"
)

Rows = list[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The idempotency key was used before: the events of that append are at these
    positions (the caller reads them back: ``AppendResult(duplicate=True)``)."""

    first: int
    last: int


@dataclass(frozen=True, slots=True)
class PendingBatch:
    """Requests made ready to send: encoded and digested before any lock is taken.
    ``positions``: where each request stands in the batch it was split from."""

    requests: Sequence[AppendRequest]
    prepared: list[PreparedAppend]
    positions: list[int]

    @classmethod
    def split(cls, requests: Sequence[AppendRequest]) -> list[PendingBatch]:
        """The requests as one statement's batches, in which no stream and no
        idempotency key occurs twice (``ledger_try_append_batch``'s precondition): a
        repeat goes to a later part, which sees the earlier parts' rows."""
        if len(requests) == 1:  # the common case: nothing can repeat
            return [cls.of(requests, [0])]
        parts: list[tuple[set[str], list[int]]] = []
        for position, request in enumerate(requests):
            names = {request.stream_id}
            if request.idempotency_key is not None:
                names.add("\x00key:" + request.idempotency_key)
            part = next((p for p in parts if not p[0] & names), None)
            if part is None:
                part = (set(), [])
                parts.append(part)
            part[0].update(names)
            part[1].append(position)
        return [cls.of([requests[i] for i in positions], positions) for _, positions in parts]

    @classmethod
    def of(cls, requests: Sequence[AppendRequest], positions: list[int]) -> PendingBatch:
        prepared = [prepare_append(r.stream_id, r.events, r.expected_version) for r in requests]
        return cls(requests, prepared, positions)

    def params(self) -> list[Any]:
        events = [p for batch in self.prepared for p in batch.events]
        # Typed arrays: each dumped in one pass (eventstore.postgres.arrays); JSON as its bytes.
        return [
            TextArray([r.stream_id for r in self.requests]),
            Int4Array([r.expected_version for r in self.requests]),
            TextArray([r.idempotency_key for r in self.requests]),
            Int4Array([len(batch.events) for batch in self.prepared]),
            TextArray([p.type for p in events]),
            Int2Array([p.schema_version for p in events]),
            TextArray([p.data for p in events]),
            TextArray([p.metadata for p in events]),
            TextArray([p.call_id for p in events]),
            TimestamptzArray([batch.recorded_at for batch in self.prepared]),
            ByteaArray([digest for batch in self.prepared for digest in batch.digests]),
            ByteaArray([r.data_key for r in self.requests]),
        ]

    def statement(self) -> tuple[str, list[Any]]:
        """The statement that appends this batch, and its parameters."""
        return TRY_APPEND_BATCH, self.params()

    def outcomes(self, rows: Rows) -> list[BatchOutcome | Duplicate]:
        """What the batch's rows (``o_index`` from 1, in order) say of each append."""
        if len(self.requests) == 1:  # every row is the one request's
            return [_outcome(self.requests[0], self.prepared[0], rows)]
        by_index = {index: list(group) for index, group in groupby(rows, key=lambda r: r[0])}
        pairs = zip(self.requests, self.prepared, strict=True)
        return [
            _outcome(request, prepared, by_index.get(n, []))
            for n, (request, prepared) in enumerate(pairs, start=1)
        ]

    @staticmethod
    def outcomes_of(
        batches: list[PendingBatch], rows: list[Rows], count: int
    ) -> list[BatchOutcome | Duplicate]:
        """Each request's outcome, in the order of the requests before the split."""
        if len(batches) == 1:  # not split: its positions are the requests' order
            return batches[0].outcomes(rows[0])
        ordered: list[BatchOutcome | Duplicate | None] = [None] * count
        for batch, batch_rows in zip(batches, rows, strict=True):
            for position, outcome in zip(batch.positions, batch.outcomes(batch_rows), strict=True):
                ordered[position] = outcome
        return [o for o in ordered if o is not None]


def _outcome(
    request: AppendRequest, prepared: PreparedAppend, rows: Rows
) -> BatchOutcome | Duplicate:
    if not rows or rows[0][1] is None:
        actual = rows[0][4] if rows else None
        return ConcurrencyConflict(request.stream_id, request.expected_version, actual)
    if rows[0][3]:
        return Duplicate(rows[0][1], rows[-1][1])
    links = [(row[1], row[2]) for row in rows]
    recorded = prepared.recorded(request.stream_id, request.expected_version, request.events, links)
    return AppendResult(recorded, duplicate=False)
