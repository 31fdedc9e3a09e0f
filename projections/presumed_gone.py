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

from projections.installations import InstallationRow
from projections.model import INSTALLED, DescriptorRow, TenantRow

__all__ = ["DEFAULT_GRACE", "presumed_gone", "silence_threshold", "site_refused", "uninstalling"]

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


def site_refused(tenants: Iterable[TenantRow]) -> list[TenantRow]:
    """Installed tenants whose site refused the ledger's license check (401/403/404,
    SPEC §11): the app is very likely gone from the site, without an ``uninstalled``."""
    return [row for row in tenants if row.state == INSTALLED and row.site_refused_at is not None]


def uninstalling(
    tenants: Iterable[TenantRow], installations: Iterable[InstallationRow]
) -> list[TenantRow]:
    """Installed tenants whose linked Forge installation sent ``pre-uninstall`` (SPEC §10).

    A tenant's installation is the latest installed one linked to it (its row's
    ``client_keys``) or named by its payload; a reinstall after the pre-uninstall
    replaces it, so the tenant is no longer listed.
    """
    latest: dict[str, InstallationRow] = {}
    by_id: dict[str, InstallationRow] = {}
    for each in installations:
        by_id[each.installation_id] = each
        for client_key in each.client_keys:  # every tenant of the site it spans
            best = latest.get(client_key)
            if best is None or best.installed_position < each.installed_position:
                latest[client_key] = each
    found = []
    for tenant in tenants:
        if tenant.state != INSTALLED:
            continue
        row: InstallationRow | None = latest.get(tenant.client_key)
        if row is None and tenant.installation_id is not None:
            row = by_id.get(tenant.installation_id)
        if row is not None and row.state == "uninstalling":
            found.append(tenant)
    return found
