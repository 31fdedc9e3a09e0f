"""Digests: the log's head as a small document an operator keeps out of the database's reach.

``ledger verify --digest FILE`` then confirms that the log still passes through every
saved head: a log rewritten from some position on, even with its whole chain
recomputed, no longer hashes to a digest taken before the rewrite.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventstore.store import EventLog


class DigestError(ValueError):
    """A digest file that cannot be read as a digest (a usage error, not a failed check)."""


class DigestConflict(Exception):
    """Two digests name different heads at one position: at most one is this log's."""


@dataclass(frozen=True, slots=True)
class Digest:
    label: str  # where it came from (a file name), to name it in a report
    position: int
    head: str


def make_digest(store: EventLog) -> dict[str, Any]:
    """``{"position", "head", "recorded_at", "store"}``: the head now, and when it was written."""
    head = store.head()
    recorded_at = None
    if head.position:
        row = next(iter(store.read_raw(head.position - 1, 1)), None)
        recorded_at = row.recorded_at if row is not None else None
    return {
        "position": head.position,
        "head": head.hash,
        "recorded_at": recorded_at,
        "store": store.database.identity(),
    }


def parse_digest(text: str, label: str) -> Digest:
    try:
        document = json.loads(text)
        position, head = document["position"], document["head"]
    except (ValueError, TypeError, KeyError, IndexError, RecursionError):
        raise DigestError(f"{label}: not a digest (JSON with position and head)") from None
    # type(), not isinstance: JSON's true is no position (bool is an int subclass)
    if type(position) is not int or position < 0 or not isinstance(head, str) or len(head) != 64:
        raise DigestError(f"{label}: not a digest (a position and a 64-digit hex head)")
    if not all(c in string.hexdigits for c in head):  # bytes.fromhex would skip spaces
        raise DigestError(f"{label}: the head is not hexadecimal")
    return Digest(label, position, head.lower())


def read_digests(paths: Iterable[Path]) -> list[Digest]:
    """Digests from files of one or more lines (``ledger digest >> file`` appends one)."""
    digests = []
    for path in paths:
        try:
            text = path.read_bytes().decode()
        except OSError as error:
            raise DigestError(f"{path}: cannot be read ({error.strerror or error})") from None
        except UnicodeDecodeError:
            raise DigestError(f"{path}: not a digest (not UTF-8 text)") from None
        # Lines end at "\n" only, as tools/verify_export.py reads them.
        lines = [line for line in text.split("\n") if line.strip()] or [""]
        for number, line in enumerate(lines, start=1):
            label = str(path) if len(lines) == 1 else f"{path}:{number}"
            digests.append(parse_digest(line, label))
    return digests


def checkpoints(digests: Iterable[Digest]) -> Mapping[int, tuple[str, str]]:
    """position → (digest label, head); DigestConflict if two disagree on a position."""
    found: dict[int, tuple[str, str]] = {}
    for digest in digests:
        seen = found.setdefault(digest.position, (digest.label, digest.head))
        if seen[1] != digest.head:
            raise DigestConflict(
                f"{seen[0]} and {digest.label} name different heads at position {digest.position}"
            )
    return found
