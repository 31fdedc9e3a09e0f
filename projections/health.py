"""What the projection runner reports about itself: role, progress, lag and failures.

Pure helpers (backoff, safe error text), one thread-safe record the runner thread
writes and ``/readyz`` and ``/metrics`` read, and the state file through which a runner
in its own process (``ledger serve``) shows that record to the HTTP workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from eventstore.clock import format_timestamp, utcnow

BACKOFF_INITIAL_SECONDS: Final = 0.5
BACKOFF_MAX_SECONDS: Final = 30.0
MESSAGE_LIMIT: Final = 200
# Credentials that a driver message could quote: "user:password@" in a URL, password=…
_URL_PASSWORD: Final = re.compile(r"(://[^/\s:@]*:)[^@\s]*@")
_PASSWORD_FIELD: Final = re.compile(r"(password\s*=\s*)\S+", re.IGNORECASE)
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]+")


def backoff_delay(
    failures: int, initial: float = BACKOFF_INITIAL_SECONDS, cap: float = BACKOFF_MAX_SECONDS
) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: doubling, bounded."""
    if failures <= 0:
        return 0.0
    return float(min(cap, initial * 2 ** min(failures - 1, 32)))


def short_message(error: BaseException) -> str:
    """One safe line: no credentials, no control characters, bounded length."""
    text = _URL_PASSWORD.sub(r"\1***@", str(error))
    text = _PASSWORD_FIELD.sub(r"\1***", text)
    text = _CONTROL.sub(" ", text).strip()
    return text[:MESSAGE_LIMIT] + ("…" if len(text) > MESSAGE_LIMIT else "")


def lag_events(head: int, checkpoint: int) -> int:
    """Events in the log not yet folded by a projection at ``checkpoint``."""
    return max(0, head - checkpoint)


@dataclass(frozen=True)
class LastError:
    type: str
    message: str
    at: datetime
    position: int | None = None  # the event the runner is stuck at, when known

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "at": format_timestamp(self.at),
            "position": self.position,
        }


