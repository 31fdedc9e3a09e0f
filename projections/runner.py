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
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from eventstore.clock import format_timestamp, utcnow
from eventstore.errors import StoreError
from eventstore.store import EventLog
from eventstore.values import RecordedEvent
from projections.backends import lock_for, storage_for
from projections.health import LastError, RunnerHealth, backoff_delay, short_message
from projections.locks import ExclusiveLock
from projections.registry import PROJECTIONS, chunks, resume_states
from projections.storage.base import ProjectionStorage
from projections.storage.tables import GROUPS, SPECS

log = logging.getLogger("ledger.projections")

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


@dataclass
class Stall:
    """A group of projections stopped at an event its folds failed on (a bug): the
    other groups go on; this one is retried with back-off from its checkpoint."""

    position: int
    type: str
    error: str
    since: datetime
    attempts: int
    retry_at: float  # time.monotonic() of the next attempt

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "type": self.type,
            "error": self.error,
            "since": format_timestamp(self.since),
            "attempts": self.attempts,
        }


class ProjectionRunner:
    """Folds new events into the persisted read models. Not thread-safe: one per process.

    A group of projections (``projections.tables.GROUPS``: the ones folded in one pass)
    whose fold raises on an event stops alone at that event: the events before it are
    committed, its checkpoint stays just before it, and the other groups go on. It is
    retried with back-off (``stall_backoff``) from its checkpoint; once the code is
    fixed it folds past the event and catches up. No event is ever skipped.

    After any other exception the in-memory folds may be half-applied: drop the runner
    and make a new one (it resumes from the committed rows)."""

    def __init__(
        self,
        store: EventLog,
        storage: ProjectionStorage | None = None,
        batch_size: int = 2000,
        stall_backoff: Callable[[int], float] = backoff_delay,
    ) -> None:
        self.store = store
        self.storage = storage or storage_for(store)
        self.batch_size = batch_size
        self.stall_backoff = stall_backoff
        self.storage.ensure()
        self._states: dict[str, Any] = {}
        self._positions: dict[str, int] = {}
        self._unreadable: Exception | None = None
        self._stalls: dict[tuple[str, ...], Stall] = {}
        self._new_stalls: list[tuple[tuple[str, ...], Stall]] = []
        # Stalls whose retry is under way: their attempts and first time carry over.
        self._retrying: dict[tuple[str, ...], Stall] = {}
        self.reload()

    def reload(self) -> None:
        self._positions = self.storage.checkpoints()
        self._states = resume_states(self.storage)

    def _reload_group(self, group: tuple[str, ...]) -> None:
        """The group's states as committed (the rows match its checkpoint)."""
        states = resume_states(self.storage)
        for name in group:
            self._states[name] = states[name]

    @property
    def position(self) -> int:
        return min(self._positions.values()) if self._positions else 0

    @property
    def checkpoints(self) -> dict[str, int]:
        return dict(self._positions)

    @property
    def stalled(self) -> dict[str, dict[str, Any]]:
        """Each stalled projection: the event it stopped at and why."""
        return {name: stall.as_dict() for group, stall in self._stalls.items() for name in group}

    def take_new_stalls(self) -> list[tuple[tuple[str, ...], Stall]]:
        """The stalls (first ones and failed retries) since the last call, to log and count."""
        found, self._new_stalls = self._new_stalls, []
        return found

    def _active_groups(self) -> list[tuple[str, ...]]:
        """The groups to fold in this pass: the healthy ones and the stalled ones whose
        retry is due (taken out of the stalls; a failure puts them back)."""
        now = time.monotonic()
        for group, stall in list(self._stalls.items()):
            if now >= stall.retry_at:
                del self._stalls[group]
                self._retrying[group] = stall
        return [group for group in GROUPS if group not in self._stalls]

    def run_once(self, stopping: Callable[[], bool] = lambda: False) -> int:
        """Fold and persist every event committed so far; the number read.

        Events up to one this code cannot read are folded and committed first; then
        EventNotFoldable names the unreadable one. ``stopping`` is asked after each
        committed batch, so a stop does not wait for a long backlog."""
        folded = 0
        self._unreadable = None
        groups = self._active_groups()
        if not groups:
            return 0
        start = min(self._positions[group[0]] for group in groups)
        events = self._readable(self.store.read_all(start, self.batch_size))
        for batch in chunks(events, self.batch_size):
            if not self._fold_and_commit(batch, groups):
                return folded
            folded += len(batch)
            if stopping():
                return folded
        if self._unreadable is not None:
            raise self._not_foldable(self._unreadable) from self._unreadable
        return folded

    def _fold_and_commit(self, batch: list[RecordedEvent], groups: list[tuple[str, ...]]) -> bool:
        moved: dict[str, int] = {}
        for group in groups:
            if group in self._stalls:
                continue  # stalled earlier in this pass
            after = self._positions[group[0]]
            pending = (
                batch if batch[0].position > after else [e for e in batch if e.position > after]
            )
            reached = self._fold_group(group, pending) if pending else batch[-1].position
            moved.update(dict.fromkeys(group, max(after, reached)))
        changes = {name: self._states[name].take_changes() for name in SPECS}
        if not self.storage.commit_batch(dict(self._positions), changes, moved):
            # A rebuild swapped tables in: our in-memory folds are stale.
            last = batch[-1].position
            log.info("projection checkpoints moved; reloading", extra={"position": last})
            self.reload()
            self._stalls.clear()
            return False
        self._positions.update(moved)
        for group, stall in list(self._retrying.items()):
            if group not in self._stalls and self._positions[group[0]] >= stall.position:
                del self._retrying[group]  # it folded past the event: healed
        return True

    def _fold_group(self, group: tuple[str, ...], pending: list[RecordedEvent]) -> int:
        """Fold ``pending`` into the group's states; the last position folded. On a
        failure the group keeps what folds before the failing event and is stalled."""
        try:
            for name in group:
                self._states[name] = PROJECTIONS[name].apply_many(self._states[name], pending)
            return pending[-1].position
        except Exception:  # noqa: S110 - found again, one event at a time, below
            pass
        # The states may be half-applied: start again from the committed rows, find
        # the event that fails, and keep exactly what comes before it.
        self._reload_group(group)
        failing, error = _first_failure(group, self._states, pending)
        self._reload_group(group)
        before = [e for e in pending if e.position < failing.position]
        for name in group:
            self._states[name] = PROJECTIONS[name].apply_many(self._states[name], before)
        self._stall(group, failing, error)
        return failing.position - 1

    def _stall(self, group: tuple[str, ...], event: RecordedEvent, error: Exception) -> None:
        earlier = self._retrying.pop(group, None)
        attempts = earlier.attempts + 1 if earlier and earlier.position == event.position else 1
        stall = Stall(
            position=event.position,
            type=event.type,
            error=f"{type(error).__name__}: {short_message(error)}",
            since=earlier.since if earlier and attempts > 1 else utcnow(),
            attempts=attempts,
            retry_at=time.monotonic() + self.stall_backoff(attempts),
        )
        self._stalls[group] = stall
        self._new_stalls.append((group, stall))
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


