"""The hash chain over the log (SPEC §3).

hash(n) = SHA-256( hash(n-1) ‖ position as 8 bytes big-endian ‖ link input of row n )

Chain version 1 (rows written before migration 2), link input = digest(row):
  digest(row) = SHA-256( canonical JSON of [stream_id, version, type, schema_version,
                recorded_at] ‖ "\\n" ‖ data bytes ‖ "\\n" ‖ metadata bytes )

Chain version 2 (every row appended since), link input = 0x02 ‖ digest2(row):
  digest2(row) = SHA-256( SHA-256(stream_id) ‖ SHA-256(rest) )
  rest = canonical JSON of [version, type, schema_version, recorded_at] ‖ "\\n" ‖ data
         bytes ‖ "\\n" ‖ metadata bytes
A tenant's proof shows other rows only as their two inner hashes: enough to link
the chain and to see that the row belongs to another stream, nothing of its
contents. The version byte makes a version-2 link input 33 bytes long, so a row
hashed as version 2 can never be passed off as an opaque version-1 digest (which
a proof could not attribute to a stream).

Row digests are computed by the writer, outside any lock; only the cheap link
step needs the previous hash, so PostgreSQL can do it inside the append function
in the same round trip (``sha256(prev || int8send(position) || link input)``).
Data bytes are the stored ciphertext-bearing JSON, so destroying a data key
leaves the chain verifiable.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from eventstore.clock import format_timestamp, utcnow
from eventstore.events import canonical_json
from eventstore.values import (
    ChainRow,
    Head,
    NewEvent,
    PreparedEvent,
    RawEvent,
    RecordedEvent,
    VerifyReport,
    prepare,
)


class ChainSource(Protocol):
    """What verifying a store's chain reads of it (``EventLog`` has both)."""

    def head(self) -> Head: ...

    def read_chain(self, after_position: int = ..., through: int | None = ...) -> Iterable[ChainRow]: ...

GENESIS = bytes(32)
CHAIN_VERSION = 2  # the version every new row is hashed with


def row_digest(
    stream_id: str,
    version: int,
    event_type: str,
    schema_version: int,
    recorded_at: str,
    data: bytes,
    metadata: bytes,
) -> bytes:
    """Chain version 1's row digest (and its link input)."""
    head = canonical_json([stream_id, version, event_type, schema_version, recorded_at])
    return hashlib.sha256(head + b"\n" + data + b"\n" + metadata).digest()


def stored_row_digest(row: RawEvent) -> bytes:
    """Chain version 1's row digest of a stored row."""
    fields = (row.stream_id, row.version, row.type, row.schema_version, row.recorded_at)
    return row_digest(*fields, row.data, row.metadata)


def stream_digest(stream_id: str) -> bytes:
    return hashlib.sha256(stream_id.encode()).digest()


def rest_digest(
    version: int,
    event_type: str,
    schema_version: int,
    recorded_at: str,
    data: bytes,
    metadata: bytes,
) -> bytes:
    head = canonical_json([version, event_type, schema_version, recorded_at])
    return hashlib.sha256(head + b"\n" + data + b"\n" + metadata).digest()


def link_input_v2(stream_sha256: bytes, rest_sha256: bytes) -> bytes:
    """Chain version 2's link input from a row's two inner hashes."""
    return b"\x02" + hashlib.sha256(stream_sha256 + rest_sha256).digest()


def link_input(row: RawEvent) -> bytes:
    """What the chain hashes for a stored row, by the version that hashed it."""
    if row.chain_version == 1:
        return stored_row_digest(row)
    if row.chain_version == 2:
        rest = rest_digest(
            row.version, row.type, row.schema_version, row.recorded_at, row.data, row.metadata
        )
        return link_input_v2(stream_digest(row.stream_id), rest)
    raise ValueError(f"position {row.position}: unknown chain version {row.chain_version}")


def link(previous: bytes, position: int, digest: bytes) -> bytes:
    return hashlib.sha256(previous + position.to_bytes(8, "big") + digest).digest()


# One row as the chain sees it: (position, stored hash, link input, problem). The link
# input is None when the row could not be read (an export line that is not a row), and
# the problem says why. A plain tuple: verify builds one per event.
Link = tuple[int, str, bytes | None, str | None]


@dataclass(slots=True)
class ChainCheck:
    """Where a chain walk starts and what it must meet on the way and at the end."""

    after: int = 0
    previous: bytes = GENESIS
    stored_head: Head | None = None
    # position -> (label, expected hash hex): digests the chain must pass through
    checkpoints: Mapping[int, tuple[str, str]] = field(default_factory=dict)
    head_label: str = "the stored head"  # what claims ``stored_head``, for the reason


