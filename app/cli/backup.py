"""`ledger backup FILE`: a consistent copy of the embedded SQLite store, taken while the
service runs (SPEC §12, "Backup and restore").

SQLite's online backup API copies the database as one read transaction sees it: in WAL
mode the service's writers go on meanwhile, and the copy holds every event committed
before it began, with its projections and keys, never half an append. The copy is
written beside FILE and renamed over it only when complete, so an interrupted backup
never leaves a truncated file under FILE's name (nor replaces a good one, with --force).

PostgreSQL has its own tools for this (pg_dump, or point-in-time recovery from a base
backup and WAL archive); the command says so and exits 2.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer

from app.settings import Settings
from eventstore.chain import GENESIS
from eventstore.sqlite import HEAD_QUERY, sqlite_path
from eventstore.values import Head

POSTGRES_ADVICE = (
    "ledger backup copies the embedded SQLite store; for PostgreSQL use pg_dump"
    " (or point-in-time recovery), then `ledger verify --digest` after a restore"
    " (README: Backup and restore)"
)


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def copy_sqlite(source: Path, target: Path) -> Head:
    """Copy the database at ``source`` into a new file ``target`` (owner-only), in one
    step of the backup API: one read snapshot, so the copy is consistent. Returns the
    copy's head."""
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    # Read-only, and never created: a mistyped path is an error, not a new empty store.
    with (
        closing(sqlite3.connect(f"{source.resolve().as_uri()}?mode=ro", uri=True)) as src,
        closing(sqlite3.connect(target)) as dst,
    ):
        src.backup(dst)  # pages=-1: all pages in one step, under one read transaction
        # A backup is a file to move around: one file, not a database and its WAL.
        dst.execute("PRAGMA journal_mode=DELETE")
        row = dst.execute(HEAD_QUERY).fetchone()
    return Head(row[0], row[1]) if row else Head(0, GENESIS.hex())


def backup(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Where to write the copy.")],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace FILE if it exists (only once the copy is complete)."),
    ] = False,
) -> None:
    """Write a consistent copy of the SQLite store to FILE while the service runs.

    Prints the copy's head (position and hash) as JSON. The master key is not in the
    copy: keep it (var/master.key, or LEDGER_MASTER_KEY) apart from it. On PostgreSQL,
    use pg_dump or point-in-time recovery (exit 2).
    """
    settings = Settings()
    if not settings.uses_sqlite:
        raise _fail(POSTGRES_ADVICE, 2)
    source = Path(sqlite_path(settings.database_url))
    if not source.is_file():
        raise _fail(
            f"no ledger store at {source.resolve()} (LEDGER_DATABASE_URL); nothing to back up", 1
        )
    if file.exists() and not force:
        raise _fail(f"{file} exists; pass --force to replace it", 2)
    if file.exists() and file.resolve() == source.resolve():
        raise _fail(f"{file} is the store itself; back it up to another file", 2)
    if not file.parent.is_dir():
        raise _fail(f"{file.parent} is not a directory", 2)
    partial = file.with_name(f".{file.name}.partial-{os.getpid()}")
    try:
        head = copy_sqlite(source, partial)
        os.replace(partial, file)
    except (OSError, sqlite3.Error) as error:
        raise _fail(f"backup to {file} failed: {error}", 1) from None
    finally:
        partial.unlink(missing_ok=True)
    report = {"backup": str(file), "position": head.position, "head": head.hash,
              "bytes": file.stat().st_size}  # fmt: skip
    sys.stdout.write(json.dumps(report) + "\n")
