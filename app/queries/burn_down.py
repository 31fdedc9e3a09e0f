"""The Connect → Forge burn-down: how many installed Connect tenants had no Forge call
seen for them (the migration report's ``connect_only``, SPEC §10) at the end of each
day, towards Atlassian's end of support for Connect.

The read models hold *now*; the past comes from folding the log through the same
folds (``tenants``, ``installations``/``links``) and asking ``migration_report`` at
each day's end. One ``BurnDownSeries`` per process keeps the fold and the position it
reached, so a page view folds only what was appended since the previous view.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Final

from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.installations import InstallationRow, InstallationsProjection, LinkRow
from projections.migration import migration_report
from projections.tenants import TenantsProjection

CONNECT_END_OF_SUPPORT: Final = date(2027, 1, 31)  # SPEC §10 (moved from December 2026)
MAX_DAYS: Final = 120

DailyCount = list[tuple[date, int]]


class BurnDownFold:
    """Connect-only tenants at the end of each day, fed events in log order."""

    def __init__(self) -> None:
        self._tenants = TenantsProjection()
        self._tenant_state = self._tenants.initial_state()
        self._forge = InstallationsProjection()
        self._forge_state = self._forge.initial_state()
        self._installations: dict[str, InstallationRow] = {}
        self._links: list[LinkRow] = []
        self.position = 0
        self.closed: DailyCount = []
        self.current: date | None = None

    def feed(self, events: Iterable[RecordedEvent]) -> None:
        for event in events:
            self.position = event.position
            day = event.recorded_at.date()
            if self.current is not None and day != self.current:
                self.closed.append((self.current, self.connect_only()))
                del self.closed[: -(MAX_DAYS + 1)]
            self.current = day
            if event.type in self._tenants.event_types:
                self._tenants.apply(self._tenant_state, event)
            if event.type in self._forge.event_types:
                self._forge.apply(self._forge_state, event)

    def connect_only(self) -> int:
        """Connect-only tenants after the events fed so far."""
        changed = self._forge_state.installation_changes()
        self._installations.update((row.installation_id, row) for row in changed)
        self._links += self._forge_state.link_changes()
        report = migration_report(
            self._tenant_state.rows(), self._installations.values(), self._links
        )
        return len(report.connect_only)

    def days(self, today: date) -> DailyCount:
        """Up to ``today``, days without events carrying the previous day's figure."""
        days = list(self.closed)
        if self.current is not None:
            days.append((self.current, self.connect_only()))
        return _fill_gaps(days, today)[-MAX_DAYS:]


def _fill_gaps(days: DailyCount, today: date) -> DailyCount:
    if not days:
        return []
    known = dict(days)
    filled: DailyCount = []
    day, count = days[0]
    while day <= max(today, days[-1][0]):
        count = known.get(day, count)
        filled.append((day, count))
        day += timedelta(days=1)
    return filled


def burn_down(events: Iterable[RecordedEvent], today: date) -> DailyCount:
    fold = BurnDownFold()
    fold.feed(events)
    return fold.days(today)


class BurnDownSeries:
    """One ``BurnDownFold`` kept between page views (the log is append-only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # pages are built in worker threads
        self._fold = BurnDownFold()

    def days(self, store: EventStore, today: date) -> DailyCount:
        with self._lock:
            self._fold.feed(store.read_all(self._fold.position, batch_size=5000))
            return self._fold.days(today)
