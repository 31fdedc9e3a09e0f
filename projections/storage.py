"""Where projection rows and checkpoints live: one class per database, one interface.

The checkpoint of a projection is written in the same transaction as its rows, and
every batch first locks the checkpoint rows and checks they are where the writer
left them: a rebuild that swapped tables in meanwhile is noticed, never overwritten.

Error boundary: no driver exception leaves this module. Every statement runs inside
``_errors()``, and each backend's ``_translate`` is the one place that decides what is
retryable (``StoreUnavailable``) and what is not (``StoreError``).
"""

from __future__ import annotations

import abc
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg

from eventstore.store import EventStore, StoreError, format_timestamp
from projections.installations import InstallationRow, LinkRow
from projections.model import Row, TenantRow
from projections.tables import (
    SPECS,
    SQL_TYPES,
    TableSpec,
    create_table_sql,
    group_of,
    upsert_sql,
)

REBUILD_SUFFIX = "__rebuild"
CatchUp = Callable[[], tuple[int, Mapping[str, Sequence[Row]]]]


class ProjectionStorage(abc.ABC):
    sqlite: bool
    # The driver's exception base class, translated by ``_translate``.
    _driver_error: type[Exception]

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The error boundary: driver errors leave as StoreUnavailable or StoreError."""
        try:
            yield
        except StoreError:
            raise
        except self._driver_error as exc:
            raise self._translate(exc) from exc

    @staticmethod
    @abc.abstractmethod
    def _translate(exc: Exception) -> StoreError:
        """The driver error as StoreUnavailable (retryable) or StoreError (not)."""

    def ensure(self) -> None:
        """Create the live tables and the checkpoints that are missing (idempotent)."""
        with self._transaction() as tx:
            self._serialise_schema_changes(tx)
            tx.execute(
                "CREATE TABLE IF NOT EXISTS projection_checkpoints ("
                " name TEXT PRIMARY KEY, position BIGINT NOT NULL)"
            )
            outdated = {
                member
                for spec in SPECS.values()
                if self._table_exists(tx, spec.name)
                and self._column_names(tx, spec.name) != set(spec.column_names)
                for member in group_of(spec.name)
            }
            for spec in SPECS.values():
                if spec.name in outdated:
                    # A read model whose columns changed (a new release) is derived
                    # data: dropped here and folded again from the start of the log.
                    tx.execute(f"DROP TABLE {spec.name}")
                    tx.execute(
                        self._sql("DELETE FROM projection_checkpoints WHERE name = ?"),
                        (spec.name,),
                    )
                if spec.name in outdated or not self._table_exists(tx, spec.name):
                    for statement in create_table_sql(spec, spec.name, self.sqlite):
                        tx.execute(statement)
                tx.execute(
                    self._sql(
                        "INSERT INTO projection_checkpoints VALUES (?, 0) ON CONFLICT DO NOTHING"
                    ),
                    (spec.name,),
                )

    def checkpoints(self) -> dict[str, int]:
        rows = self._query("SELECT name, position FROM projection_checkpoints")
        return {name: int(position) for name, position in rows}

    def load_rows(self, name: str) -> list[Any]:
        spec = SPECS[name]
        rows = self._query(f"SELECT {', '.join(spec.column_names)} FROM {spec.name}")
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def commit_batch(
        self,
        expected: Mapping[str, int],
        changes: Mapping[str, Sequence[Row]],
        position: int,
    ) -> bool:
        """Upsert changed rows and move the checkpoints of ``expected``'s projections to
        ``position``; False (nothing written) when a checkpoint was moved by someone else."""
        written = False
        with self._transaction() as tx:
            current = self._lock_checkpoints(tx)
            if any(current.get(name) != at for name, at in expected.items()):
                tx.rollback()
            else:
                for name, rows in changes.items():
                    if rows:
                        spec = SPECS[name]
                        tx.executemany(
                            upsert_sql(spec, spec.name, self.sqlite),
                            [spec.to_tuple(r, self.sqlite) for r in rows],
                        )
                tx.executemany(
                    self._sql("UPDATE projection_checkpoints SET position = ? WHERE name = ?"),
                    [(position, name) for name in expected],
                )
                written = True
        return written

    # -- rebuild: fresh tables filled in bulk, then swapped in atomically

    def prepare_rebuild(self, names: Iterable[str]) -> None:
        """Start clean: a half-built table from a killed rebuild is dropped here."""
        with self._transaction() as tx:
            for name in names:
                table = name + REBUILD_SUFFIX
                tx.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in create_table_sql(SPECS[name], table, self.sqlite):
                    tx.execute(statement)

    @abc.abstractmethod
    def bulk_load(self, name: str, rows: Iterable[Row]) -> int:
        """Insert rows into the rebuild table of ``name``; the number written."""

    def swap(self, names: Sequence[str], catch_up: CatchUp) -> int:
        """Lock the checkpoints (the runner waits), let ``catch_up`` fold what arrived
        meanwhile, upsert that into the rebuild tables, then replace the live tables."""
        with self._transaction() as tx:
            self._lock_checkpoints(tx)
            position, late = catch_up()
            for name in names:
                spec = SPECS[name]
                rows = late.get(name, ())
                if rows:
                    tx.executemany(
                        upsert_sql(spec, name + REBUILD_SUFFIX, self.sqlite),
                        [spec.to_tuple(r, self.sqlite) for r in rows],
                    )
                tx.execute(f"DROP TABLE IF EXISTS {name}")
                tx.execute(f"ALTER TABLE {name}{REBUILD_SUFFIX} RENAME TO {name}")
                tx.execute(
                    self._sql("UPDATE projection_checkpoints SET position = ? WHERE name = ?"),
                    (position, name),
                )
        return position

    # -- queries for the admin API and the CLI

    def list_tenants(
        self,
        *,
        state: str | None = None,
        after: str | None = None,
        limit: int = 100,
        seen_before: datetime | None = None,
        search: str | None = None,
        not_version: str | None = None,
    ) -> list[TenantRow]:
        """``search``: a case-insensitive substring of the client key or the base URL."""
        spec = SPECS["tenants"]
        clauses: list[str] = []
        params: list[Any] = []
        if search:
            pattern = "%" + _escape_like(search.lower()) + "%"
            clauses.append(
                "(lower(client_key) LIKE ? ESCAPE '\\' OR lower(base_url) LIKE ? ESCAPE '\\')"
            )
            params += [pattern, pattern]
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if after is not None:
            clauses.append("client_key > ?")
            params.append(after)
        if seen_before is not None:
            clauses.append("last_seen_at < ?")
            params.append(format_timestamp(seen_before) if self.sqlite else seen_before)
        if not_version is not None:  # the stragglers of a descriptor version
            clauses.append("(descriptor_version IS NULL OR descriptor_version <> ?)")
            params.append(not_version)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._query(
            f"SELECT {', '.join(spec.column_names)} FROM tenants{where} ORDER BY client_key LIMIT ?",
            (*params, limit),
        )
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def list_installations(
        self,
        *,
        state: str | None = None,
        after: str | None = None,
        limit: int | None = 100,
        client_keys: Sequence[str] | None = None,
        installation_ids: Sequence[str] | None = None,
    ) -> list[InstallationRow]:
        """Installations by installation_id (keyset: ``after`` the last one shown);
        ``client_keys``: only those linked to one of these tenants."""
        return self._select_where(
            "installations",
            _filters(
                {"state": state, "client_key": client_keys, "installation_id": installation_ids},
                ("installation_id", after),
            ),
            "installation_id",
            limit,
        )

    def list_links(
        self,
        *,
        kind: str | None = None,
        client_key: str | None = None,
        installation_id: str | None = None,
        limit: int | None = None,
    ) -> list[LinkRow]:
        """Identity links in the order seen; ``installation_id`` matches either side."""
        clauses, params = _filters({"kind": kind, "client_key": client_key})
        if installation_id is not None:
            clauses.append("(installation_id = ? OR previous_installation_id = ?)")
            params += [installation_id, installation_id]
        return self._select_where("links", (clauses, params), "evidence_position, link_id", limit)

    def tenants_named(
        self, client_keys: Sequence[str] = (), installation_ids: Sequence[str] = ()
    ) -> list[TenantRow]:
        """Tenants with one of these client keys or naming one of these installations."""
        found: dict[str, TenantRow] = {}
        for column, values in (("client_key", client_keys), ("installation_id", installation_ids)):
            rows: list[TenantRow] = self._select_where(
                "tenants", _filters({column: values}), "client_key", None
            )
            found.update((row.client_key, row) for row in rows)
        return [found[key] for key in sorted(found)]

    def _select_where(
        self, name: str, where: tuple[list[str], list[Any]], order: str, limit: int | None
    ) -> list[Any]:
        spec = SPECS[name]
        clauses, params = where
        sql = f"SELECT {', '.join(spec.column_names)} FROM {spec.name}"
        sql += f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql += f" ORDER BY {order}" + (" LIMIT ?" if limit is not None else "")
        rows = self._query(sql, (*params, limit) if limit is not None else tuple(params))
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def count(self, name: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {SPECS[name].name}")[0][0])

    # -- what each database does differently

    @abc.abstractmethod
    def _transaction(self) -> Any:
        """A context manager yielding a transaction handle (execute, executemany, rollback)."""

    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

    @abc.abstractmethod
    def _table_exists(self, tx: Any, name: str) -> bool: ...

    @abc.abstractmethod
    def _lock_checkpoints(self, tx: Any) -> dict[str, int]: ...

    @abc.abstractmethod
    def _column_names(self, tx: Any, name: str) -> set[str]: ...

    @abc.abstractmethod
    def _serialise_schema_changes(self, tx: Any) -> None:
        """Several processes starting at once must not race to create the tables."""

    def _sql(self, sql: str) -> str:
        return sql if self.sqlite else sql.replace("?", "%s")


class _SQLiteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.rolled_back = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def rollback(self) -> None:
        self.conn.execute("ROLLBACK")
        self.rolled_back = True


def translate_sqlite_error(exc: Exception) -> StoreError:
    """The event store's one SQLite rule (eventstore/sqlite.py), for the projection tables."""
    from eventstore.sqlite import translate_error

    return translate_error(exc) or StoreError(f"SQLite client error ({type(exc).__name__})")


