"""Projection tables in the SQLite store's file, on the calling thread's connection."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from eventstore.database import SQLiteDatabase
from projections.model import Row
from projections.storage.base import REBUILD_SUFFIX, ProjectionStorage, Transaction
from projections.storage.tables import SPECS


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rolled_back = False

    def execute(self, sql: str, params: Sequence[object] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        self.conn.executemany(sql, rows)

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.rolled_back = True


class SQLiteProjectionStorage(ProjectionStorage):
    sqlite = True
    mark = "?"
    _driver_error = sqlite3.Error
    _driver_name = "SQLite"

    def __init__(self, database: SQLiteDatabase) -> None:
        self._connection = database.connection  # the calling thread's own connection
        self._translate = database.translate

    @contextmanager
    def _transaction(self) -> Iterator[_SQLiteTx]:
        with self._errors():
            conn = self._connection()
            # IMMEDIATE takes the write lock first: the checkpoint check and the writes
            # that follow cannot interleave with another writer's.
            conn.execute("BEGIN IMMEDIATE")
            tx = _SQLiteTx(conn)
            try:
                yield tx
            except BaseException:
                if not tx.rolled_back and conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if not tx.rolled_back:
                conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._errors():
            return self._connection().execute(sql, params).fetchall()

    def _table_exists(self, tx: Transaction, name: str) -> bool:
        row = tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone() is not None

    def _serialise_schema_changes(self, tx: Transaction) -> None:
        pass  # BEGIN IMMEDIATE already holds SQLite's one write lock

    def _column_names(self, tx: Transaction, name: str) -> set[str]:
        return {row[1] for row in tx.execute(f"PRAGMA table_info({name})").fetchall()}

    def _lock_checkpoints(self, tx: Transaction) -> dict[str, int]:
        rows = tx.execute("SELECT name, position FROM projection_checkpoints").fetchall()
        return {name: int(position) for name, position in rows}

    def bulk_load(self, name: str, rows: Iterable[Row]) -> int:
        spec = SPECS[name]
        marks = ", ".join("?" * len(spec.columns))
        count = 0

        def tuples() -> Iterator[tuple[Any, ...]]:
            nonlocal count
            for row in rows:
                count += 1
                yield spec.to_tuple(row, True)

        with self._transaction() as tx:
            tx.executemany(
                f"INSERT INTO {name}{REBUILD_SUFFIX} ({', '.join(spec.column_names)}) VALUES ({marks})",
                tuples(),
            )
        return count
