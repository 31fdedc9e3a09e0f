"""The projection runner: feeds the log to the folds and persists their rows.

Each batch of events is folded in memory, then the changed rows and the new
checkpoints are written in one transaction. A crash loses only the uncommitted
batch, which the next run folds again from the checkpoint: nothing is applied
twice, nothing skipped.

Leadership: exactly one runner works at a time (see ``projections.locks``). Others
wait as hot standbys and try again every second.

The runner thread never dies of an error: whatever goes wrong (the store, an event
this code cannot read during a rolling deploy, a bug in a fold) is logged as one
line, counted, shown in ``/readyz`` and ``/metrics``, and retried after a bounded
exponential backoff, from the last checkpoint, with state reloaded from the tables.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

from eventstore.store import EventLog, RecordedEvent, StoreError, utcnow
from projections.backends import lock_for, storage_for
from projections.base_urls import BaseUrlsProjection, BaseUrlsState
from projections.descriptors import DescriptorsProjection, DescriptorsState
from projections.health import LastError, RunnerHealth, short_message
from projections.installations import InstallationsProjection, LinksProjection, forge_states
from projections.locks import ExclusiveLock
from projections.reimports import ReimportsProjection, ReimportsState
from projections.storage import ProjectionStorage
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
NOTIFY_CHANNEL: Final = "ledger_events"


class EventNotFoldable(Exception):
    """An event this code cannot read or fold, e.g. a type or schema version from a
    newer release. The runner stops before it and retries until new code is deployed."""

    def __init__(self, position: int, event_type: str, schema_version: int, reason: str) -> None:
        super().__init__(
            f"event at position {position} ({event_type}, schema version {schema_version})"
            f" cannot be folded by this code: {reason}"
        )
        self.position = position
        self.event_type = event_type
        self.schema_version = schema_version


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
    """Folds new events into the persisted read models. Not thread-safe: one per process.

    After an exception the in-memory folds may be half-applied: drop the runner and
    make a new one (it resumes from the committed rows)."""

    def __init__(
        self, store: EventLog, storage: ProjectionStorage | None = None, batch_size: int = 2000
    ) -> None:
        self.store = store
        self.storage = storage or storage_for(store)
        self.batch_size = batch_size
        self.storage.ensure()
        self._states: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self._unreadable: Exception | None = None
        self.reload()

    def reload(self) -> None:
        self._positions = self.storage.checkpoints()
        self._states = resume_states(self.storage)

    @property
    def position(self) -> int:
        return min(self._positions.values()) if self._positions else 0

    @property
    def checkpoints(self) -> dict[str, int]:
        return dict(self._positions)

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Fold and persist every event committed so far; the number folded.

        Events up to one this code cannot read are folded and committed first; then
        EventNotFoldable names the unreadable one. ``stopping`` is asked after each
        committed batch, so a stop does not wait for a long backlog."""
        folded = 0
        self._unreadable = None
        events = self._readable(self.store.read_all(self.position, self.batch_size))
        for batch in chunks(events, self.batch_size):
            if not self._fold_and_commit(batch):
                return folded
            folded += len(batch)
            if stopping():
                return folded
        if self._unreadable is not None:
            raise self._not_foldable(self._unreadable) from self._unreadable
        return folded

    def _fold_and_commit(self, batch: list[RecordedEvent]) -> bool:
        for group in GROUPS:
            after = self._positions[group[0]]
            pending = (
                batch if batch[0].position > after else [e for e in batch if e.position > after]
            )
            if pending:
                for name in group:
                    try:
                        self._states[name] = PROJECTIONS[name].apply_many(
                            self._states[name], pending
                        )
                    except Exception as error:
                        raise _fold_failed(name, pending, error) from error
        last = batch[-1].position
        changes = {name: self._states[name].take_changes() for name in SPECS}
        if not self.storage.commit_batch(dict(self._positions), changes, last):
            # A rebuild swapped tables in: our in-memory folds are stale.
            log.info("projection checkpoints moved; reloading", extra={"position": last})
            self.reload()
            return False
        self._positions = dict.fromkeys(self._positions, last)
        return True

    def _readable(self, events: Iterator[RecordedEvent]) -> Iterator[RecordedEvent]:
        """The events up to the first one that cannot be decoded (remembered, not raised:
        the ones before it are still folded)."""
        try:
            yield from events
        except StoreError:
            raise
        except Exception as error:
            self._unreadable = error

    def _not_foldable(self, error: Exception) -> Exception:
        """Name the row after the checkpoint that could not be read, from its raw form."""
        raw = next(iter(self.store.read_raw(self.position, 1)), None)
        if raw is None:
            return error
        reason = f"{type(error).__name__}: {short_message(error)}"
        return EventNotFoldable(raw.position, raw.type, raw.schema_version, reason)


