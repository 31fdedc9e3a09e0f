"""Each webhook URL's delivery checkpoint, in the store's database (table
``webhook_deliveries``, migration 6 of both stores).

Why there and not beside the projection checkpoints: a delivery checkpoint is a fact
about the outside world (what a receiver has acknowledged), not a read model. ``ledger
rebuild`` replaces the projections' tables and checkpoints; it must never make every
receiver get the whole log again. The store's own migrations keep the table.

Writes are guarded so that two runners (a leader that just lost its lock and the new
one) can only move a checkpoint forward, and so that a replay (``generation`` bumped)
wins over a delivery that was under way when it was asked for.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from eventstore.clock import format_timestamp
from eventstore.database import Database
from eventstore.errors import StoreError
from projections.health import short_message

_COLUMNS = "url_id, label, position, generation, failures, attempted_at, delivered_at, last_error"


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    url_id: str
    label: str
    position: int  # the last position delivered, every message of it
    generation: int  # bumped by each replay
    failures: int  # attempts failed in a row (0 after a delivery)
    attempted_at: str | None
    delivered_at: str | None
    last_error: str | None


class DeliveryCheckpoints:
    """The ``webhook_deliveries`` table on the store's database (either kind)."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._mark = "?" if database.kind == "sqlite" else "%s"

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        database = self._database
        try:
            if database.kind == "sqlite":
                yield database.connection()  # autocommit: each statement is its own
            else:
                with database.pool.connection() as conn:
                    yield conn
        except (sqlite3.Error, psycopg.Error) as error:
            mapped = database.translate(error)
            raise (mapped or StoreError(short_message(error))) from error

    def _run(self, sql: str, params: Sequence[object] = ()) -> tuple[list[Any], int]:
        sql = sql.replace("?", self._mark)
        with self._cursor() as conn:
            cursor = conn.execute(sql, tuple(params))
            rows = cursor.fetchall() if cursor.description else []
            return rows, cursor.rowcount

    def rows(self) -> list[DeliveryRow]:
        found, _ = self._run(f"SELECT {_COLUMNS} FROM webhook_deliveries ORDER BY label, url_id")
        return [DeliveryRow(*row) for row in found]

    def load(self, url_id: str, label: str) -> DeliveryRow:
        """The URL's row, created at position 0 (the whole log to deliver) when new."""
        select = f"SELECT {_COLUMNS} FROM webhook_deliveries WHERE url_id = ?"
        found, _ = self._run(select, (url_id,))
        if not found:  # a read first: the insert would take SQLite's write lock each time
            self._run(
                "INSERT INTO webhook_deliveries (url_id, label, position) VALUES (?, ?, 0)"
                " ON CONFLICT (url_id) DO NOTHING",
                (url_id, label),
            )
            found, _ = self._run(select, (url_id,))
        return DeliveryRow(*found[0])

    def delivered(self, url_id: str, generation: int, position: int, at: datetime) -> bool:
        """Move the checkpoint forward to ``position``; False when a replay came first."""
        stamp = format_timestamp(at)
        _, count = self._run(
            "UPDATE webhook_deliveries SET position = ?, failures = 0, last_error = NULL,"
            " delivered_at = ?, attempted_at = ?"
            " WHERE url_id = ? AND generation = ? AND position < ?",
            (position, stamp, stamp, url_id, generation, position),
        )
        return count > 0

    def failed(
        self, url_id: str, generation: int, failures: int, error: str, at: datetime
    ) -> None:
        self._run(
            "UPDATE webhook_deliveries SET failures = ?, last_error = ?, attempted_at = ?"
            " WHERE url_id = ? AND generation = ?",
            (failures, error, format_timestamp(at), url_id, generation),
        )

    def replay(self, url_id: str, label: str, from_position: int) -> None:
        """Deliver again from ``from_position`` (included): the checkpoint goes back to
        just before it, and the running deliverer notices the new generation."""
        position = max(0, from_position - 1)
        self.load(url_id, label)
        self._run(
            "UPDATE webhook_deliveries SET position = ?, generation = generation + 1,"
            " failures = 0, last_error = NULL WHERE url_id = ?",
            (position, url_id),
        )
