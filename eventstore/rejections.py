"""The rejection log: refused calls, kept for operators (SPEC §4, "rejection log").

The interface (``RejectionLog``), the row (``Rejection``) and the pure rules every
backend applies the same way: text escaping, what makes two refusals identical
(fingerprint and window), the row budget of a window and its overflow rows, and how
often retention purges run.
"""

from __future__ import annotations

import abc
import hashlib
import logging
import re
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

import msgspec

from eventstore.clock import format_timestamp
from eventstore.errors import StoreError
from eventstore.events import canonical_json


class Rejection(msgspec.Struct, frozen=True, omit_defaults=True):
    """One refused call. Never holds a token or a secret: only the token's SHA-256.

    ``status`` is the caller's outcome code, opaque to the store: it is stored and
    listed as given, never interpreted (the service records the HTTP status it
    answered, which /admin/rejections shows under this name).

    Identical refusals (same reason, remote address, claimed clientKey and path) in
    one window of ``REJECTION_WINDOW_SECONDS`` are one row: ``at`` is the first,
    ``last_seen_at`` the last, ``count`` how many; the row keeps the first one's
    other fields (token hash, detail).

    A window holds at most ``REJECTION_ROW_BUDGET`` such rows. A refusal that would
    need one more is counted on the window's ``overflow`` row for its reason and path
    instead (see overflow_rejection): no claimed identity, ``count`` the refusals it
    stands for. Over all rows, the counts add up to the refusals recorded.
    """

    at: datetime
    path: str
    reason: str
    status: int
    client_key: str | None = None
    base_url: str | None = None
    remote_addr: str | None = None
    token_sha256: str | None = None
    detail: str | None = None
    count: int = 1
    last_seen_at: datetime | None = None
    overflow: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = msgspec.to_builtins(self)
        out["at"] = format_timestamp(self.at)
        out["count"] = self.count
        out["last_seen_at"] = format_timestamp(self.last_seen_at or self.at)
        out["overflow"] = self.overflow
        return dict(out)


# The rejection table's columns are Rejection's fields, in this order (declared once:
# the backends build their statements from it).
REJECTION_FIELDS: Final[tuple[str, ...]] = Rejection.__struct_fields__

# Identical refusals within one window are kept as one row (see Rejection).
REJECTION_WINDOW_SECONDS = 60
# Rows of their own one window may hold, over all reasons; the refusals beyond it are
# counted on the window's overflow rows, one per reason and path. Global, not per
# reason, so the bound does not grow with the reasons a caller can provoke: a window
# holds at most this many rows plus one per (reason, route) refused beyond it, and both
# of those come from the service's own codes and routes, never from the caller. 100 a
# minute is far above what a healthy install base is refused (a handful), so ordinary
# refusals and small bursts always keep their claimed identity, and 100 full samples a
# minute still show who is flooding. A flood then costs at most about 150,000 rows
# (~125 MB on PostgreSQL) a day of it, instead of a row per refusal.
REJECTION_ROW_BUDGET = 100
# The detail of an overflow row (its own refusals' details are not kept).
REJECTION_OVERFLOW_DETAIL = (
    f"refusals beyond the {REJECTION_ROW_BUDGET} rows a {REJECTION_WINDOW_SECONDS}-second"
    " window keeps: counted here, their claimed identity, address and token not kept"
)
# Retention purges run at most this often per store object, each deleting at most
# REJECTION_PURGE_BATCH rows REJECTION_PURGE_BATCHES times: bounded work on the insert path.
REJECTION_PURGE_INTERVAL_SECONDS = 60.0
REJECTION_PURGE_BATCH = 1000
REJECTION_PURGE_BATCHES = 10
# Longest text kept in one field of a rejection row (claimed values are untrusted).
REJECTION_FIELD_LIMIT = 2048

# C0 and C1 control characters, DEL and lone surrogates: PostgreSQL cannot store NUL,
# neither store can encode a lone surrogate, and none of them belong in a log an
# operator reads on a terminal.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _escape_char(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(value: str | None, limit: int = REJECTION_FIELD_LIMIT) -> str | None:
    """A claimed value made storable: control characters escaped (NUL → ``\\x00``), cut
    to ``limit`` characters."""
    if value is None:
        return None
    return _UNPRINTABLE.sub(_escape_char, value[:limit])