def _first_failure(
    group: tuple[str, ...], states: dict[str, Any], pending: list[RecordedEvent]
) -> tuple[RecordedEvent, Exception]:
    """The first event of ``pending`` that one of the group's folds raises on, one
    event at a time (``states`` are folded in place up to it)."""
    for event in pending:
        try:
            for name in group:
                states[name] = PROJECTIONS[name].apply_many(states[name], [event])
        except Exception as error:
            return event, error
    # Folded one by one, nothing failed: the batch fold itself is at fault; stop at
    # the batch's first event rather than guess.
    return pending[0], RuntimeError("the batch fold failed but no single event did")


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
                    self._report_stalls(runner)
                    self.health.observed(
                        self.store.head().position, runner.checkpoints, runner.stalled
                    )
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

    def _report_stalls(self, runner: ProjectionRunner) -> None:
        """Log and count each projection group that stopped (or failed its retry)."""
        for group, stall in runner.take_new_stalls():
            names = ", ".join(group)
            message = (
                f"projections {names} stopped at position {stall.position} ({stall.type}):"
                f" {stall.error}; the others go on; retry {stall.attempts} in"
                f" {runner.stall_backoff(stall.attempts):.1f} s"
            )
            self.health.stalled(LastError("ProjectionStalled", message, utcnow(), stall.position))
            log.error(message, extra={"position": stall.position})

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
