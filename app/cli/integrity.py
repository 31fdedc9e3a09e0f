"""`ledger digest`, `ledger verify` and `ledger export`: evidence anyone can check.

They print JSON (digest, verify) or JSON lines (export), on a terminal or piped
alike. Exit codes: 0 ok, 1 a check failed or a tenant was not found, 2 usage.
"""

from __future__ import annotations

import itertools
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli.output import fail, say_error
from app.cli.stores import existing_store
from eventstore.chain import verify_store
from eventstore.digest import (
    DigestConflict,
    DigestError,
    checkpoints,
    make_digest,
    read_digests,
)
from eventstore.events import stream_id_for
from eventstore.export import export_lines, verify_export
from eventstore.store import EventStore


def register(cli: typer.Typer) -> None:
    from app.cli.reads import examples

    epilogs = {
        digest: examples("ledger digest >> digests.jsonl"),
        verify: examples(
            "ledger verify",
            "ledger verify --digest d1.json d2.json",
            "ledger verify --export log.jsonl",
        ),
        export: examples(
            "ledger export --verifiable > log.jsonl",
            "ledger export --tenant KEY --proof > proof.jsonl",
        ),
    }
    for command, epilog in epilogs.items():
        cli.command(epilog=epilog)(command)


def _store() -> EventStore:
    return existing_store()


def _print(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def _usage(message: str) -> typer.Exit:
    say_error(message)
    return typer.Exit(2)


def digest() -> None:
    """Print the log's head as JSON: position, head hash, recorded_at, store.

    Keep it where the database cannot reach it; `ledger verify --digest FILE` later
    proves the log still passes through it.
    """
    with _store() as store:
        sys.stdout.write(json.dumps(make_digest(store)) + "\n")


DigestOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--digest",
        metavar="FILE",
        help="A digest saved by `ledger digest` (one per line); the log must hash to each"
        " head at its position. Repeat it, or list several files after it.",
    ),
]
ExportOption = Annotated[
    Path | None,
    typer.Option(
        "--export",
        metavar="FILE",
        help="Check this `ledger export --verifiable` (or --proof) file instead of the"
        " database; needs no database at all.",
    ),
]


def verify(
    digests: DigestOption = None,
    export_file: ExportOption = None,
    more: Annotated[
        list[Path] | None, typer.Argument(metavar="[FILE…]", help="More digest files.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Accepted for symmetry: the answer is always JSON.")
    ] = False,
) -> None:
    """Recompute the hash chain; name the first position that is missing or does not match.

    Also checks that positions run from 1 without a gap and that the log ends at the
    head the store keeps. Prints JSON; exit 1 if any check fails.
    """
    if more and not digests:
        raise _usage("files given without --digest")
    try:
        points = checkpoints(read_digests([*(digests or []), *(more or [])]))
    except DigestError as error:
        raise _usage(str(error)) from None
    except DigestConflict as error:
        _print({"ok": False, "reason": str(error)})
        raise typer.Exit(1) from None
    if export_file is not None:
        try:
            # Bytes, split at "\n" only: a line that is not UTF-8 is a failed check at its
            # position (as in tools/verify_export.py), not a file that cannot be read.
            with export_file.open("rb") as lines:
                report = verify_export(_non_empty(lines), points)
        except OSError as error:
            raise _usage(f"{export_file}: cannot be read ({error.strerror or error})") from None
        report["export"] = str(export_file)
    else:
        with _store() as store:
            report = asdict(verify_store(store, points))
    if points:
        report["digests"] = sorted({label for label, _ in points.values()})
    _print(report)
    raise typer.Exit(0 if report["ok"] else 1)


def _non_empty(lines: Iterator[bytes]) -> Iterator[bytes]:
    return (line for line in lines if line.strip())


def export(
    after: Annotated[
        int, typer.Option("--after", metavar="POSITION", help="Start after this position.")
    ] = 0,
    verifiable: Annotated[
        bool,
        typer.Option(
            "--verifiable",
            help="Write what the hash chain covers (sealed secrets as ciphertext), with a"
            " header, so `ledger verify --export` can recompute every hash.",
        ),
    ] = False,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", metavar="CLIENT_KEY", help="With --proof: the tenant to prove."),
    ] = None,
    proof: Annotated[
        bool,
        typer.Option(
            "--proof",
            help="A verifiable export of one tenant: its events in full, every other row"
            " only as the two hashes that link the chain.",
        ),
    ] = False,
) -> None:
    """Every event after a position as JSON lines; never a plaintext secret or a data key.

    Plain: the events as the admin API shows them, secrets redacted.
    """
    if proof != (tenant is not None):
        raise _usage("--tenant and --proof go together")
    if after < 0:
        raise _usage("--after is a position, 0 or more")
    out = sys.stdout
    with _store() as store:
        if not (verifiable or proof):
            _plain_export(store, after)
            return
        stream = stream_id_for(tenant) if tenant is not None else None
        if stream is not None and store.stream_version(stream) == 0:
            fail(f"no tenant {tenant!r}")
        lines = export_lines(store, after, stream)
        try:
            header = next(lines)
        except LookupError as error:
            fail(str(error))
        for line in itertools.chain([header], lines):
            out.write(json.dumps(line, separators=(",", ":")) + "\n")


def _plain_export(store: EventStore, after: int) -> None:
    from app.queries.reads import redact_event

    for event in store.read_all(after_position=after, batch_size=5000):
        sys.stdout.write(json.dumps(redact_event(event), separators=(",", ":")) + "\n")