def verify_links(links: Iterable[Link], check: ChainCheck) -> VerifyReport:
    """Recompute the chain; name the first position that is missing, misplaced or wrong.

    Positions must run contiguously from ``check.after + 1``; each recomputed hash
    must equal the stored one and every checkpoint on the way; the last position
    and hash must equal ``check.stored_head`` when one is given.
    """
    previous, position = check.previous, check.after
    points = check.checkpoints
    sha256 = hashlib.sha256
    for row_position, stored, data, problem in links:
        expected = position + 1
        if data is None or row_position != expected:
            problem = problem or _misplaced(row_position, expected)
        else:
            computed = sha256(previous + expected.to_bytes(8, "big") + data).digest()
            hex_hash = computed.hex()
            if hex_hash != stored:
                problem = (
                    f"position {expected}: the stored hash does not match the row's contents"
                    " and the previous hash"
                )
            elif points and expected in points and points[expected][1] != hex_hash:
                problem = (
                    f"{points[expected][0]}: position {expected} hashes to {hex_hash},"
                    f" not to the digest's head {points[expected][1]}"
                )
        if problem is not None:
            return VerifyReport(False, position - check.after, previous.hex(), expected, problem)
        previous, position = computed, expected
    return _finish(previous, position, check)


def verify_start(check: ChainCheck) -> VerifyReport | None:
    """The digests a chain walk never meets: those at or before ``check.after``.

    At ``after`` the chain's hash is the one the walk starts from (at 0, 32 zero bytes),
    so a digest there must name it; before ``after`` the walk cannot confirm a digest,
    so it fails rather than pass unchecked. None when every such digest holds.
    """
    start = check.previous.hex()
    for position, (label, head) in sorted(check.checkpoints.items()):
        if position > check.after:
            break
        if position < check.after:
            reason = f"{label}: position {position} is not checked here (the check starts after {check.after})"
        elif head != start:
            reason = f"{label}: position {position} hashes to {start}, not to the digest's head {head}"
        else:
            continue
        return VerifyReport(False, 0, start, position, reason)
    return None


def _misplaced(found: int, expected: int) -> str:
    if found > expected:
        missing = f"{expected}" if found == expected + 1 else f"{expected} to {found - 1}"
        return f"position {missing} missing (the next row is position {found})"
    return f"position {found} appears again or out of order where position {expected} belongs"


def _finish(previous: bytes, position: int, check: ChainCheck) -> VerifyReport:
    count = position - check.after
    ok = VerifyReport(True, count, previous.hex())
    beyond = sorted(p for p in check.checkpoints if p > position)
    if beyond:
        label = check.checkpoints[beyond[0]][0]
        return VerifyReport(
            False,
            count,
            previous.hex(),
            position + 1,
            f"{label}: position {beyond[0]} is beyond the log's end at {position};"
            f" the events from position {position + 1} on are missing",
        )
    stored = check.stored_head
    if stored is None:
        return ok
    if stored.position != position:
        return VerifyReport(
            False,
            count,
            previous.hex(),
            min(stored.position, position) + 1,
            f"log ends at {position} but {check.head_label} says {stored.position}",
        )
    if stored.hash != previous.hex():
        return VerifyReport(
            False,
            count,
            previous.hex(),
            position,
            f"the recomputed head at {position} differs from the hash {check.head_label} gives",
        )
    return ok


def raw_links(rows: Iterable[RawEvent]) -> Iterator[Link]:
    """Stored rows as links (see ``column_links``)."""
    return column_links(
        (r.position, r.stream_id, r.version, r.type, r.schema_version, r.recorded_at, r.data,
         r.metadata, r.hash, r.chain_version)
        for r in rows
    )  # fmt: skip


def column_links(rows: Iterable[ChainRow]) -> Iterator[Link]:
    """Rows' columns as links; version 2 inlined: verify runs this once per event, and
    ``b"\\n".join`` hashes a row's bytes without building the intermediate copies that
    ``+`` would."""
    streams: dict[str | bytes, bytes] = {}  # a stream's hash, reused across its events
    sha256, encode, join = hashlib.sha256, canonical_json, b"\n".join
    for position, stream_id, version, kind, schema, stamp, data, metadata, stored, chain in rows:
        if chain != 2:
            yield _other_version(
                (position, stream_id, version, kind, schema, stamp, data, metadata, stored, chain)
            )
            continue
        stream = streams.get(stream_id)
        if stream is None:
            if len(streams) >= 100_000:
                streams.clear()
            key = stream_id if isinstance(stream_id, bytes) else stream_id.encode()
            stream = streams[stream_id] = sha256(key).digest()
        rest = sha256(join((encode([version, kind, schema, stamp]), data, metadata))).digest()
        yield (position, stored, b"\x02" + sha256(stream + rest).digest(), None)