def storable_rejection(rejection: Rejection) -> Rejection:
    """The rejection with every text field escaped (see escape_text); both stores write this."""
    return msgspec.structs.replace(
        rejection,
        path=escape_text(rejection.path) or "",
        reason=escape_text(rejection.reason) or "",
        client_key=escape_text(rejection.client_key),
        base_url=escape_text(rejection.base_url),
        remote_addr=escape_text(rejection.remote_addr),
        token_sha256=escape_text(rejection.token_sha256),
        detail=escape_text(rejection.detail),
    )


def rejection_fingerprint(rejection: Rejection) -> str:
    """What makes two refusals identical for coalescing: reason, remote address,
    claimed clientKey and path (of an already escaped rejection); for an overflow row,
    its reason and path (a shorter list, so never the fingerprint of an ordinary row)."""
    parts = (
        (rejection.reason, rejection.path)
        if rejection.overflow
        else (rejection.reason, rejection.remote_addr, rejection.client_key, rejection.path)
    )
    return hashlib.sha256(canonical_json(list(parts))).hexdigest()


def overflow_rejection(rejection: Rejection) -> Rejection:
    """The overflow row a refusal beyond its window's row budget is counted on: its
    time, path, reason and status; what varies from caller to caller (claimed
    clientKey and baseUrl, address, token hash, detail) is not kept."""
    return Rejection(
        at=rejection.at,
        path=rejection.path,
        reason=rejection.reason,
        status=rejection.status,
        detail=REJECTION_OVERFLOW_DETAIL,
        count=rejection.count,
        last_seen_at=rejection.last_seen_at,
        overflow=True,
    )


def rejection_window(at: datetime) -> int:
    """The number of the coalescing window a refusal at ``at`` falls in."""
    return int(at.timestamp()) // REJECTION_WINDOW_SECONDS


class RejectionLogCounters:
    """Process-wide counts of coalesced and purged rejection rows, for /metrics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.coalesced = 0
        self.purged = 0

    def add(self, *, coalesced: int = 0, purged: int = 0) -> None:
        with self._lock:
            self.coalesced += coalesced
            self.purged += purged


rejection_log_counters = RejectionLogCounters()


class PurgeSchedule:
    """At most one retention purge per interval for one store object (thread-safe)."""

    def __init__(self, interval: float = REJECTION_PURGE_INTERVAL_SECONDS) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._next = 0.0

    def due(self) -> bool:
        now = time.monotonic()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self._interval
            return True


class RejectionLog(abc.ABC):
    """Where refused calls are recorded, coalesced, listed and purged."""

    @abc.abstractmethod
    def record_rejection(self, rejection: Rejection) -> None:
        """Store a refusal: text escaped (storable_rejection), coalesced with an identical
        one of the same window, or counted on the window's overflow row once the window
        has spent its REJECTION_ROW_BUDGET rows; and now and then rejections older than
        the retention period purged. Never fails on odd text."""

    @abc.abstractmethod
    def record_rejections(self, rejections: Iterable[Rejection]) -> None:
        """Store several refusals, each exactly as record_rejection stores it, in a few
        transactions (an import; a test of a flood). Each holds the rows it counted on
        until it commits: the service records one refusal at a time."""

    @abc.abstractmethod
    def purge_rejections(self, older_than: datetime) -> int:
        """Delete rejections last seen before ``older_than`` (bounded batches); the count."""

    @abc.abstractmethod
    def list_rejections(
        self,
        limit: int = 100,
        *,
        reason: str | None = None,
        since: datetime | None = None,
        client_key: str | None = None,
        offset: int = 0,
    ) -> list[Rejection]:
        """Most recently seen first; only those with this reason, at or after ``since``, for this clientKey.

        ``offset``: rows skipped first (the console pages and downloads in this order)."""


def purge_quietly(log: RejectionLog, older_than: datetime) -> None:
    """The retention purge run from the insert path: housekeeping, so a failure is
    logged and left to the next scheduled purge, never raised to the call that
    recorded its rejection row."""
    try:
        log.purge_rejections(older_than)
    except StoreError as error:
        logging.getLogger("ledger.store").warning(
            "rejection purge failed: %s; retried at the next purge", type(error).__name__
        )
