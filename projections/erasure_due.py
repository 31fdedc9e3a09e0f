"""Tenants due for erasure (SPEC §6), computed at query time: the answer depends on
*now*, which no fold may read.

A tenant is due when it is gone, not forgotten, and has been gone for longer than
``after`` (``LEDGER_ERASURE_AFTER_DAYS``):

* ``uninstalled``: its state is uninstalled; gone since ``left_at`` (its first
  ``Uninstalled``, or an earlier refusal of its site, since its last install);
* ``site_refused``: still installed, but its site refused the ledger's license check
  (401/403/404, SPEC §11) since ``left_at``;
* ``uninstalling``: still installed, but its Forge installation sent ``pre-uninstall``
  (SPEC §10) at the time the caller found in that installation's stream.

Each comes with the date it became due (gone since + ``after``) and its evidence: the
stream and log position of the event it left with. A tenant that comes back (installed
again, or its site answering again) has no ``left_at`` any more and leaves the list;
``ledger forget`` sets ``forgotten_at`` and so removes it too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from eventstore.events import stream_id_for
from projections.model import INSTALLED, UNINSTALLED, TenantRow

__all__ = ["ErasureDue", "Evidence", "erasure_due"]

Reason = Literal["uninstalled", "site_refused", "uninstalling"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """The event a tenant left with: its stream, its log position, when it was recorded."""

    stream_id: str
    position: int
    at: datetime


@dataclass(frozen=True, slots=True)
class ErasureDue:
    tenant: TenantRow
    reason: Reason
    gone_since: datetime
    due_at: datetime
    evidence: Evidence


def erasure_due(
    tenants: Iterable[TenantRow],
    now: datetime,
    after: timedelta,
    uninstalling: Mapping[str, Evidence] | None = None,
) -> list[ErasureDue]:
    """The tenants among ``tenants`` due at ``now`` (see the module), in input order.

    ``uninstalling``: for installed tenants whose Forge installation is uninstalling, by
    clientKey, the ``ForgeUninstalling`` event that says so."""
    found = []
    for row in tenants:
        if row.forgotten_at is not None:
            continue
        gone = _gone(row, (uninstalling or {}).get(row.client_key))
        if gone is None:
            continue
        reason, evidence = gone
        due_at = evidence.at + after
        if due_at < now:  # gone for longer than ``after``
            found.append(ErasureDue(row, reason, evidence.at, due_at, evidence))
    return found


def _gone(row: TenantRow, forge: Evidence | None) -> tuple[Reason, Evidence] | None:
    """Why and since which event the tenant is gone; None while it is not."""
    own = (
        Evidence(stream_id_for(row.client_key), row.left_position, row.left_at)
        if row.left_at is not None and row.left_position is not None
        else None
    )
    if row.state == UNINSTALLED and own is not None:
        return "uninstalled", own
    if row.state == INSTALLED and row.site_refused_at is not None and own is not None:
        return "site_refused", own
    if row.state == INSTALLED and forge is not None:
        return "uninstalling", forge
    return None
