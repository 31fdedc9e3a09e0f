"""Descriptor adoption and rejections over time: daily series for the console charts.

Adoption needs the past, which the read models do not keep (they hold *now*), so it
folds the tenant events through the ``tenants`` fold itself and counts, at the end of
each day, the installed tenants per descriptor version (kept as a running count: each
event moves at most one tenant from one version to another).

Bounded cost: the console keeps one ``AdoptionSeries`` per service process (in the
app's state) that remembers the fold and the log position it reached, so a page view
folds only the events appended since the previous view, never the whole log again.
The first view after a start reads the log once. Nothing is stored in the database.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta

from eventstore.events import client_key_of
from eventstore.rejections import Rejection
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections.model import INSTALLED, TenantRow
from projections.tenants import TenantsProjection

MAX_DAYS = 60
TENANT_STREAM = "tenant:"

DailyCounts = list[tuple[date, Counter[str]]]


def _version(row: TenantRow | None) -> str | None:
    """What the chart counts a tenant as: its version when installed, else nothing."""
    if row is None or row.state != INSTALLED:
        return None
    return row.descriptor_version or "unknown"


class AdoptionFold:
    """Installed tenants per version at the end of each day, fed events in log order."""

    def __init__(self) -> None:
        self.projection = TenantsProjection()
        self.state = self.projection.initial_state()
        self.position = 0
        self.counts: Counter[str] = Counter()
        self.closed: DailyCounts = []  # days before ``current``, the last MAX_DAYS + 1
        self.current: date | None = None

    def feed(self, events: Iterable[RecordedEvent]) -> None:
        handled = self.projection.event_types
        for event in events:
            self.position = event.position
            if not event.stream_id.startswith(TENANT_STREAM) or event.type not in handled:
                continue  # other streams (say, Forge installations) are not tenants
            day = event.recorded_at.date()
            if self.current is not None and day != self.current:
                self.closed.append((self.current, +self.counts))  # + drops zero counts
                del self.closed[: -(MAX_DAYS + 1)]  # older days are outside every window
            self.current = day
            key = client_key_of(event.stream_id)
            before = _version(self.state.get(key))
            self.projection.apply(self.state, event)
            after = _version(self.state.get(key))
            if before != after:
                if before is not None:
                    self.counts[before] -= 1
                if after is not None:
                    self.counts[after] += 1

    def days(self, today: date) -> DailyCounts:
        """Up to ``today`` (days without events carry the previous day's figures), the
        last ``MAX_DAYS``."""
        days = list(self.closed)
        if self.current is not None:
            days.append((self.current, +self.counts))
        return _fill_gaps(days, today)[-MAX_DAYS:]


def adoption_by_day(events: Iterable[RecordedEvent], today: date) -> DailyCounts:
    """Installed tenants per descriptor version at the end of each day (``AdoptionFold``)."""
    fold = AdoptionFold()
    fold.feed(events)
    return fold.days(today)


class AdoptionSeries:
    """One ``AdoptionFold`` kept between page views: each view folds only the events
    appended after the position the previous one reached (the log is append-only)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # pages are built in worker threads
        self._fold = AdoptionFold()

    def days(self, store: EventStore, today: date) -> DailyCounts:
        with self._lock:
            self._fold.feed(store.read_all(self._fold.position, batch_size=5000))
            return self._fold.days(today)

    @property
    def position(self) -> int:
        return self._fold.position


def _fill_gaps(days: DailyCounts, today: date) -> DailyCounts:
    if not days:
        return []
    filled: DailyCounts = []
    known = dict(days)
    day, counts = days[0]
    last = max(today, days[-1][0])
    while day <= last:
        counts = known.get(day, counts)
        filled.append((day, counts))
        day += timedelta(days=1)
    return filled


def rejections_by_day(rejections: Iterable[Rejection]) -> DailyCounts:
    """Refused calls per reason per day, oldest day first (days with none left out); a
    row counts the refusals it stands for."""
    per_day: dict[date, Counter[str]] = {}
    for rejection in rejections:
        per_day.setdefault(rejection.at.date(), Counter())[rejection.reason] += rejection.count
    return sorted(per_day.items())[-MAX_DAYS:]