class RunnerHealth:
    """Written by the runner thread, read by request handlers (a lock guards both)."""

    def __init__(
        self, initial: float = BACKOFF_INITIAL_SECONDS, cap: float = BACKOFF_MAX_SECONDS
    ) -> None:
        self.initial = initial
        self.cap = cap
        self._lock = threading.Lock()
        self._role = "standby"
        self._head: int | None = None
        self._checkpoints: dict[str, int] = {}
        self._stalled: dict[str, dict[str, Any]] = {}
        self._observed_at: datetime | None = None
        self._failures = 0
        self._in_a_row = 0
        self._store_streak = False  # every failure of the current streak was the store's
        self._last_error: LastError | None = None

    @property
    def role(self) -> str:
        return self._role

    def set_role(self, role: str) -> None:
        with self._lock:
            self._role = role

    def observed(
        self,
        head: int,
        checkpoints: Mapping[str, int],
        stalled: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        """``stalled``: the projections stopped at an event (a leader knows; a standby
        passes None and shows none)."""
        with self._lock:
            self._head = head
            self._checkpoints = dict(checkpoints)
            self._stalled = dict(stalled or {})
            self._observed_at = utcnow()

    def stalled(self, error: LastError) -> None:
        """A projection group stopped at an event (or failed its retry): counted and
        kept as the last error; the runner itself goes on, so no backoff here."""
        with self._lock:
            self._failures += 1
            self._last_error = error

    def succeeded(self, *, as_leader: bool) -> None:
        """A pass worked. A standby's pass (the store answered) ends a streak of store
        failures only: a streak of events this code cannot fold ends when it folds
        them as leader. Otherwise several processes on old code, taking turns as
        leader, would each restart their backoff at 0.5 s."""
        with self._lock:
            if as_leader or self._store_streak:
                self._in_a_row = 0

    def failed(self, error: LastError, *, store_failure: bool) -> float:
        """Record a failure; the seconds to back off before the next attempt."""
        with self._lock:
            self._failures += 1
            self._in_a_row += 1
            self._store_streak = (
                store_failure if self._in_a_row == 1 else (self._store_streak and store_failure)
            )
            self._last_error = error
            return backoff_delay(self._in_a_row, self.initial, self.cap)

    @property
    def failures(self) -> int:
        return self._failures

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            head, checkpoints = self._head, dict(self._checkpoints)
            projections: dict[str, dict[str, Any]] = {
                name: {
                    "checkpoint": at,
                    "lag_events": lag_events(head, at) if head is not None else None,
                    "stalled": self._stalled.get(name),
                }
                for name, at in sorted(checkpoints.items())
            }
            lags: list[int] = [
                p["lag_events"] for p in projections.values() if p["lag_events"] is not None
            ]
            return {
                "role": self._role,
                "degraded": bool(self._stalled),
                "pid": os.getpid(),
                "head": head,
                "lag_events": max(lags) if lags else None,
                "projections": projections,
                "failures": self._failures,
                "consecutive_failures": self._in_a_row,
                "last_error": self._last_error.as_dict() if self._last_error else None,
                "observed_at": format_timestamp(self._observed_at) if self._observed_at else None,
            }


def stopped_snapshot() -> dict[str, Any]:
    """The state of a process that does not run projections at all."""
    return RunnerHealth().snapshot() | {"role": "stopped", "pid": None}


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (signal 0: nothing is sent)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


class StateFile:
    """The runner process's snapshot, published for the HTTP workers of its serve.

    The runner process rewrites it a few times a second (a new file renamed over the
    old one, so a reader never sees half of it); the workers read it for ``/readyz``.
    It is only as true as its writer is alive: a snapshot whose process is gone is
    shown as ``stopped``, with everything else as last published."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def publish(
        self, snapshot: Mapping[str, Any], earlier: Mapping[str, Any] | None = None
    ) -> None:
        """Write ``snapshot``, counting the ``earlier`` processes' failures (see
        ``carried_over``) with its own."""
        if earlier:
            snapshot = dict(snapshot)
            snapshot["failures"] = snapshot["failures"] + earlier["failures"]
            snapshot["last_error"] = snapshot["last_error"] or earlier["last_error"]
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        temporary.write_text(json.dumps(snapshot))
        os.replace(temporary, self.path)

    def last(self) -> dict[str, Any] | None:
        """The last snapshot published, as written; None if none can be read."""
        with contextlib.suppress(OSError, ValueError):
            found = json.loads(self.path.read_text())
            if isinstance(found, dict):
                return found
        return None

    def status(self) -> dict[str, Any]:
        """The runner's state as a reader should see it now."""
        found = self.last()
        if found is None:
            return stopped_snapshot()  # not started yet, or its directory is gone
        pid = found.get("pid")
        if found.get("role") != "stopped" and not (isinstance(pid, int) and process_alive(pid)):
            found["role"] = "stopped"  # killed without a word: its last word is stale
        return found

    def carried_over(self) -> dict[str, Any]:
        """What a new runner process keeps of its predecessors in this serve (their
        failures, and the last error until it has one of its own)."""
        found = self.last() or {}
        return {"failures": int(found.get("failures") or 0), "last_error": found.get("last_error")}

    def process_failed(self, pid: int, exitcode: int, restart_in: float) -> None:
        """Said by whoever saw the runner process die (its parent): ``stopped``, with
        the death as the last error, so ``/readyz`` tells why until the next one starts."""
        found = self.last() or stopped_snapshot()
        how = (
            f"was killed by signal {-exitcode}" if exitcode < 0 else f"exited with code {exitcode}"
        )
        message = f"the runner process {pid} {how}; restarting in {restart_in:.1f} s"
        self.publish(
            found
            | {
                "role": "stopped",
                "pid": pid,
                "failures": int(found.get("failures") or 0) + 1,
                "consecutive_failures": int(found.get("consecutive_failures") or 0) + 1,
                "last_error": LastError("RunnerProcessDied", message, utcnow()).as_dict(),
            }
        )
