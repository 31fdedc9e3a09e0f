"""Where projection rows and checkpoints live: the interface and what both databases share.

The checkpoint of a projection is written in the same transaction as its rows, and
every batch first locks the checkpoint rows and checks they are where the writer
left them: a rebuild that swapped tables in meanwhile is noticed, never overwritten.
The backends are ``projections.storage_sqlite`` and ``projections.storage_postgres``;
``projections.backends`` picks one for a store.

Error boundary: no driver exception leaves a storage. Every statement runs inside
``_errors()``, which maps driver errors through the event store's own rule (the
store's ``database.translate``): retryable (``StoreUnavailable``) or not (``StoreError``).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, Protocol

import msgspec

from eventstore.clock import format_timestamp
from eventstore.database import Translate
from eventstore.errors import StoreError
from projections.installations import InstallationRow, LinkRow
from projections.model import ReimportRow, Row, TenantRow
from projections.storage.tables import SPECS, create_table_sql, group_of, upsert_sql

REBUILD_SUFFIX = "__rebuild"
CatchUp = Callable[[], tuple[int, Mapping[str, Sequence[Row]]]]


class Cursor(Protocol):
    """What a statement's result offers (sqlite3's and psycopg's cursors both do)."""

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Transaction(Protocol):
    """What a backend's transaction handle offers the shared code."""

    def execute(self, sql: str, params: Sequence[object] = ()) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> None: ...

    def rollback(self) -> None: ...