def _fold_failed(name: str, events: list[RecordedEvent], error: Exception) -> EventNotFoldable:
    first, last = events[0], events[-1]
    reason = (
        f"the {name} fold failed in positions {first.position}-{last.position}:"
        f" {type(error).__name__}: {short_message(error)}"
    )
    return EventNotFoldable(first.position, first.type, first.schema_version, reason)


class Leadership:
    """Who may run the projections: acquire() is non-blocking, release() idempotent."""

    def __init__(self, store: EventLog) -> None:
        self._lock: ExclusiveLock = lock_for(store, "runner")

    def acquire(self) -> bool:
        if not self._lock.try_acquire():
            return False
        self._lock.listen(NOTIFY_CHANNEL)
        return True

    def wait_for_events(self, timeout: float) -> None:
        """Sleep until a NOTIFY (PostgreSQL) or the timeout: a hint, never the truth."""
        self._lock.wait_for_notify(timeout)

    def release(self) -> None:
        self._lock.release()


class RunnerThread:
    """The runner in a daemon thread of a service process: leader or hot standby.

    Roles: ``standby`` (another process leads, or this one is backing off after a
    failure), ``leader``, ``stopped`` (the thread has ended)."""

    def __init__(
        self,
        store: EventLog,
        poll_seconds: float = 0.2,
        standby_seconds: float = 1.0,
        gather_seconds: float = 0.0,
        on_state: Callable[[str], None] | None = None,
        health: RunnerHealth | None = None,
    ) -> None:
        self.store = store
        self.poll_seconds = poll_seconds
        self.standby_seconds = standby_seconds
        self.gather_seconds = gather_seconds
        self.on_state = on_state
        self.health = health or RunnerHealth()
        self._reported: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="projection-runner", daemon=True)

    @property
    def role(self) -> str:
        return self.health.role

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        return self.health.snapshot()

    def start(self) -> RunnerThread:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _set_role(self, role: str) -> None:
        if role != self._reported:
            self._reported = role
            self.health.set_role(role)
            if self.on_state:
                self.on_state(role)

    def _run(self) -> None:
        leadership = Leadership(self.store)
        storage = storage_for(self.store)
        runner: ProjectionRunner | None = None
        try:
            while not self._stop.is_set():
                try:
                    if not leadership.acquire():
                        runner = None
                        self._set_role("standby")
                        self.health.observed(self.store.head().position, storage.checkpoints())
                        self.health.succeeded(as_leader=False)
                        self._stop.wait(self.standby_seconds)
                        continue
                    self._set_role("leader")
                    runner = runner or ProjectionRunner(self.store, storage)
                    folded = runner.run_once(self._stop.is_set)
                    self.health.observed(self.store.head().position, runner.checkpoints)
                    self.health.succeeded(as_leader=True)
                    if folded == 0:
                        leadership.wait_for_events(self.poll_seconds)
                    elif self.gather_seconds:
                        # Under load, let appends gather into the next batch: its fixed
                        # costs (a read, a transaction, a statement per table) spread
                        # over more events. The lag grows by at most this much.
                        self._stop.wait(self.gather_seconds)
                except Exception as error:
                    runner = None  # its folds may be half-applied: reload from the tables
                    delay = self._failed(error, storage)
                    leadership.release()  # another runner (maybe newer code) may take over
                    self._set_role("standby")
                    self._stop.wait(delay)
        finally:
            leadership.release()
            self._set_role("stopped")

    def _failed(self, error: Exception, storage: ProjectionStorage) -> float:
        """Log and count a failure; the seconds to back off."""
        position = error.position if isinstance(error, EventNotFoldable) else None
        kind = type(error).__name__
        message = short_message(error)
        delay = self.health.failed(
            LastError(kind, message, utcnow(), position),
            store_failure=isinstance(error, StoreError),
        )
        log.error(
            f"projection runner failed ({kind}: {message});"
            f" retrying in {delay:.1f} s (failure {self.health.failures})",
            extra={"position": position},
        )
        # Best effort: keep the lag current while failing (the store may be the failure).
        with contextlib.suppress(Exception):
            self.health.observed(self.store.head().position, storage.checkpoints())
        return delay


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
