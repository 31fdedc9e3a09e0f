"""The clock and the one text form of a time (hashes, exports, answers)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


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
