"""Both export verifiers against every tampering we could think of (issue 17).

A real log on each store is exported (full, a tenant's proof, and a tail after position
4); each case below edits one of those files (or brings a digest) and says what the
verdict must be. Every case goes through `ledger verify --export` (in process) and
`tools/verify_export.py` (the system python3): both must give the expected exit code
and first bad position, the same report (ok, events, head, kind, what a proof proves),
one line of reason, and never a traceback. Digest cases on the untampered log also go
through `ledger verify --digest` against the database itself.

The log (tests/contract/test_integrity.py): positions 1-9; alpha at 1, 3, 6, 9 (versions 1-4),
bravo at 2, 5, 8, charlie at 4, 7. The proof is alpha's.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from eventstore.chain import GENESIS, link, link_input
from eventstore.export import opaque_line
from tests.contract.test_integrity import EVENTS, STANDALONE, _row, build_log

runner = CliRunner()

# A line of an export file: a JSON value to write, or raw bytes written as they are.
Line = Any
Change = Callable[[list[Line]], None]

OK = (0, None)
NO_HEADER = (1, None)  # not an export at all: no position to name
USAGE = (2, None)  # a digest file that holds no digest: a usage error, as for any bad value


def bad(position: int) -> tuple[int, int]:
    return (1, position)


@dataclass(frozen=True)
class Case:
    name: str
    source: str  # "full", "proof" (alpha's) or "tail" (--after 4)
    change: Change | None
    verdict: tuple[int, int | None]
    digests: tuple[Any, ...] = ()  # each: a dict (one digest) or raw bytes (a digest file)
    database: bool = False  # also `ledger verify --digest` on the database (untampered log)


# -- edits


def at(position: int, field: str, value: Any) -> Change:
    """Set one field of the row at ``position`` (lines[0] is the header)."""
    return lambda lines: lines[position].__setitem__(field, value)


def header(field: str, value: Any) -> Change:
    return lambda lines: lines[0].__setitem__(field, value)


def without(field: str, index: int = 0) -> Change:
    return lambda lines: lines[index].pop(field)


def both(*changes: Change) -> Change:
    def apply(lines: list[Line]) -> None:
        for change in changes:
            change(lines)

    return apply


def swap_for_link(*positions: int) -> Change:
    def apply(lines: list[Line]) -> None:
        for position in positions:
            lines[position] = opaque_line(_row(lines[position]))

    return apply


def as_v1_link(position: int) -> Change:
    def apply(lines: list[Line]) -> None:
        row = _row(lines[position])
        lines[position] = {
            "position": position,
            "chain": 1,
            "hash": row.hash,
            "digest": link_input(row)[1:].hex(),
        }

    return apply


def append_honest_row(lines: list[Line]) -> None:
    """A new event after the head, hashed onto the chain: only the header's head is wrong."""
    row = copy.deepcopy(lines[-1])
    row["position"], row["version"] = row["position"] + 1, row["version"] + 1
    previous = bytes.fromhex(lines[-1]["hash"])
    row["hash"] = link(previous, row["position"], link_input(_row(row))).hex()
    lines.append(row)


def cut_the_tail_and_its_header(lines: list[Line]) -> None:
    """The last event dropped and the header moved back to it: a consistent, shorter log."""
    lines.pop()
    lines[0]["position"], lines[0]["head"] = lines[-1]["position"], lines[-1]["hash"]


def raw(position: int, make: Callable[[str], bytes]) -> Change:
    """Replace a line by bytes made from its JSON text."""

    def apply(lines: list[Line]) -> None:
        lines[position] = make(json.dumps(lines[position], separators=(",", ":")))

    return apply


def repeated_data(text: str) -> bytes:
    """The data field given twice: a reader that keeps the first sees other data."""
    return text.replace('"data":', '"data":"{\\"evil\\":true}","data":', 1).encode()


def reorder(lines: list[Line]) -> None:
    lines[3], lines[5] = lines[5], lines[3]


def rehash_from(position: int) -> Change:
    """Recompute every hash from ``position`` on and the header's head (a rewrite)."""

    def apply(lines: list[Line]) -> None:
        previous = bytes.fromhex(lines[position - 1]["hash"]) if position > 1 else GENESIS
        for line in lines[position:]:
            previous = link(previous, line["position"], link_input(_row(line)))
            line["hash"] = previous.hex()
        lines[0]["head"] = previous.hex()

    return apply


def edit_data(position: int) -> Change:
    return lambda lines: lines[position].__setitem__("data", lines[position]["data"] + " ")


ZERO = "0" * 64
NOT_IT = "ab" * 32
HEAD = "the head"  # stands for the log's real head hash in a digest
HEAD_IN_CAPITALS = "the head in capitals"
AT_FOUR = "the hash at 4"