class SQLiteProjectionStorage(ProjectionStorage):
    sqlite = True
    _driver_error = sqlite3.Error
    _translate = staticmethod(translate_sqlite_error)

    def __init__(self, store: EventStore) -> None:
        from eventstore.sqlite import SQLiteEventStore

        assert isinstance(store, SQLiteEventStore)
        self._store = store

    @contextmanager
    def _transaction(self) -> Iterator[_SQLiteTx]:
        with self._errors():
            conn = self._store.connection()
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

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._errors():
            return self._store.connection().execute(sql, params).fetchall()

    def _table_exists(self, tx: Any, name: str) -> bool:
        row = tx.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
        return row.fetchone() is not None

    def _serialise_schema_changes(self, tx: Any) -> None:
        pass  # BEGIN IMMEDIATE already holds SQLite's one write lock

    def _column_names(self, tx: Any, name: str) -> set[str]:
        return {row[1] for row in tx.execute(f"PRAGMA table_info({name})").fetchall()}

    def _lock_checkpoints(self, tx: Any) -> dict[str, int]:
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


class _PostgresTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.rolled_back = False

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor() as cur:
            cur.executemany(sql, list(rows))

    def rollback(self) -> None:
        self.rolled_back = True
        raise _Rollback


class _Rollback(Exception):
    pass


