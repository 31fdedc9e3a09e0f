"""What a license check records in the tenant's stream: a pure decider (SPEC §11).

The check's observation of one site is a ``SiteAnswered`` (200, the license it named)
or a ``SiteRefusedCheck`` (401, 403 or 404). A site that could not be reached, or
answered anything else, is no observation: nothing is decided, and the next round
asks again.

* ``LicenseChanged`` (``from``, ``to``) when the license differs from the last one
  recorded since the tenant's last install (a reinstall starts a fresh tenancy, its
  license unrecorded), or when a site that refused answers again: it is back;
* ``SiteRefused`` (``status``) when the site refuses and did not already refuse with
  that status;
* nothing otherwise, and nothing for a tenant that is not installed (the check asks
  installed tenants only; an ``uninstalled`` that raced in wins) or was forgotten.

Every event carries ``metadata.source = "license_check"``: the ledger's observation,
never a lifecycle call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

from app.ingest.shell import Append, Decision, Skip
from eventstore.events import (
    EventData,
    Installed,
    LicenseChanged,
    Metadata,
    SiteRefused,
    canonical_json,
)
from eventstore.values import RecordedEvent
from projections import tenants
from projections.model import INSTALLED, TenantRow

__all__ = [
    "DECIDER",
    "REFUSING_STATUSES",
    "SOURCE",
    "CheckState",
    "Observation",
    "SiteAnswered",
    "SiteRefusedCheck",
    "license_of",
]

SOURCE: Final = "license_check"
REFUSING_STATUSES: Final = frozenset({401, 403, 404})
MAX_FIELD: Final = 255  # a license field longer than this is cut: a site's words, bounded

License = dict[str, Any]


def license_of(answer: object) -> License | None:
    """The license of a site's answer to ``GET /rest/atlassian-connect/1/addons/<key>``
    in the ledger's names: ``active``, ``type``, ``evaluation``, ``sen``; None when the
    answer names none (a free app). Total: any JSON value gives a value."""
    if not isinstance(answer, Mapping):
        return None
    found = answer.get("license")
    if not isinstance(found, Mapping):
        return None
    sen = found.get("supportEntitlementNumber", found.get("entitlementNumber"))
    return {
        "active": found.get("active") if isinstance(found.get("active"), bool) else None,
        "type": _text(found.get("type")),
        "evaluation": found.get("evaluation")
        if isinstance(found.get("evaluation"), bool)
        else None,
        "sen": _text(sen),
    }


def _text(value: object) -> str | None:
    return value[:MAX_FIELD] if isinstance(value, str) else None


@dataclass(frozen=True, slots=True)
class SiteAnswered:
    license: License | None


@dataclass(frozen=True, slots=True)
class SiteRefusedCheck:
    status: int


Observation = SiteAnswered | SiteRefusedCheck


@dataclass(frozen=True, slots=True)
class CheckState:
    """The tenant as the check sees it: its row (the tenants fold's rules), the license
    last recorded since its last install, and the status its site last refused with."""

    row: TenantRow | None = None
    license: License | None = None
    license_recorded: bool = False  # a LicenseChanged since the last install
    refused: int | None = None  # the last SiteRefused's status, while it refuses


@dataclass(frozen=True, slots=True)
class Check:
    """The command: what the site said, and the metadata to record it with."""

    observation: Observation
    metadata: Metadata


def evolve(state: CheckState, event: RecordedEvent) -> CheckState:
    row = tenants.apply(state.row, event)
    data = event.data
    if isinstance(data, Installed):
        return CheckState(row=row)
    if isinstance(data, LicenseChanged):
        return CheckState(row=row, license=data.to, license_recorded=True)
    if isinstance(data, SiteRefused):
        return replace(state, row=row, refused=data.status)
    refused = state.refused if row is not None and row.site_refused_at is not None else None
    return replace(state, row=row, refused=refused)


def decide(state: CheckState, command: Check) -> Decision[EventData]:
    row = state.row
    if row is None or row.state != INSTALLED:
        return Skip("not_installed")
    if row.forgotten_at is not None:
        return Skip("forgotten")
    seen = command.observation
    if isinstance(seen, SiteRefusedCheck):
        if state.refused == seen.status:
            return Skip("same")
        return Append([SiteRefused(status=seen.status)], command.metadata)
    back = state.refused is not None
    if not back and state.license_recorded and _same(state.license, seen.license):
        return Skip("same")
    if not back and not state.license_recorded and seen.license is None:
        return Skip("same")  # no license before, none now: nothing to record
    return Append([LicenseChanged(from_=state.license, to=seen.license)], command.metadata)


def _same(a: License | None, b: License | None) -> bool:
    return canonical_json(a) == canonical_json(b)


class LicenseCheckDecider:
    """The three functions over a ``tenant:<clientKey>`` stream, for ``app.ingest.shell``."""

    def initial_state(self, stream_id: str) -> CheckState:
        return CheckState()

    def evolve(self, state: CheckState, event: RecordedEvent) -> CheckState:
        return evolve(state, event)

    def decide(self, state: CheckState, command: Check) -> Decision[EventData]:
        return decide(state, command)


DECIDER: Final = LicenseCheckDecider()
