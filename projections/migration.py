"""The migration report (SPEC §10), computed at query time from three read models.

* ``linked``: installed Connect tenants with a linked Forge installation that has
  sent at least one Forge call (in any state);
* ``connect_only``: installed Connect tenants with no Forge call seen for them (the
  stragglers), with the ``installationId`` their payload named, if any (an id Forge
  never sent stays listed, with that id);
* ``forge_only``: installations (any state) linked to no Connect tenant.

A tenant's installations are those its ``connect`` links name, the one its payload
names now, and those whose row lists it in ``client_keys`` (one installation can
span a site's Jira and Confluence tenants; a reinstall inherits its site's tenants).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from projections.installations import CONNECT, InstallationRow, LinkRow
from projections.model import INSTALLED, TenantRow

__all__ = ["MigrationReport", "migration_report"]


@dataclass(frozen=True, slots=True)
class MigrationReport:
    linked: int
    connect_only: list[TenantRow]
    forge_only: list[InstallationRow]


def migration_report(
    tenants: Iterable[TenantRow],
    installations: Iterable[InstallationRow],
    links: Iterable[LinkRow],
) -> MigrationReport:
    rows = {row.installation_id: row for row in installations}
    named: dict[str, set[str]] = {}
    for link in links:
        if link.kind == CONNECT and link.client_key is not None:
            named.setdefault(link.client_key, set()).add(link.installation_id)
    for row in rows.values():
        for client_key in row.client_keys:  # one installation, several tenants of a site
            named.setdefault(client_key, set()).add(row.installation_id)
    linked = 0
    connect_only: list[TenantRow] = []
    for tenant in tenants:
        if tenant.state != INSTALLED:
            continue
        mine = named.get(tenant.client_key, set())
        if tenant.installation_id is not None:
            mine = mine | {tenant.installation_id}
        if any(installation in rows for installation in mine):
            linked += 1
        else:
            connect_only.append(tenant)
    forge_only = [row for row in rows.values() if not row.client_keys]
    connect_only.sort(key=lambda row: row.client_key)
    forge_only.sort(key=lambda row: row.installation_id)
    return MigrationReport(linked, connect_only, forge_only)
