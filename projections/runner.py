"""The projection runner: feeds the log to the folds and persists their rows.

Each batch of events is folded in memory, then the changed rows and the new
checkpoints are written in one transaction. A crash loses only the uncommitted
batch, which the next run folds again from the checkpoint: nothing is applied
twice, nothing skipped.

Leadership: exactly one runner works at a time. On PostgreSQL it holds a session
advisory lock on a connection of its own (released by the server if the process
dies); on SQLite an exclusive ``flock`` on a file beside the database. Others wait
as hot standbys and try again every second.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import psycopg

from eventstore.store import EventStore, RecordedEvent, StoreError
from projections.base_urls import BaseUrlsProjection, BaseUrlsState
from projections.descriptors import DescriptorsProjection, DescriptorsState
from projections.installations import InstallationsProjection, LinksProjection, forge_states
from projections.reimports import ReimportsProjection, ReimportsState
from projections.storage import ProjectionStorage, storage_for
from projections.tables import GROUPS, SPECS
from projections.tenants import TenantsProjection, TenantsState

log = logging.getLogger("ledger.projections")

PROJECTIONS: Final[dict[str, Any]] = {
    "tenants": TenantsProjection(),
    "descriptors": DescriptorsProjection(),
    "base_urls": BaseUrlsProjection(),
    "reimports": ReimportsProjection(),
    "installations": InstallationsProjection(),
    "links": LinksProjection(),
}
ADVISORY_LOCK_KEY: Final = 7406000002
NOTIFY_CHANNEL: Final = "ledger_events"


def chunks(events: Iterator[RecordedEvent], size: int) -> Iterator[list[RecordedEvent]]:
    batch: list[RecordedEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def resume_states(storage: ProjectionStorage) -> dict[str, Any]:
    """Every fold's state rebuilt from its persisted rows (at their checkpoint)."""
    tenants = storage.load_rows("tenants")
    base_urls = storage.load_rows("base_urls")
    return {
        "tenants": TenantsState.from_rows(tenants),
        "descriptors": DescriptorsState.from_rows(storage.load_rows("descriptors"), tenants),
        "base_urls": BaseUrlsState.from_rows(base_urls),
        "reimports": ReimportsState.from_rows(base_urls),
        **forge_states(storage.load_rows("installations"), storage.load_rows("links")),
    }


class ProjectionRunner:
    """Folds new events into the persisted read models. Not thread-safe: one per process."""

    def __init__(
        self, store: EventStore, storage: ProjectionStorage | None = None, batch_size: int = 2000
    ) -> None:
        self.store = store
        self.storage = storage or storage_for(store)
        self.batch_size = batch_size
        self.storage.ensure()
        self._states: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self.reload()

    def reload(self) -> None:
        self._positions = self.storage.checkpoints()
        self._states = resume_states(self.storage)

    @property
    def position(self) -> int:
        return min(self._positions.values()) if self._positions else 0

    def run_once(self) -> int:
        """Fold and persist every event committed so far; the number folded."""
        folded = 0
        for batch in chunks(self.store.read_all(self.position, self.batch_size), self.batch_size):
            for group in GROUPS:
                after = self._positions[group[0]]
                pending = (
                    batch if batch[0].position > after else [e for e in batch if e.position > after]
                )
                if pending:
                    for name in group:
                        self._states[name] = PROJECTIONS[name].apply_many(
                            self._states[name], pending
                        )
            last = batch[-1].position
            changes = {name: self._states[name].take_changes() for name in SPECS}
            if not self.storage.commit_batch(dict(self._positions), changes, last):
                # A rebuild swapped tables in: our in-memory folds are stale.
                log.info("projection checkpoints moved; reloading", extra={"position": last})
                self.reload()
                return folded
            self._positions = dict.fromkeys(self._positions, last)
            folded += len(batch)
        return folded


class Leadership:
    """Who may run the projections: acquire() is non-blocking, release() idempotent."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self._conn: psycopg.Connection[Any] | None = None
        self._fd: int | None = None

    @property
    def postgres(self) -> bool:
        return not self.store.url.startswith("sqlite:")

    def acquire(self) -> bool:
        if self.postgres:
            if self._conn is None:
                from eventstore.postgres import _libpq_url

                self._conn = psycopg.connect(_libpq_url(self.store.url), autocommit=True)
            row = self._conn.execute(
                "SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY]
            ).fetchone()
            if row and row[0]:
                self._conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                return True
            return False
        from eventstore.sqlite import sqlite_path

        if self._fd is None:
            self._fd = os.open(
                sqlite_path(self.store.url) + ".runner.lock", os.O_RDWR | os.O_CREAT, 0o600
            )
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def wait_for_events(self, timeout: float) -> None:
        """Sleep until a NOTIFY (PostgreSQL) or the timeout: a hint, never the truth."""
        if self._conn is not None:
            for _ in self._conn.notifies(timeout=timeout, stop_after=1):
                pass
        else:
            time.sleep(timeout)

    def release(self) -> None:
        if self._conn is not None:
            # Unlock explicitly: the server drops a closed session's locks only when
            # its backend exits, a moment after close() returns. An error means the
            # session is gone already, and its locks with it.
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock_all()")
            self._conn.close()
            self._conn = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class RunnerThread:
    """The runner in a daemon thread of a service process: leader or hot standby."""

    def __init__(
        self,
        store: EventStore,
        poll_seconds: float = 0.2,
        standby_seconds: float = 1.0,
        on_state: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.standby_seconds = standby_seconds
        self.on_state = on_state
        self.role = "starting"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="projection-runner", daemon=True)

    def start(self) -> RunnerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _set_role(self, role: str) -> None:
        self.role = role
        if self.on_state:
            self.on_state(role)

    def _run(self) -> None:
        leadership = Leadership(self.store)
        try:
            while not self._stop.is_set():
                try:
                    if not leadership.acquire():
                        self._set_role("standby")
                        self._stop.wait(self.standby_seconds)
                        continue
                    self._set_role("leader")
                    runner = ProjectionRunner(self.store)
                    while not self._stop.is_set():
                        if runner.run_once() == 0:
                            leadership.wait_for_events(self.poll_seconds)
                except (StoreError, psycopg.Error, OSError):
                    log.warning("projection runner failed; retrying", exc_info=True)
                    leadership.release()
                    self._set_role("standby")
                    self._stop.wait(self.standby_seconds)
        finally:
            leadership.release()


def wait_for_position(
    storage: ProjectionStorage, position: int, timeout: float, names: Sequence[str] = tuple(SPECS)
) -> bool:
    """Whether the named projections reach ``position`` within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        checkpoints = storage.checkpoints()
        if all(checkpoints.get(name, 0) >= position for name in names):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
