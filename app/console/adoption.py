"""Descriptor adoption and rejections over time: daily series for the console charts.

Adoption needs the past, which the read models do not keep (they hold *now*), so it
replays the tenant events through the ``tenants`` fold itself and counts, at the end
of each day, the installed tenants per descriptor version. The replay reads the whole
log once per page view: fine for a person's occasional look (the log reads at
hundreds of thousands of events a second), and nothing is stored twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, timedelta

from eventstore.rejections import Rejection
from eventstore.store import RecordedEvent
from projections.model import INSTALLED
from projections.tenants import TenantsProjection, TenantsState

MAX_DAYS = 60
TENANT_STREAM = "tenant:"

DailyCounts = list[tuple[date, Counter[str]]]


def _installed_per_version(state: TenantsState) -> Counter[str]:
    return Counter(
        row.descriptor_version or "unknown" for row in state.rows() if row.state == INSTALLED
    )


def adoption_by_day(events: Iterable[RecordedEvent], today: date) -> DailyCounts:
    """Installed tenants per descriptor version at the end of each day, up to ``today``
    (days without events carry the previous day's figures), the last ``MAX_DAYS``."""
    projection = TenantsProjection()
    state = projection.initial_state()
    handled = projection.event_types
    days: DailyCounts = []
    current: date | None = None
    for event in events:
        if not event.stream_id.startswith(TENANT_STREAM) or event.type not in handled:
            continue  # other streams (say, Forge installations) are not tenants
        day = event.recorded_at.date()
        if current is not None and day != current:
            days.append((current, _installed_per_version(state)))
        current = day
        projection.apply(state, event)
    if current is not None:
        days.append((current, _installed_per_version(state)))
    return _fill_gaps(days, today)[-MAX_DAYS:]


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
    """Refused calls per reason per day, oldest day first (days with none left out)."""
    per_day: dict[date, Counter[str]] = {}
    for rejection in rejections:
        per_day.setdefault(rejection.at.date(), Counter())[rejection.reason] += 1
    return sorted(per_day.items())[-MAX_DAYS:]
