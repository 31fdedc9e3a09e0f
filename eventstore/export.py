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

The verifier takes nothing else: a full export shows every row in full, a link
stands only in a proof and only for another stream's row, and every line has exactly
its fields, of their JSON types (tools/verify_export.py applies the same rules).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from itertools import takewhile
from typing import Any, Final

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
    verify_start,
)
from eventstore.store import EventLog
from eventstore.values import Head, RawEvent, VerifyReport

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


# What each line must be, field by field (``type(value) is``: JSON's true is no integer).
# Nothing more: a field the chain does not cover would be text no hash vouches for.
HEADER: Final[Mapping[str, type]] = {
    "format": str, "kind": str, "after": int, "previous": str, "position": int, "head": str,
}  # fmt: skip
PROOF_HEADER: Final[Mapping[str, type]] = {**HEADER, "stream_id": str}
FULL_ROW: Final[Mapping[str, type]] = {
    "position": int, "stream_id": str, "version": int, "type": str, "schema_version": int,
    "recorded_at": str, "data": str, "metadata": str, "chain": int, "hash": str,
}  # fmt: skip
LINK_ROWS: Final[Mapping[int, Mapping[str, type]]] = {
    1: {"position": int, "chain": int, "digest": str, "hash": str},
    2: {"position": int, "chain": int, "stream_sha256": str, "rest_sha256": str, "hash": str},
}
HEX_FIELDS: Final = frozenset({"previous", "head", "hash", "digest", "stream_sha256", "rest_sha256"})
MAX_POSITION: Final = 2**63 - 1  # a position is hashed as 8 bytes
_HEX64: Final = re.compile("[0-9a-f]{64}")


@dataclass(slots=True)
class _Proof:
    """What a proof's verifier learns about the proven stream while it walks the chain."""

    stream_id: str
    stream_sha256: str
    complete_from: int
    last_version: int | None  # None: an export that starts mid-log, versions unknown so far
    events: int = 0


class _Repeated(ValueError):
    """A JSON object that gives one field twice."""


def _parse(line: bytes | str) -> Any:
    """One line as JSON: UTF-8, and no field given twice (readers differ on which wins)."""
    text = line.decode() if isinstance(line, bytes) else line
    return json.loads(text, object_pairs_hook=_no_repeats)


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _Repeated
    return found


def _unreadable(error: ValueError | RecursionError) -> str:
    """Why a line could not be read, for a reason."""
    if isinstance(error, _Repeated):
        return "the line gives a field twice"
    if isinstance(error, UnicodeError):  # not UTF-8, or a lone surrogate no UTF-8 can hold
        return "the line holds text that is not UTF-8"
    return "the line is not JSON"


def _shape_problem(value: Any, fields: Mapping[str, type], what: str) -> str | None:
    """What keeps ``value`` from being an object of exactly these fields, or None."""
    if not isinstance(value, dict):
        return f"{what} is not a JSON object"
    missing, extra = sorted(set(fields) - set(value)), sorted(set(value) - set(fields))
    if missing:
        return f"{what} lacks {', '.join(missing)}"
    if extra:
        return f"{what} has the unknown field {', '.join(extra)}"
    for name, kind in fields.items():
        if type(value[name]) is not kind:
            return f"{what}'s {name} is not {'an integer' if kind is int else 'a string'}"
        if name in HEX_FIELDS and not _hex64(value[name]):
            return f"{what}'s {name} is not 64 lowercase hexadecimal digits"
    return None


def _hex64(text: str) -> bool:
    return _HEX64.fullmatch(text) is not None


def _read_header(first: bytes | str | None) -> dict[str, Any] | str:
    """The header, or why the first line is not one."""
    if first is None:
        return "the file is empty"
    try:
        header = _parse(first)
    except (ValueError, RecursionError) as error:
        return _unreadable(error)
    problem = _header_problem(header)
    return header if problem is None else problem


def _header_problem(header: Any) -> str | None:
    """Why the first line is not an export's header, or None."""
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        return f"the first line is not a {FORMAT} header"
    kind = header.get("kind")
    if kind not in ("full", "proof"):
        return "the header's kind is neither full nor proof"
    problem = _shape_problem(header, PROOF_HEADER if kind == "proof" else HEADER, "the header")
    if problem is not None:
        return problem
    if not 0 <= header["after"] <= header["position"] <= MAX_POSITION:
        return "the header's after and position are not 0 <= after <= position < 2^63"
    if header["after"] == 0 and header["previous"] != GENESIS.hex():
        return "an export from position 1 starts from the chain's start (previous: 64 zeros)"
    if kind == "proof" and not header["stream_id"]:
        return "the header's stream_id is empty"
    return None


