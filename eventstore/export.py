"""Verifiable exports and tenant proofs: the chain recomputed with no database.

An export is JSON lines. The first line is its header::

    {"format": "ledger-export/1", "kind": "full" | "proof", "after": N,
     "previous": <hash at N>, "position": <last position>, "head": <hash at it>,
     "stream_id": <the proven stream, proofs only>}

then one line per position after N, in order. A full row carries every column the
chain covers, ``data`` and ``metadata`` as the exact stored text (sealed secrets as
their ciphertext; a data key is never in the log), its ``chain`` version and
``hash``. A proof carries its stream's rows in full and every other row only as
what links the chain: ``stream_sha256`` and ``rest_sha256`` (chain version 2) or
``digest`` (version 1, whose stream a proof cannot show).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import takewhile
from typing import Any

from eventstore.chain import (
    GENESIS,
    ChainCheck,
    Link,
    link_input,
    link_input_v2,
    rest_digest,
    stored_row_digest,
    stream_digest,
    verify_links,
)
from eventstore.store import EventLog, Head, RawEvent, VerifyReport

FORMAT = "ledger-export/1"


def full_line(row: RawEvent) -> dict[str, Any]:
    return {
        "position": row.position,
        "stream_id": row.stream_id,
        "version": row.version,
        "type": row.type,
        "schema_version": row.schema_version,
        "recorded_at": row.recorded_at,
        "data": row.data.decode(),
        "metadata": row.metadata.decode(),
        "chain": row.chain_version,
        "hash": row.hash,
    }


def opaque_line(row: RawEvent) -> dict[str, Any]:
    """Only what links another stream's row into the chain; nothing of its contents."""
    if row.chain_version == 1:
        digest = stored_row_digest(row)
        return {"position": row.position, "chain": 1, "digest": digest.hex(), "hash": row.hash}
    rest = rest_digest(
        row.version, row.type, row.schema_version, row.recorded_at, row.data, row.metadata
    )
    return {
        "position": row.position,
        "chain": row.chain_version,
        "stream_sha256": stream_digest(row.stream_id).hex(),
        "rest_sha256": rest.hex(),
        "hash": row.hash,
    }


def export_lines(
    store: EventLog, after: int = 0, stream_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """The header, then every row after ``after`` up to the head read first.

    With ``stream_id``, a proof: that stream's rows in full, the others opaque.
    LookupError (before any line) when the row at ``after`` is missing.
    """
    head = store.head()
    after = max(0, min(after, head.position))
    previous = GENESIS.hex()
    if after:
        row = next(iter(store.read_raw(after - 1, 1)), None)
        if row is None or row.position != after:
            raise LookupError(f"position {after} is missing from the log (see ledger verify)")
        previous = row.hash
    header: dict[str, Any] = {
        "format": FORMAT,
        "kind": "full" if stream_id is None else "proof",
        "after": after,
        "previous": previous,
        "position": head.position,
        "head": head.hash,
    }
    if stream_id is not None:
        header["stream_id"] = stream_id
    yield header
    rows = takewhile(lambda r: r.position <= head.position, store.read_raw(after, 5000))
    for row in rows:
        shown = stream_id is None or row.stream_id == stream_id
        yield full_line(row) if shown else opaque_line(row)


@dataclass(slots=True)
class _Proof:
    """What a proof's verifier learns about the proven stream while it walks the chain."""

    stream_id: str
    stream_sha256: str
    complete_from: int
    last_version: int | None  # None: an export that starts mid-log, versions unknown so far
    events: int = 0


def _row_link(line: Mapping[str, Any], proof: _Proof | None) -> Link:
    position, chain, stored = line["position"], line["chain"], line["hash"]
    if "stream_id" in line:
        row = RawEvent(
            position,
            line["stream_id"],
            line["version"],
            line["type"],
            line["schema_version"],
            line["data"].encode(),
            line["metadata"].encode(),
            line["recorded_at"],
            stored,
            chain_version=chain,
        )
        if proof is not None and row.stream_id == proof.stream_id:
            if proof.last_version is not None and row.version != proof.last_version + 1:
                missing = proof.last_version + 1
                return (position, stored, None, f"the stream's version {missing} is missing")
            proof.events, proof.last_version = proof.events + 1, row.version
        return (position, stored, link_input(row), None)
    if chain == 1:
        digest = bytes.fromhex(line["digest"])
        if len(digest) != 32:
            raise ValueError("a digest has 32 bytes")
        if proof is not None:  # a version 1 row's stream cannot be told
            proof.complete_from = position + 1
        return (position, stored, digest, None)
    if chain == 2:
        if proof is not None and line["stream_sha256"] == proof.stream_sha256:
            reason = f"position {position} belongs to {proof.stream_id} but is not shown"
            return (position, stored, None, reason)
        inner = bytes.fromhex(line["stream_sha256"]), bytes.fromhex(line["rest_sha256"])
        return (position, stored, link_input_v2(*inner), None)
    raise ValueError(f"unknown chain version {chain}")


def _links(lines: Iterator[str], first: int, proof: _Proof | None) -> Iterator[Link]:
    for number, text in enumerate(lines, start=2):
        try:
            yield _row_link(json.loads(text), proof)
        except (ValueError, TypeError, KeyError, AttributeError):
            problem = f"line {number} is not a row of a verifiable export"
            yield (first + number - 2, "", None, problem)


def verify_export(
    lines: Iterable[str], checkpoints: Mapping[int, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Recompute an export's chain; for a proof, also that none of its stream's rows is hidden."""
    lines = iter(lines)
    try:
        header = json.loads(next(lines))
        after, previous = int(header["after"]), str(header["previous"])
        start = bytes.fromhex(previous)
        stored = Head(int(header["position"]), str(header["head"]))
        if header.get("format") != FORMAT:
            raise ValueError(header.get("format"))
    except (StopIteration, ValueError, TypeError, KeyError):
        reason = f"not a verifiable export: the first line is not a {FORMAT} header"
        return asdict(VerifyReport(False, 0, GENESIS.hex(), None, reason))
    points = dict(checkpoints or {})
    for position, (label, head) in sorted(points.items()):
        if position < after or (position == after and head != previous):
            reason = f"{label}: position {position} is not in this export (it starts after {after})"
            if position == after:
                reason = f"{label}: position {after} does not hash to the digest's head"
            return asdict(VerifyReport(False, 0, previous, position, reason))
    points.pop(after, None)
    proof = None
    if header.get("kind") == "proof":
        stream = str(header["stream_id"])
        proof = _Proof(stream, stream_digest(stream).hex(), after + 1, None if after else 0)
    check = ChainCheck(after, start, stored, points, "the export's header")
    report: dict[str, Any] = asdict(verify_links(_links(lines, after + 1, proof), check))
    report["kind"] = header.get("kind")
    if proof is not None:
        report.update(
            stream_id=proof.stream_id, stream_events=proof.events, complete_from=proof.complete_from
        )
    return report