CASES = [
    # -- the untampered exports, and what may legitimately differ
    Case("full export", "full", None, OK),
    Case("proof", "proof", None, OK),
    Case("tail after 4", "tail", None, OK),
    Case("blank lines between rows", "full", lambda ls: ls.insert(3, b"   "), OK),
    Case("shorter log with its header moved back", "full", cut_the_tail_and_its_header, OK),
    # -- rows swapped for their link hashes
    Case("full: one row as its link hash", "full", swap_for_link(3), bad(3)),
    Case("full: every row as its link hash", "full", swap_for_link(*range(1, 10)), bad(1)),
    Case("full: a row as a version-1 link", "full", as_v1_link(5), bad(5)),
    Case("proof: alpha's row as its link hash", "proof", swap_for_link(3), bad(3)),
    Case("proof: alpha's row as a version-1 link", "proof", as_v1_link(6), bad(6)),
    Case(
        "proof relabelled full", "proof", both(header("kind", "full"), without("stream_id")), bad(2)
    ),
    Case(
        "full relabelled alpha's proof",
        "full",
        both(header("kind", "proof"), header("stream_id", "tenant:client-alpha")),
        bad(2),
    ),
    # -- the proof's header
    Case("proof: header without stream_id", "proof", without("stream_id"), NO_HEADER),
    Case("proof: stream_id of bravo", "proof", header("stream_id", "tenant:client-bravo"), bad(1)),
    Case("proof: stream_id of nobody", "proof", header("stream_id", "tenant:nobody"), bad(1)),
    Case("proof: empty stream_id", "proof", header("stream_id", ""), NO_HEADER),
    Case("proof: stream_id a number", "proof", header("stream_id", 7), NO_HEADER),
    Case("proof: relabelled full, stream_id kept", "proof", header("kind", "full"), NO_HEADER),
    Case("full: a stream_id in the header", "full", header("stream_id", "tenant:x"), NO_HEADER),
    # -- rows deleted, moved, edited
    Case("full: row 4 deleted", "full", lambda ls: ls.pop(4), bad(4)),
    Case("full: rows 3 and 5 swapped", "full", reorder, bad(3)),
    Case("full: data edited", "full", edit_data(3), bad(3)),
    Case("full: hash edited", "full", at(3, "hash", NOT_IT), bad(3)),
    Case("full: version edited", "full", at(3, "version", 7), bad(3)),
    Case("full: stream edited", "full", at(3, "stream_id", "tenant:client-bravo"), bad(3)),
    Case("full: rewritten from 3 (no digest)", "full", both(edit_data(3), rehash_from(3)), OK),
    Case(
        "full: rewritten from 3, digest at the head",
        "full",
        both(edit_data(3), rehash_from(3)),
        bad(EVENTS),
        ({"position": EVENTS, "head": HEAD},),
    ),
    Case("proof: alpha's row 3 deleted", "proof", lambda ls: ls.pop(3), bad(3)),
    Case("proof: alpha's version 2 renumbered", "proof", at(3, "version", 5), bad(3)),
    Case("proof: a link's stream hash edited", "proof", at(2, "stream_sha256", NOT_IT), bad(2)),
    # -- the header
    Case("header missing", "full", lambda ls: ls.pop(0), NO_HEADER),
    Case("header again as the second line", "full", lambda ls: ls.insert(1, ls[0]), bad(1)),
    Case("header again at the end", "full", lambda ls: ls.append(ls[0]), bad(EVENTS + 1)),
    Case("header: kind partial", "full", header("kind", "partial"), NO_HEADER),
    Case("header: no kind", "full", without("kind"), NO_HEADER),
    Case("header: another format", "full", header("format", "ledger-export/2"), NO_HEADER),
    Case("header: after as text", "full", header("after", "0"), NO_HEADER),
    Case("header: after true", "full", header("after", True), NO_HEADER),
    Case("header: position as a float", "full", header("position", 9.0), NO_HEADER),
    Case("header: position before after", "tail", header("position", 3), NO_HEADER),
    Case("header: position of 2^64", "full", header("position", 2**64), NO_HEADER),
    Case("header: head not hex", "full", header("head", "z" * 64), NO_HEADER),
    Case("header: previous not zeros from 1", "full", header("previous", NOT_IT), NO_HEADER),
    Case("header: tail claimed from 0", "tail", header("after", 0), NO_HEADER),
    Case("header: an unknown field", "full", header("note", "trust me"), NO_HEADER),
    Case("header: a JSON array", "full", lambda ls: ls.__setitem__(0, [1, 2]), NO_HEADER),
    Case("header: not JSON", "full", lambda ls: ls.__setitem__(0, b"{format"), NO_HEADER),
    Case("empty file", "full", lambda ls: ls.clear(), NO_HEADER),
    # -- the tail of the file
    Case("last row cut off", "full", lambda ls: ls.pop(), bad(EVENTS)),
    Case(
        "last line cut in half",
        "full",
        raw(EVENTS, lambda t: t[: len(t) // 2].encode()),
        bad(EVENTS),
    ),
    Case("an honest row appended", "full", append_honest_row, bad(EVENTS + 1)),
    Case("a copy of the last row appended", "full", lambda ls: ls.append(ls[-1]), bad(EVENTS + 1)),
    Case(
        "shorter log, digest at the old head",
        "full",
        cut_the_tail_and_its_header,
        bad(EVENTS),
        ({"position": EVENTS, "head": HEAD},),
    ),
    # -- lines that are not rows, fields of the wrong type
    Case("a line that is not JSON", "full", lambda ls: ls.insert(4, b"not json"), bad(4)),
    Case(
        "a line not UTF-8", "full", raw(4, lambda t: t.encode().replace(b'"', b'"\xff', 1)), bad(4)
    ),
    Case("a JSON array as a row", "full", lambda ls: ls.__setitem__(4, [4]), bad(4)),
    Case("a row nested 100000 deep", "full", lambda ls: ls.__setitem__(4, b"[" * 100_000), bad(4)),
    Case("position as text", "full", at(3, "position", "3"), bad(3)),
    Case("position as a float", "full", at(3, "position", 3.0), bad(3)),
    Case("position true", "full", at(1, "position", True), bad(1)),
    Case("version as text", "full", at(3, "version", "2"), bad(3)),
    Case("chain as text", "full", at(3, "chain", "2"), bad(3)),
    Case("chain version 3", "full", at(3, "chain", 3), bad(3)),
    Case("data as an object", "full", at(3, "data", {"a": 1}), bad(3)),
    Case("data with a lone surrogate", "full", at(3, "data", "\ud800"), bad(3)),
    Case(
        "hash in capitals",
        "full",
        lambda ls: ls[3].__setitem__("hash", ls[3]["hash"].upper()),
        bad(3),
    ),
    Case("hash missing", "full", without("hash", 3), bad(3)),
    Case("an unknown field in a row", "full", at(3, "note", "trust me"), bad(3)),
    Case("data given twice", "full", raw(3, repeated_data), bad(3)),
    # -- digests: at 0, past the head, before the export, malformed
    Case(
        "digest at 0, wrong head",
        "full",
        None,
        bad(0),
        ({"position": 0, "head": NOT_IT},),
        database=True,
    ),
    Case("digest at 0, zeros", "full", None, OK, ({"position": 0, "head": ZERO},), database=True),
    Case(
        "digest at the head", "full", None, OK, ({"position": EVENTS, "head": HEAD},), database=True
    ),
    Case(
        "digest at the head, in capitals",
        "full",
        None,
        OK,
        ({"position": EVENTS, "head": HEAD_IN_CAPITALS},),
        database=True,
    ),
    Case(
        "digest at 5, wrong head",
        "full",
        None,
        bad(5),
        ({"position": 5, "head": NOT_IT},),
        database=True,
    ),
    Case(
        "digest past the head",
        "full",
        None,
        bad(EVENTS + 1),
        ({"position": EVENTS + 1, "head": NOT_IT},),
        database=True,
    ),
    Case(
        "digest far past the head",
        "full",
        None,
        bad(EVENTS + 1),
        ({"position": 2**70, "head": NOT_IT},),
        database=True,
    ),
    Case(
        "digest at a negative position",
        "full",
        None,
        USAGE,
        ({"position": -1, "head": NOT_IT},),
        database=True,
    ),
    Case(
        "digest at position true",
        "full",
        None,
        USAGE,
        ({"position": True, "head": ZERO},),
        database=True,
    ),
    Case(
        "digest head with spaces",
        "full",
        None,
        USAGE,
        ({"position": 0, "head": "00 " * 21 + "0"},),
        database=True,
    ),
    Case("digest file not JSON", "full", None, USAGE, (b"{position",), database=True),
    Case(
        "digest file not UTF-8",
        "full",
        None,
        USAGE,
        (b'{"position": 0, "\xff": 1}',),
        database=True,
    ),
    Case("digest file nested deep", "full", None, USAGE, (b"[" * 100_000,), database=True),
    Case(
        "two digests disagree at 5",
        "full",
        None,
        (1, None),
        ({"position": 5, "head": NOT_IT}, {"position": 5, "head": ZERO}),
        database=True,
    ),
    Case("tail: digest at 2", "tail", None, bad(2), ({"position": 2, "head": NOT_IT},)),
    Case("tail: digest at 4, its head", "tail", None, OK, ({"position": 4, "head": AT_FOUR},)),
    Case("tail: digest at 4, wrong head", "tail", None, bad(4), ({"position": 4, "head": NOT_IT},)),
]


# -- running the verifiers


@dataclass(frozen=True)
class Verdict:
    code: int
    report: dict[str, Any] | None  # the JSON answer (None on a usage error)
    stderr: str


SAME = (
    "ok",
    "events",
    "head",
    "first_bad_position",
    "kind",
    "stream_id",
    "stream_events",
    "complete_from",
)


def ledger(*args: str) -> Verdict:
    result = runner.invoke(cli, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Verdict(-1, None, f"Traceback: {result.exception!r}")  # what a person would see
    return Verdict(
        result.exit_code, json.loads(result.stdout) if result.stdout else None, result.stderr
    )


def standalone(*files: Path) -> Verdict:
    done = subprocess.run(
        ["/usr/bin/python3", str(STANDALONE), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return Verdict(done.returncode, json.loads(done.stdout) if done.stdout else None, done.stderr)


def problems(case: Case, name: str, verdict: Verdict) -> list[str]:
    """What is wrong with one verifier's verdict on one case (empty: nothing)."""
    found = []
    report = verdict.report or {}
    got = (verdict.code, report.get("first_bad_position"))
    if got != case.verdict:
        found.append(f"{name} gave {got}, not {case.verdict}: {report or verdict.stderr}")
    if "Traceback" in verdict.stderr or len(verdict.stderr.strip().splitlines()) > 1:
        found.append(f"{name} wrote more than one line on stderr: {verdict.stderr}")
    if verdict.code == 2 and not verdict.stderr.strip():
        found.append(f"{name} gave a usage error without saying why")
    if verdict.code == 1 and "\n" in str(report.get("reason") or "\n"):
        found.append(f"{name} failed without a one-line reason: {report}")
    return found


# -- the files


def write_lines(path: Path, lines: list[Line]) -> Path:
    data = b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )
    path.write_bytes(data)
    return path


def write_digests(path: Path, digests: tuple[Any, ...], heads: dict[str, str]) -> Path:
    """One digest per line; a head named in ``heads`` is replaced by the real hash."""

    def text(digest: Any) -> bytes:
        if isinstance(digest, bytes):
            return digest
        return json.dumps(dict(digest, head=heads.get(digest["head"], digest["head"]))).encode()

    path.write_bytes(b"\n".join(text(d) for d in digests) + b"\n")
    return path


@pytest.fixture
def exports(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    build_log(store_url)
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    sources: dict[str, Any] = {}
    for name, args in {
        "full": ("--verifiable",),
        "proof": ("--tenant", "client-alpha", "--proof"),
        "tail": ("--verifiable", "--after", "4"),
    }.items():
        result = runner.invoke(cli, ["export", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        sources[name] = [json.loads(line) for line in result.stdout.splitlines()]
    full = sources["full"]
    heads = {HEAD: full[-1]["hash"], HEAD_IN_CAPITALS: full[-1]["hash"].upper()}
    sources["heads"] = heads | {AT_FOUR: full[4]["hash"]}
    return sources


def test_every_tampering_gets_the_same_verdict_from_both_verifiers(
    exports: dict[str, Any], tmp_path: Path
) -> None:
    found: list[str] = []
    for number, case in enumerate(CASES):
        lines = copy.deepcopy(exports[case.source])
        if case.change is not None:
            case.change(lines)
        export = write_lines(tmp_path / f"{number}.jsonl", lines)
        digest_files = []
        if case.digests:
            digest_files = [
                write_digests(tmp_path / f"{number}.digest", case.digests, exports["heads"])
            ]
        digest_args = [arg for f in digest_files for arg in ("--digest", str(f))]
        cli_verdict = ledger("verify", "--export", str(export), *digest_args)
        alone = standalone(export, *digest_files)
        found += [f"{case.name}: {p}" for p in problems(case, "ledger verify", cli_verdict)]
        found += [f"{case.name}: {p}" for p in problems(case, "verify_export.py", alone)]
        mine, theirs = cli_verdict.report or {}, alone.report or {}
        if [mine.get(k) for k in SAME] != [theirs.get(k) for k in SAME]:
            found.append(f"{case.name}: the verifiers disagree: {mine} vs {theirs}")
        if case.database:
            on_db = ledger("verify", *digest_args)
            found += [
                f"{case.name}: {p}" for p in problems(case, "ledger verify (database)", on_db)
            ]
    assert not found, "\n".join(found)