def _row_link(line: Any, expected: int, proof: _Proof | None) -> Link:
    """One row as a link, or as the problem that stops the walk at ``expected``."""
    if isinstance(line, dict) and "stream_id" in line:
        return _full_link(line, expected, proof)
    chain = line.get("chain") if isinstance(line, dict) else None
    fields = LINK_ROWS.get(chain) if type(chain) is int else None
    problem = _shape_problem(line, fields, "the row") if fields else "the line is not a row"
    if problem is not None:
        return (expected, "", None, f"position {expected}: {problem}")
    position, stored = line["position"], line["hash"]
    if proof is None:
        reason = f"position {expected}: an opaque link where a full export shows every row in full"
        return (position, stored, None, reason)
    if chain == 1:  # a version 1 row's stream cannot be told
        proof.complete_from = position + 1
        return (position, stored, bytes.fromhex(line["digest"]), None)
    if line["stream_sha256"] == proof.stream_sha256:
        reason = f"position {position} belongs to {proof.stream_id} but is not shown"
        return (position, stored, None, reason)
    inner = bytes.fromhex(line["stream_sha256"]), bytes.fromhex(line["rest_sha256"])
    return (position, stored, link_input_v2(*inner), None)


def _full_link(line: dict[str, Any], expected: int, proof: _Proof | None) -> Link:
    problem = _shape_problem(line, FULL_ROW, "the row")
    if problem is None and line["chain"] not in LINK_ROWS:
        problem = f"the row's chain version {line['chain']} is unknown"
    if problem is None and proof is not None and line["stream_id"] != proof.stream_id:
        problem = f"a row of another stream shown in full (a proof shows {proof.stream_id}'s)"
    if problem is not None:
        return (expected, "", None, f"position {expected}: {problem}")
    position, stored = line["position"], line["hash"]
    data, metadata = line["data"], line["metadata"]
    row = RawEvent(position, line["stream_id"], line["version"], line["type"],
                   line["schema_version"], data.encode(), metadata.encode(), line["recorded_at"],
                   stored, chain_version=line["chain"])  # fmt: skip
    if proof is not None:
        if proof.last_version is not None and row.version != proof.last_version + 1:
            missing = f"{proof.stream_id}'s version {proof.last_version + 1} is missing"
            return (position, stored, None, f"position {expected}: {missing}")
        proof.events, proof.last_version = proof.events + 1, row.version
    return (position, stored, link_input(row), None)


def _links(lines: Iterator[bytes | str], first: int, proof: _Proof | None) -> Iterator[Link]:
    for expected, text in enumerate(lines, start=first):
        try:
            yield _row_link(_parse(text), expected, proof)
        except (ValueError, RecursionError) as error:  # UnicodeError is a ValueError
            yield (expected, "", None, f"position {expected}: {_unreadable(error)}")


def verify_export(
    lines: Iterable[bytes | str], checkpoints: Mapping[int, tuple[str, str]] | None = None
) -> dict[str, Any]:
    """Recompute an export's chain; for a proof, also that none of its stream's rows is hidden.

    Every line must be exactly what ``export_lines`` writes: a full export shows every
    row in full; a proof shows its stream's rows in full and only other streams' rows
    as links. Anything else is a failed check naming the first position it stops at.
    """
    lines = iter(lines)
    header = _read_header(next(lines, None))
    if isinstance(header, str):
        reason = f"not a verifiable export: {header}"
        return asdict(VerifyReport(False, 0, GENESIS.hex(), None, reason))
    after, stream = header["after"], header.get("stream_id")
    proof = None
    if stream is not None:
        proof = _Proof(stream, stream_digest(stream).hex(), after + 1, None if after else 0)
    stored = Head(header["position"], header["head"])
    check = ChainCheck(
        after, bytes.fromhex(header["previous"]), stored, dict(checkpoints or {}),
        "the export's header",
    )  # fmt: skip
    walked = verify_start(check) or verify_links(_links(lines, after + 1, proof), check)
    report: dict[str, Any] = asdict(walked)
    report["kind"] = header["kind"]
    if proof is not None:
        report.update(
            stream_id=proof.stream_id, stream_events=proof.events, complete_from=proof.complete_from
        )
    return report