class ProjectionStorage(abc.ABC):
    sqlite: bool  # how the table specs (projections.tables) encode values for this database
    mark: str  # the driver's placeholder
    # The driver's exception base class and its name, for errors the store's rule leaves.
    _driver_error: type[Exception]
    _driver_name: str
    _translate: Translate

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """The error boundary: driver errors leave as StoreUnavailable or StoreError."""
        try:
            yield
        except StoreError:
            raise
        except self._driver_error as exc:
            mapped = self._translate(exc)
            if mapped is None:
                mapped = StoreError(f"{self._driver_name} client error ({type(exc).__name__})")
            raise mapped from exc

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
                        f"DELETE FROM projection_checkpoints WHERE name = {self.mark}", (spec.name,)
                    )
                if spec.name in outdated or not self._table_exists(tx, spec.name):
                    for statement in create_table_sql(spec, spec.name, self.sqlite):
                        tx.execute(statement)
                tx.execute(
                    f"INSERT INTO projection_checkpoints VALUES ({self.mark}, 0)"
                    " ON CONFLICT DO NOTHING",
                    (spec.name,),
                )

    def ready(self) -> bool:
        """Whether every live table and its checkpoint are there as this code writes
        them: then ``ensure`` has nothing to do (reads only; a role without DDL runs it)."""
        with self._transaction() as tx:
            if not self._table_exists(tx, "projection_checkpoints"):
                return False
            rows = tx.execute("SELECT name FROM projection_checkpoints").fetchall()
            names = {row[0] for row in rows}
            return all(
                spec.name in names
                and self._table_exists(tx, spec.name)
                and self._column_names(tx, spec.name) == set(spec.column_names)
                for spec in SPECS.values()
            )

    def ensure_ready(self) -> None:
        """``ensure``, only when something is missing or outdated (it takes DDL rights)."""
        if not self.ready():
            self.ensure()

    def checkpoints(self) -> dict[str, int]:
        rows = self._query("SELECT name, position FROM projection_checkpoints")
        return {name: int(position) for name, position in rows}

    def _move_checkpoints(self, tx: Transaction, position: int, names: Sequence[str]) -> None:
        if not names:
            return
        marks = ", ".join([self.mark] * len(names))
        tx.execute(
            f"UPDATE projection_checkpoints SET position = {self.mark} WHERE name IN ({marks})",
            (position, *names),
        )

    def _upsert(self, tx: Transaction, name: str, table: str, rows: Sequence[Row]) -> None:
        """Insert or replace ``rows`` of projection ``name`` in ``table``, one statement
        per row (PostgreSQL overrides this with one statement for all of them)."""
        spec = SPECS[name]
        tx.executemany(
            upsert_sql(spec, table, self.sqlite), [spec.to_tuple(r, self.sqlite) for r in rows]
        )

    def load_rows(self, name: str) -> list[Any]:
        spec = SPECS[name]
        rows = self._query(f"SELECT {', '.join(spec.column_names)} FROM {spec.name}")
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def commit_batch(
        self,
        expected: Mapping[str, int],
        changes: Mapping[str, Sequence[Row]],
        moved: Mapping[str, int],
    ) -> bool:
        """Upsert changed rows and move each checkpoint of ``moved`` to its position (a
        stalled projection's stays behind); False (nothing written) when a checkpoint
        of ``expected`` was moved by someone else."""
        written = False
        with self._transaction() as tx:
            current = self._lock_checkpoints(tx)
            if any(current.get(name) != at for name, at in expected.items()):
                tx.rollback()
            else:
                for name, rows in changes.items():
                    if rows:
                        self._upsert(tx, name, name, rows)
                by_position: dict[int, list[str]] = {}
                for name, position in moved.items():
                    if position != current.get(name):
                        by_position.setdefault(position, []).append(name)
                for position, names in by_position.items():
                    self._move_checkpoints(tx, position, names)
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

    def bulk_load_all(self, tables: Mapping[str, Iterable[Row]]) -> dict[str, int]:
        """``bulk_load`` each table (one after the other here); the numbers written."""
        return {name: self.bulk_load(name, rows) for name, rows in tables.items()}

    def swap(self, names: Sequence[str], catch_up: CatchUp) -> int:
        """Lock the checkpoints (the runner waits), let ``catch_up`` fold what arrived
        meanwhile, upsert that into the rebuild tables, then replace the live tables."""
        with self._transaction() as tx:
            self._lock_checkpoints(tx)
            position, late = catch_up()
            for name in names:
                rows = late.get(name, ())
                if rows:
                    self._upsert(tx, name, name + REBUILD_SUFFIX, rows)
                tx.execute(f"DROP TABLE IF EXISTS {name}")
                tx.execute(f"ALTER TABLE {name}{REBUILD_SUFFIX} RENAME TO {name}")
            self._move_checkpoints(tx, position, list(names))
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
        refused: bool = False,
        left_before: datetime | None = None,
    ) -> list[TenantRow]:
        """``search``: a case-insensitive substring of the client key or the base URL;
        ``refused``: only those whose site refuses the license check; ``left_before``:
        only those gone (``left_at``) before this time and not forgotten."""
        spec = SPECS["tenants"]
        where, params = self._tenant_where(
            state=state, after=after, seen_before=seen_before, search=search,
            not_version=not_version, refused=refused, left_before=left_before,
        )
        rows = self._query(
            f"SELECT {', '.join(spec.column_names)} FROM tenants{where}"
            f" ORDER BY client_key LIMIT {self.mark}",
            (*params, limit),
        )
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def count_tenants(
        self,
        *,
        state: str | None = None,
        seen_before: datetime | None = None,
        search: str | None = None,
        refused: bool = False,
    ) -> int:
        """How many tenants ``list_tenants`` would list with these filters, unpaged."""
        where, params = self._tenant_where(
            state=state, seen_before=seen_before, search=search, refused=refused
        )
        return int(self._query(f"SELECT count(*) FROM tenants{where}", params)[0][0])

    def _tenant_where(
        self,
        *,
        state: str | None = None,
        after: str | None = None,
        seen_before: datetime | None = None,
        search: str | None = None,
        not_version: str | None = None,
        refused: bool = False,
        left_before: datetime | None = None,
    ) -> tuple[str, list[object]]:
        """The WHERE clause (with its parameters) that ``list_tenants``' filters make."""
        m = self.mark
        clauses: list[str] = []
        params: list[object] = []
        if search:
            clauses.append(self._search_clause())
            params += _search_params(search)
        for clause, value in (
            (f"state = {m}", state),
            (f"client_key > {m}", after),
            (f"last_seen_at < {m}", None if seen_before is None else self._time(seen_before)),
            # the stragglers of a descriptor version
            (f"(descriptor_version IS NULL OR descriptor_version <> {m})", not_version),
            (
                f"left_at < {m} AND forgotten_at IS NULL",
                None if left_before is None else self._time(left_before),
            ),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        if refused:
            clauses.append("site_refused_at IS NOT NULL")
        return (f" WHERE {' AND '.join(clauses)}" if clauses else ""), params

    def _time(self, value: datetime) -> object:
        """A time as the tables hold it: SQLite as its one text form."""
        return format_timestamp(value) if self.sqlite else value

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
        ``client_keys``: only those linked to one of these tenants (any of a row's
        ``client_keys``, a JSON list: one installation can span several tenants)."""
        clauses, params = _filters(
            self.mark,
            {"state": state, "installation_id": installation_ids},
            ("installation_id", after),
        )
        if client_keys is not None:
            keys = list(client_keys)
            linked = [f"client_keys LIKE {self.mark} ESCAPE '\\'" for _ in keys]
            clauses.append(f"({' OR '.join(linked)})" if keys else "1 = 0")
            # Each key as the column spells it (projections.tables writes msgspec's JSON).
            params += ["%" + _escape_like(msgspec.json.encode(key).decode()) + "%" for key in keys]
        return self._select_where("installations", (clauses, params), "installation_id", limit)

    def list_links(
        self,
        *,
        kind: str | None = None,
        client_key: str | None = None,
        installation_id: str | None = None,
        limit: int | None = None,
    ) -> list[LinkRow]:
        """Identity links in the order seen; ``installation_id`` matches either side."""
        m = self.mark
        clauses, params = _filters(m, {"kind": kind, "client_key": client_key})
        if installation_id is not None:
            clauses.append(f"(installation_id = {m} OR previous_installation_id = {m})")
            params += [installation_id, installation_id]
        return self._select_where("links", (clauses, params), "evidence_position, link_id", limit)

    def reimports_of(self, client_keys: Sequence[str]) -> list[ReimportRow]:
        """The reimport links naming these client keys as the new tenant (one each at most)."""
        return self._select_where(
            "reimports", _filters(self.mark, {"client_key": client_keys}), "client_key", None
        )

    def links_seen_between(self, after: int, through: int) -> list[LinkRow]:
        """The links whose evidence is an event after position ``after``, up to ``through``."""
        m = self.mark
        params: list[object] = [after, through]
        clauses = [f"evidence_position > {m}", f"evidence_position <= {m}"]
        return self._select_where("links", (clauses, params), "evidence_position, link_id", None)

    def tenants_named(
        self, client_keys: Sequence[str] = (), installation_ids: Sequence[str] = ()
    ) -> list[TenantRow]:
        """Tenants with one of these client keys or naming one of these installations."""
        found: dict[str, TenantRow] = {}
        for column, values in (("client_key", client_keys), ("installation_id", installation_ids)):
            rows: list[TenantRow] = self._select_where(
                "tenants", _filters(self.mark, {column: values}), "client_key", None
            )
            found.update((row.client_key, row) for row in rows)
        return [found[key] for key in sorted(found)]

    def _select_where(
        self, name: str, where: tuple[list[str], list[object]], order: str, limit: int | None
    ) -> list[Any]:
        spec = SPECS[name]
        clauses, params = where
        sql = f"SELECT {', '.join(spec.column_names)} FROM {spec.name}"
        sql += f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql += f" ORDER BY {order}" + (f" LIMIT {self.mark}" if limit is not None else "")
        rows = self._query(sql, (*params, limit) if limit is not None else tuple(params))
        return [spec.from_tuple(tuple(r), self.sqlite) for r in rows]

    def _search_clause(self) -> str:
        m = self.mark
        return f"(lower(client_key) LIKE {m} ESCAPE '\\' OR lower(base_url) LIKE {m} ESCAPE '\\')"

    def tenant_totals(self, search: str | None = None) -> dict[str, int]:
        """How many tenants (matching ``search`` as ``list_tenants`` does) in all, per
        state, enabled, and forgotten: one grouped count, for the console's totals."""
        where = f" WHERE {self._search_clause()}" if search else ""
        rows = self._query(
            "SELECT state, enabled, CASE WHEN forgotten_at IS NULL THEN 0 ELSE 1 END, count(*)"
            f" FROM tenants{where} GROUP BY 1, 2, 3",
            _search_params(search) if search else (),
        )
        totals = {"all": 0, "installed": 0, "uninstalled": 0, "enabled": 0, "forgotten": 0}
        for state, enabled, forgotten, count in rows:
            n = int(count)
            totals["all"] += n
            totals[str(state)] = totals.get(str(state), 0) + n
            totals["enabled"] += n if enabled else 0
            totals["forgotten"] += n if forgotten else 0
        return totals

    def count(self, name: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {SPECS[name].name}")[0][0])

    # -- what each database does differently

    @abc.abstractmethod
    def _transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction: committed when the block ends, unless rolled back."""

    @abc.abstractmethod
    def _query(self, sql: str, params: Sequence[object] = ()) -> list[Any]: ...

    @abc.abstractmethod
    def _table_exists(self, tx: Transaction, name: str) -> bool: ...

    @abc.abstractmethod
    def _lock_checkpoints(self, tx: Transaction) -> dict[str, int]: ...

    @abc.abstractmethod
    def _column_names(self, tx: Transaction, name: str) -> set[str]: ...

    @abc.abstractmethod
    def _serialise_schema_changes(self, tx: Transaction) -> None:
        """Several processes starting at once must not race to create the tables."""


def _filters(
    mark: str,
    equal: Mapping[str, str | Sequence[str] | None],
    after: tuple[str, str | None] | None = None,
) -> tuple[list[str], list[object]]:
    """WHERE clauses with the backend's placeholder ``mark``: ``column = ?`` for a value,
    ``column IN (…)`` for a sequence (an empty one matches nothing), ``column > ?`` for
    ``after``; ``None`` filters nothing."""
    clauses: list[str] = []
    params: list[object] = []
    for column, value in equal.items():
        if isinstance(value, str):
            clauses.append(f"{column} = {mark}")
            params.append(value)
        elif value is not None:
            values = list(value)
            marks = ", ".join([mark] * len(values))
            clauses.append(f"{column} IN ({marks})" if values else "1 = 0")
            params += values
    if after is not None and after[1] is not None:
        clauses.append(f"{after[0]} > {mark}")
        params.append(after[1])
    return clauses, params


def _search_params(search: str) -> list[object]:
    pattern = "%" + _escape_like(search.lower()) + "%"
    return [pattern, pattern]


def _escape_like(text: str) -> str:
    """``%``, ``_`` and ``\\`` match themselves in a LIKE pattern."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