def translate_postgres_error(exc: Exception) -> StoreError:
    """The event store's one PostgreSQL rule (eventstore/postgres.py), for the projection
    tables and the locks."""
    from eventstore.postgres import translate_error

    return translate_error(exc) or StoreError(f"PostgreSQL client error ({type(exc).__name__})")


class PostgresProjectionStorage(ProjectionStorage):
    sqlite = False
    _driver_error = psycopg.Error
    _translate = staticmethod(translate_postgres_error)

    def __init__(self, store: EventStore) -> None:
        from eventstore.postgres import PostgresEventStore

        assert isinstance(store, PostgresEventStore)
        self._pool = store.pool

    @contextmanager
    def _transaction(self) -> Iterator[_PostgresTx]:
        with self._errors(), self._pool.connection() as conn:
            try:
                with conn.transaction():
                    yield _PostgresTx(conn)
            except _Rollback:
                pass

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._errors(), self._pool.connection() as conn:
            return conn.execute(self._sql(sql), params).fetchall()  # type: ignore[no-any-return]

    def _table_exists(self, tx: Any, name: str) -> bool:
        row = tx.execute("SELECT to_regclass(%s)", (name,)).fetchone()
        return row is not None and row[0] is not None

    def _serialise_schema_changes(self, tx: Any) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(7406000003)")

    def _column_names(self, tx: Any, name: str) -> set[str]:
        rows = tx.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = %s",
            (name,),
        ).fetchall()
        return {row[0] for row in rows}

    def _lock_checkpoints(self, tx: Any) -> dict[str, int]:
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
            with conn.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[arg-type]
                copy.set_types([_COPY_TYPES[c.kind] for c in spec.columns])
                for row in rows:
                    copy.write_row(spec.to_tuple(row, False))
                    count += 1
            conn.execute(f"ALTER TABLE {table} ADD PRIMARY KEY ({', '.join(spec.key)})")  # type: ignore[arg-type]
            tag = uuid.uuid4().hex[:8]
            for number, index in enumerate(spec.indexes):
                conn.execute(f"CREATE INDEX {name}_ix{number}_{tag} ON {table} ({index})")  # type: ignore[arg-type]
        return count


_COPY_TYPES: dict[str, str] = {
    "text": "text",
    "bool": "bool",
    "int": "int4",
    "bigint": "int8",
    "time": "timestamptz",
}


def _filters(
    equal: Mapping[str, str | Sequence[str] | None],
    after: tuple[str, str | None] | None = None,
) -> tuple[list[str], list[Any]]:
    """WHERE clauses: ``column = ?`` for a value, ``column IN (…)`` for a sequence (an
    empty one matches nothing), ``column > ?`` for ``after``; ``None`` filters nothing."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, value in equal.items():
        if isinstance(value, str):
            clauses.append(f"{column} = ?")
            params.append(value)
        elif value is not None:
            values = list(value)
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})" if values else "1 = 0")
            params += values
    if after is not None and after[1] is not None:
        clauses.append(f"{after[0]} > ?")
        params.append(after[1])
    return clauses, params


def _escape_like(text: str) -> str:
    """``%``, ``_`` and ``\\`` match themselves in a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def storage_for(store: EventStore) -> ProjectionStorage:
    from eventstore.sqlite import SQLiteEventStore

    if isinstance(store, SQLiteEventStore):
        return SQLiteProjectionStorage(store)
    return PostgresProjectionStorage(store)


def spec_of(name: str) -> TableSpec:
    return SPECS[name]
