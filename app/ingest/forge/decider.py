"""A Forge installation as a decider (SPEC §10): initial state, evolve, decide. Pure.

The shell (``app.ingest.shell.run``) reads the ``installation:<uuid>`` stream, folds it with
``evolve`` and asks ``decide`` what one verified call appends:

* a delivery already recorded (same ``delivery_sha256``, rule 6) → nothing (Skip);
* the first call of an installation → ``ForgeInstalled`` (and, for a
  ``pre-uninstall``, ``ForgeUninstalling`` after it);
* later: ``ForgeUpgraded`` when the app version differs, ``ForgeLicenseChanged``
  when the license differs, ``ForgeDetailsChanged`` for any other recorded field
  the call states differently; then ``ForgeUninstalling`` for a ``pre-uninstall``,
  or ``ForgeInstallConfirmed`` for an ``installed``/``upgraded`` that changed
  nothing (or that brings an uninstalling installation back).

A field the call does not state (None) is not a change: an ``upgraded`` body has
no installer, a ``pre-uninstall`` no site ARI.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from app.ingest.forge.body import ForgeFacts, Route
from app.ingest.shell import Append, Decision, Skip
from eventstore.events import (
    EventData,
    ForgeDetailsChanged,
    ForgeInstallConfirmed,
    ForgeInstalled,
    ForgeLicenseChanged,
    ForgeUninstalling,
    ForgeUpgraded,
    Metadata,
    canonical_json,
)
from eventstore.values import RecordedEvent

__all__ = ["DETAIL_FIELDS", "ForgeCall", "InstallationDecider", "InstallationState"]

# Recorded fields with no event of their own.
DETAIL_FIELDS: Final = (
    "cloud_id",
    "site_ari",
    "product",
    "app_id",
    "environment_id",
    "environment_type",
    "installer_account_id",
)


@dataclass(frozen=True, slots=True)
class InstallationState:
    stream_id: str
    status: Literal["new", "installed", "uninstalling"] = "new"
    app_version: str | None = None
    license: dict[str, Any] | None = None
    details: dict[str, Any] = field(default_factory=dict)
    deliveries: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ForgeCall:
    """One verified Forge call: its route, what it says, and how it is identified."""

    route: Route
    facts: ForgeFacts
    delivery_sha256: str
    metadata: Metadata


def _same(a: object, b: object) -> bool:
    # As canonical JSON: Python's == takes 1 for True.
    return canonical_json(a) == canonical_json(b)


def _stated(license: object) -> object:
    """A license without its unstated (null) fields: a license recorded before the
    2026 layout (five keys) and the same facts read today (ten keys, the new ones
    null) are the same license, not a ForgeLicenseChanged."""
    if isinstance(license, dict):
        return {key: value for key, value in license.items() if value is not None}
    return license


class InstallationDecider:
    def initial_state(self, stream_id: str) -> InstallationState:
        return InstallationState(stream_id)

    def evolve(self, state: InstallationState, event: RecordedEvent) -> InstallationState:
        delivery = event.metadata.delivery_sha256
        if delivery is not None and delivery not in state.deliveries:
            state = replace(state, deliveries=state.deliveries | {delivery})
        data = event.data
        if isinstance(data, ForgeInstalled):
            details = {name: getattr(data, name) for name in DETAIL_FIELDS}
            return replace(
                state,
                status="installed",
                app_version=data.app_version,
                license=data.license,
                details=details,
            )
        if isinstance(data, ForgeUpgraded):
            return replace(state, app_version=data.to, status="installed")
        if isinstance(data, ForgeLicenseChanged):
            return replace(state, license=data.to)
        if isinstance(data, ForgeDetailsChanged):
            return replace(state, details={**state.details, **data.changes})
        if isinstance(data, ForgeInstallConfirmed):
            return replace(state, status="installed")
        if isinstance(data, ForgeUninstalling):
            return replace(state, status="uninstalling")
        return state

    def decide(self, state: InstallationState, call: ForgeCall) -> Decision:
        if call.delivery_sha256 in state.deliveries:
            return Skip("duplicate", "this delivery was recorded before")
        facts = call.facts
        if state.status == "new":
            events: list[EventData] = [_installed(facts)]
        else:
            events = _changes(state, facts)
        if call.route == "pre-uninstall":
            events.append(ForgeUninstalling())
        elif state.status != "new" and (not events or state.status == "uninstalling"):
            events.append(ForgeInstallConfirmed(route=call.route))
        return Append(events, call.metadata, idempotency_key=call.delivery_sha256)


def _installed(facts: ForgeFacts) -> ForgeInstalled:
    return ForgeInstalled(
        installation_id=facts.installation_id,
        cloud_id=facts.cloud_id,
        site_ari=facts.site_ari,
        product=facts.product,
        app_id=facts.app_id,
        app_version=facts.app_version,
        environment_id=facts.environment_id,
        environment_type=facts.environment_type,
        installer_account_id=facts.installer_account_id,
        license=facts.license,
    )


def _changes(state: InstallationState, facts: ForgeFacts) -> list[EventData]:
    events: list[EventData] = []
    if facts.app_version is not None and facts.app_version != state.app_version:
        events.append(ForgeUpgraded(from_=state.app_version, to=facts.app_version))
    if facts.license is not None and not _same(_stated(facts.license), _stated(state.license)):
        events.append(ForgeLicenseChanged(from_=state.license, to=facts.license))
    changes = {
        name: getattr(facts, name)
        for name in DETAIL_FIELDS
        if getattr(facts, name) is not None
        and not _same(getattr(facts, name), state.details.get(name))
    }
    if changes:
        events.append(ForgeDetailsChanged(changes=changes))
    return events
