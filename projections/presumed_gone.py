"""Tenants presumed gone: computed at query time from the ``tenants`` and
``descriptors`` rows, because the answer depends on *now*, which no fold may read.

Why it works: Atlassian calls ``installed`` on every site within about 24 h after
a new descriptor version is published. A site that stays silent long after a
version appeared has most likely been deleted or unsubscribed without an
``uninstalled`` reaching us (SPEC §1).

The rule, kept deliberately simple: let T be the latest ``first_seen_at`` among
the descriptor versions first seen more than ``grace`` before ``now`` (strictly).
A tenant is presumed gone when its state is installed and its ``last_seen_at``
is earlier than T. With no such version nobody is presumed gone. Enabled or not
does not matter: a disabled app is still installed on the site. (A tenant whose
upgrade needs an admin's approval may be listed too: it is a presumption for a
person to check, not a state change.)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from projections.model import INSTALLED, DescriptorRow, TenantRow

__all__ = ["DEFAULT_GRACE", "presumed_gone", "silence_threshold"]

DEFAULT_GRACE: Final = timedelta(hours=24)


def silence_threshold(
    descriptor_versions: Iterable[DescriptorRow], now: datetime, grace: timedelta = DEFAULT_GRACE
) -> datetime | None:
    """T: the latest first sighting of a version older than ``grace`` (or ``None``)."""
    cutoff = now - grace
    return max(
        (row.first_seen_at for row in descriptor_versions if row.first_seen_at < cutoff),
        default=None,
    )


def presumed_gone(
    tenants: Iterable[TenantRow],
    descriptor_versions: Iterable[DescriptorRow],
    now: datetime,
    grace: timedelta = DEFAULT_GRACE,
) -> list[TenantRow]:
    """Installed tenants silent since before T (see the module docstring), in input order."""
    threshold = silence_threshold(descriptor_versions, now, grace)
    if threshold is None:
        return []
    return [row for row in tenants if row.state == INSTALLED and row.last_seen_at < threshold]
