"""What the projection runner reports about itself: role, progress, lag and failures.

Pure helpers (backoff, safe error text) and one thread-safe record the runner thread
writes and ``/readyz`` and ``/metrics`` read.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from eventstore.store import format_timestamp, utcnow

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

    def observed(self, head: int, checkpoints: Mapping[str, int]) -> None:
        with self._lock:
            self._head = head
            self._checkpoints = dict(checkpoints)
            self._observed_at = utcnow()

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
            projections = {
                name: {
                    "checkpoint": at,
                    "lag_events": lag_events(head, at) if head is not None else None,
                }
                for name, at in sorted(checkpoints.items())
            }
            lags = [p["lag_events"] for p in projections.values() if p["lag_events"] is not None]
            return {
                "role": self._role,
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
    return RunnerHealth().snapshot() | {"role": "stopped"}
