"""Projection tables in the PostgreSQL store's database, on the store's own pool."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg

from eventstore.database import PostgresDatabase
from eventstore.postgres.arrays import BoolArray, Int4Array, Int8Array, TextArray, TimestamptzArray
from projections.model import Row
from projections.storage.base import REBUILD_SUFFIX, ProjectionStorage, Transaction
from projections.storage.tables import SPECS, SQL_TYPES


class _PostgresTx:
    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.rolled_back = False

    def execute(self, sql: str, params: Sequence[object] = ()) -> psycopg.Cursor[Any]:
        return self.conn.execute(sql.encode(), params)

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql.encode(), list(rows))

    def rollback(self) -> None:
        self.rolled_back = True
        raise _Rollback


class _Rollback(Exception):
    pass


class PostgresProjectionStorage(ProjectionStorage):
    sqlite = False
    mark = "%s"
    _driver_error = psycopg.Error
    _driver_name = "PostgreSQL"

    def __init__(self, database: PostgresDatabase) -> None:
        self._pool = database.pool  # the store's own pool
        self._translate = database.translate

    @contextmanager
    def _transaction(self) -> Iterator[_PostgresTx]:
        with self._errors(), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield _PostgresTx(conn)
            except _Rollback:
                pass

    def _upsert(self, tx: Transaction, name: str, table: str, rows: Sequence[Row]) -> None:
        """All rows in one statement: one array per column, unnested server-side (a
        statement per row cost the runner more CPU than its folds under load)."""
        spec = SPECS[name]
        at = [spec.column_names.index(column) for column in spec.key]
        # One row per key (the last): a statement may not update a row twice.
        latest = {}
        for row in rows:
            values = spec.to_tuple(row, False)
            latest[tuple(values[i] for i in at)] = values
        columns = zip(*latest.values(), strict=True)
        arrays = [_ARRAYS[c.kind](column) for c, column in zip(spec.columns, columns, strict=True)]
        tx.execute(_unnest_upsert_sql(name, table), arrays)

    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._errors(), self._pool.connection() as conn:
            return conn.execute(sql.encode(), params).fetchall()

    def _table_exists(self, tx: Transaction, name: str) -> bool:
        row = tx.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def _serialise_schema_changes(self, tx: Transaction) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(7406000003)")

    def _column_names(self, tx: Transaction, name: str) -> set[str]:
        rows = tx.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (name,),
        ).fetchall()
        return {row[0] for row in rows}

    def _lock_checkpoints(self, tx: Transaction) -> dict[str, int]:
        rows = tx.execute(
            "SELECT name, position FROM projection_checkpoints ORDER BY name FOR UPDATE"
        ).fetchall()
        return {name: int(position) for name, position in rows}

    def prepare_rebuild(self, names: Iterable[str]) -> None:
        """Bare tables: the key and indexes are built once the rows are in (faster
        than maintaining them row by row during COPY)."""
        with self._transaction() as tx:
            for name in names:
                table = name + REBUILD_SUFFIX
                tx.execute(f"DROP TABLE IF EXISTS {table}")
                columns = ", ".join(f"{c.name} {SQL_TYPES[c.kind][0]}" for c in SPECS[name].columns)
                tx.execute(f"CREATE TABLE {table} ({columns})")

    def bulk_load(self, name: str, rows: Iterable[Row]) -> int:
        spec = SPECS[name]
        table = name + REBUILD_SUFFIX
        count = 0
        statement = f"COPY {table} ({', '.join(spec.column_names)}) FROM STDIN (FORMAT BINARY)"
        with self._errors(), self._pool.connection() as conn, conn.transaction():
            # The COPY lasts as long as the fold that streams into it: no statement timeout.
            conn.execute("SET LOCAL statement_timeout = 0")
            with conn.cursor() as cur, cur.copy(statement.encode()) as copy:
                copy.set_types([_COPY_TYPES[c.kind] for c in spec.columns])
                for row in rows:
                    copy.write_row(spec.to_tuple(row, False))
                    count += 1
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(spec.key)})".encode())
            tag = uuid.uuid4().hex[:8]
            for number, index in enumerate(spec.indexes):
                conn.execute(f"CREATE INDEX {name}_ix{number}_{tag} ON {table} ({index})".encode())
        return count

    def bulk_load_all(self, tables: Mapping[str, Iterable[Row]]) -> dict[str, int]:
        """The tables at once, each on its own connection: while the server builds one
        table's key and indexes (most of a rebuild's COPY phase, this process waiting),
        this process COPYs the next one's rows."""
        # No more at once than the pool holds (the rebuild's reads are done by now): a
        # load waiting for a connection could time out behind another's long COPY.
        workers = max(1, min(3, self._pool.max_size))
        with ThreadPoolExecutor(workers, thread_name_prefix="ledger-bulk-load") as pool:
            loads = {name: pool.submit(self.bulk_load, name, rows) for name, rows in tables.items()}
            return {name: load.result() for name, load in loads.items()}


@functools.cache
def _unnest_upsert_sql(name: str, table: str) -> str:
    spec = SPECS[name]
    arrays = ", ".join(f"%b::{SQL_TYPES[c.kind][0]}[]" for c in spec.columns)
    updates = ", ".join(f"{c} = excluded.{c}" for c in spec.column_names if c not in spec.key)
    return (
        f"INSERT INTO {table} ({', '.join(spec.column_names)}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET {updates}"
    )


# Each column kind's array, dumped in binary in one pass (eventstore.pg_arrays).
_ARRAYS: dict[str, type[list[Any]]] = {
    "text": TextArray,
    "bool": BoolArray,
    "int": Int4Array,
    "bigint": Int8Array,
    "time": TimestamptzArray,
}

_COPY_TYPES: dict[str, str] = {
    "text": "text",
    "bool": "bool",
    "int": "int4",
    "bigint": "int8",
    "time": "timestamptz",
}
