"""What a store hands out about its database, for code that keeps its own tables there.

The projections keep their read models and locks in the store's database. Each
backend describes itself with one of these values (``EventLog.database``); the
projections' one factory (``projections.backends``) is keyed by its ``kind``, so no
caller inspects a store's class or its URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from eventstore.errors import StoreError

if TYPE_CHECKING:
    import sqlite3

    from psycopg_pool import ConnectionPool

# A backend's one mapping of its driver's errors to store errors (None: not a driver error).
Translate = Callable[[Exception], StoreError | None]


@dataclass(frozen=True, slots=True)
class SQLiteDatabase:
    path: str
    connection: Callable[[], sqlite3.Connection]  # the calling thread's own connection
    translate: Translate
    kind: Literal["sqlite"] = "sqlite"

    def identity(self) -> dict[str, str]:
        """The store's kind and database file (for digests)."""
        return {"kind": self.kind, "database": str(Path(self.path).resolve())}


@dataclass(frozen=True, slots=True)
class PostgresDatabase:
    url: str
    pool: ConnectionPool
    translate: Translate
    kind: Literal["postgresql"] = "postgresql"

    @property
    def conninfo(self) -> str:
        """What the store's own connections use (for a dedicated lock connection)."""
        return str(self.pool.conninfo)

    def identity(self) -> dict[str, str]:
        """The store's kind and database, never a user name or a password."""
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
        return {"kind": self.kind, "database": f"{host}:{port}{parts.path or '/'}"}


Database = SQLiteDatabase | PostgresDatabase
