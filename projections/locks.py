"""Exclusive locks between processes: who runs the projections, who rebuilds them.

PostgreSQL: a session advisory lock on a dedicated connection (the server drops it
when the process dies). SQLite: an exclusive ``flock`` on a file beside the database
(the kernel drops it when the process dies). ``projections.backends`` is the one place
that chooses the backend.

The dedicated PostgreSQL connection must never hang its caller: it connects with a
timeout, its statements have a timeout, and TCP keepalives plus a TCP user timeout
bound how long a black-holed server can keep a call waiting.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import os
import time
from collections.abc import Callable
from typing import Any, Final

import psycopg

from eventstore.database import Translate
from eventstore.errors import StoreError

# One key per purpose (7406000001 and …03 are the store's and the tables' schema locks).
ADVISORY_KEYS: Final[dict[str, int]] = {"runner": 7406000002, "rebuild": 7406000006}
CONNECT_TIMEOUT_SECONDS: Final = 5
STATEMENT_TIMEOUT_MS: Final = 5_000
# Connection options of the lock connection: a dead peer is noticed within about
# 20 s whether the connection is idle (keepalives) or waiting for an answer (user timeout).
CONNECTION_OPTIONS: Final[dict[str, Any]] = {
    "autocommit": True,
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
    "tcp_user_timeout": 20_000,
}


class ExclusiveLock(abc.ABC):
    """Non-blocking acquire (idempotent while held); release is idempotent too."""

    @abc.abstractmethod
    def try_acquire(self) -> bool: ...

    @abc.abstractmethod
    def release(self) -> None: ...

    @abc.abstractmethod
    def listen(self, channel: str) -> None:
        """Subscribe to NOTIFY on ``channel`` where the backend has it."""

    def wait_for_notify(self, timeout: float) -> None:
        """Sleep until a NOTIFY on a listened channel or the timeout: a hint only."""
        time.sleep(timeout)

    def acquire(self, on_wait: Callable[[], None] | None = None, poll: float = 0.5) -> None:
        """Block until held; ``on_wait`` is called once if someone else holds it."""
        if self.try_acquire():
            return
        if on_wait is not None:
            on_wait()
        while not self.try_acquire():
            time.sleep(poll)


class FileLock(ExclusiveLock):
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._held = False

    def try_acquire(self) -> bool:
        if self._held:
            return True
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise StoreError(f"cannot lock {os.path.basename(self.path)}: {exc.strerror}") from exc
        self._held = True
        return True

    def listen(self, channel: str) -> None:
        pass  # no NOTIFY on SQLite: wait_for_notify sleeps

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
        self._held = False


class AdvisoryLock(ExclusiveLock):
    def __init__(self, conninfo: str, key: int, translate: Translate) -> None:
        self.conninfo = conninfo
        self.key = key
        self._translate = translate  # the store's rule for PostgreSQL errors
        self._conn: psycopg.Connection[Any] | None = None
        self._held = False
        self._channels: set[str] = set()

    def try_acquire(self) -> bool:
        if self._held:
            return True
        row = self._execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
        self._held = bool(row and row[0])
        return self._held

    def listen(self, channel: str) -> None:
        if channel not in self._channels:
            self._execute(f"LISTEN {channel}")
            self._channels.add(channel)

    def wait_for_notify(self, timeout: float) -> None:
        if self._conn is None:
            time.sleep(timeout)
            return
        try:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
        except psycopg.Error as exc:
            raise self._store_error(exc) from exc

    def release(self) -> None:
        if self._conn is not None:
            # Unlock explicitly: the server drops a closed session's locks only when
            # its backend exits, a moment after close() returns. An error means the
            # session is gone already, and its locks with it.
            with contextlib.suppress(psycopg.Error):
                if self._held and not self._conn.closed:
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        self._held = False
        self._channels.clear()

    def _store_error(self, exc: psycopg.Error) -> StoreError:
        mapped = self._translate(exc)
        return mapped or StoreError(f"PostgreSQL client error ({type(exc).__name__})")

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        """One statement on the lock's own connection (opened on first use): its first row."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.conninfo, **CONNECTION_OPTIONS)
                self._conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            cursor = self._conn.execute(sql.encode(), params)
            return cursor.fetchone() if cursor.description else None
        except psycopg.Error as exc:
            self.release()  # a broken session is never reused
            raise self._store_error(exc) from exc
