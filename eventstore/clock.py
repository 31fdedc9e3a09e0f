"""The clock and the one text form of a time (hashes, exports, answers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime


def system_now() -> datetime:
    return datetime.now(UTC)


_now: Callable[[], datetime] = system_now


def utcnow() -> datetime:
    """Now, in UTC: what every recorded time (``recorded_at``, ``received_at``, a
    refusal's ``at``) and every "how long ago" reads."""
    return _now()


@contextmanager
def simulated_clock(now: Callable[[], datetime]) -> Iterator[None]:
    """For ``ledger demo`` and tests only, never a service: while it lasts, ``utcnow``
    in this process reads ``now`` (simulated days and weeks pass without sleeping).
    Token lifetimes keep the system clock (the ingestors' own ``clock``)."""
    global _now
    before, _now = _now, now
    try:
        yield
    finally:
        _now = before


def format_timestamp(value: datetime) -> str:
    """The one text form of a time used in hashes, exports and answers (microseconds, Z)."""
    # isoformat is several times cheaper than strftime, and this runs for every
    # event an answer or an export shows.
    return value.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def parse_timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