def verify_rows(rows: Iterable[ChainRow], check: ChainCheck) -> VerifyReport:
    """``verify_links(column_links(rows), check)``, faster: verify's own loop.

    The usual row (chain version 2, the next position, no checkpoint at it, its stored
    hash matching) is checked here without building a link per row; the first row
    that is anything else is handed, with the rest, to ``verify_links``, which judges
    it and everything after exactly as it always does.
    """
    previous, position = check.previous, check.after
    points = check.checkpoints
    streams: dict[str | bytes, bytes] = {}  # a stream's hash, reused across its events
    sha256, encode, join = hashlib.sha256, canonical_json, b"\n".join
    remaining = iter(rows)
    for row in remaining:
        at, stream_id, version, kind, schema, stamp, data, metadata, stored, chain = row
        if chain != 2 or at != position + 1 or at in points:
            break
        stream = streams.get(stream_id)
        if stream is None:
            if len(streams) >= 100_000:
                streams.clear()
            key = stream_id if isinstance(stream_id, bytes) else stream_id.encode()
            stream = streams[stream_id] = sha256(key).digest()
        rest = sha256(join((encode([version, kind, schema, stamp]), data, metadata))).digest()
        link_input = b"\x02" + sha256(stream + rest).digest()
        computed = sha256(previous + at.to_bytes(8, "big") + link_input).digest()
        if computed.hex() != stored:
            break
        previous, position = computed, at
    else:
        return _finish(previous, position, check)
    resumed = ChainCheck(position, previous, check.stored_head, points, check.head_label)
    report = verify_links(column_links(itertools.chain([row], remaining)), resumed)
    return replace(report, events=report.events + position - check.after)


def _other_version(row: ChainRow) -> Link:
    """A row not of chain version 2 (version 1, or one this code does not know)."""
    position, stream_id, version, kind, schema, stamp, data, metadata, stored, chain = row
    stream = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    raw = RawEvent(position, stream, version, kind, schema, data, metadata, stamp, stored, None,
                   chain)  # fmt: skip
    try:
        return (position, stored, link_input(raw), None)
    except ValueError as error:
        return (position, stored, None, str(error))


def verify_chain(rows: Iterable[RawEvent], stored_head: Head | None = None) -> VerifyReport:
    """Recompute the chain of stored rows from the first (see ``verify_links``)."""
    return verify_links(raw_links(rows), ChainCheck(stored_head=stored_head))


def verify_store(
    store: ChainSource, checkpoints: Mapping[int, tuple[str, str]] | None = None
) -> VerifyReport:
    """The whole log against the head the store keeps (and any digests' heads).

    The head is read first and the rows up to it are checked: events appended
    meanwhile lie beyond it and are left for the next run.
    """
    stored = store.head()
    check = ChainCheck(stored_head=stored, checkpoints=checkpoints or {})
    return verify_start(check) or verify_rows(store.read_chain(0, through=stored.position), check)


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """An append's events as the exact bytes to store, with their link inputs."""

    recorded_at: datetime
    stamp: str
    events: list[PreparedEvent]
    digests: list[bytes]
    chain_version: int = CHAIN_VERSION

    def recorded(
        self,
        stream_id: str,
        expected_version: int,
        events: Sequence[NewEvent],
        links: Iterable[tuple[int, str]],
    ) -> list[RecordedEvent]:
        """The appended events as recorded, given each one's (position, hash hex)."""
        return [
            RecordedEvent(
                position=position,
                stream_id=stream_id,
                version=expected_version + i,
                type=event.type,
                schema_version=p.schema_version,
                data=event.data,
                metadata=event.metadata,
                recorded_at=self.recorded_at,
                hash=hash_hex,
            )
            for i, ((position, hash_hex), event, p) in enumerate(
                zip(links, events, self.events, strict=True), start=1
            )
        ]


def prepare_append(
    stream_id: str, events: Sequence[NewEvent], expected_version: int
) -> PreparedAppend:
    """Encoding and digests, done before any lock is taken (every store's first step)."""
    if not events:
        raise ValueError("append needs at least one event")
    recorded_at = utcnow()
    stamp = format_timestamp(recorded_at)
    prepared = [prepare(e) for e in events]
    stream = stream_digest(stream_id)
    digests = [
        link_input_v2(
            stream,
            rest_digest(expected_version + i, p.type, p.schema_version, stamp, p.data, p.metadata),
        )
        for i, p in enumerate(prepared, start=1)
    ]
    return PreparedAppend(recorded_at, stamp, prepared, digests)
