"""A tenant's history shaped for people: pure functions over the stream's events.

Everything here derives from the events alone (no clock, no database), through the
same folds the read models use: ``projections.tenants.apply`` for the descriptor
version a tenant ran, ``BaseUrlsProjection`` for its base-URL intervals. Secrets
never get this far: event data passes through ``admin.redact_event`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.http.routes.tenants import redact_event
from app.queries.evidence import cell
from eventstore.clock import format_timestamp
from eventstore.values import RecordedEvent
from projections import tenants as tenants_fold
from projections.base_urls import BaseUrlsProjection
from projections.model import BaseUrlRow

SECRET_TYPES = frozenset({"Installed", "SecretRotated"})
SEALED = "received, sealed (never shown)"  # what a page says in place of a secret


@dataclass(frozen=True, slots=True)
class Entry:
    position: int
    version: int
    type: str
    recorded_at: str
    verified_by: str
    call_id: str
    remote_addr: str
    descriptor_version: str
    changes: list[tuple[str, str]]
    hash: str
    after_as_of: bool  # recorded after the as-of point: not part of the tenant "then"


@dataclass(frozen=True, slots=True)
class Period:
    value: str
    since: str
    since_position: int
    until: str | None


def _changes(event: RecordedEvent) -> list[tuple[str, str]]:
    data: dict[str, Any] = redact_event(event)["data"]
    if event.type in SECRET_TYPES:
        data.pop("sharedSecret", None)
        shown = [("sharedSecret", SEALED)]
        if event.type == "Installed":
            shown = [(k, _plain(v)) for k, v in data.items() if k != "key"] + shown
        return shown
    return [(name, _plain(value)) for name, value in data.items()]


def _plain(value: Any) -> str:
    """A recorded value as text: JSON for an object or a list (a Forge license)."""
    if value is None:
        return "—"
    return cell(value) if isinstance(value, dict | list) else str(value)


def _verified_by(event: RecordedEvent, secret_version: int | None) -> str:
    meta = event.metadata
    if meta.alg == "RS256":
        return f"RS256 · Atlassian install key {meta.kid or '?'}"
    if meta.alg == "HS256":
        origin = f"v{secret_version}" if secret_version else "unknown version"
        return f"HS256 · tenant's shared secret from {origin}"
    if meta.alg is None and meta.operator is not None:  # `ledger forget`, not a call
        return f"ledger forget · operator {meta.operator} on {meta.host or '?'}"
    return meta.alg or "—"


def timeline(events: Sequence[RecordedEvent], as_of: int | datetime | None = None) -> list[Entry]:
    """Every event with its evidence, oldest first.

    The shared-secret version named for an HS256 call is the stream version of the
    event whose secret was in force when the call arrived (before any rotation the
    call itself carried): all events of one call share its ``call_id``.
    """
    entries: list[Entry] = []
    secret_version: int | None = None
    in_force: int | None = None
    previous_call: str | None = None
    for event in events:
        call_id = event.metadata.call_id or f"position {event.position}"
        if call_id != previous_call:
            in_force, previous_call = secret_version, call_id
        entries.append(
            Entry(
                position=event.position,
                version=event.version,
                type=event.type,
                recorded_at=format_timestamp(event.recorded_at),
                verified_by=_verified_by(event, in_force),
                call_id=event.metadata.call_id or "—",
                remote_addr=event.metadata.remote_addr or "—",
                descriptor_version=event.metadata.descriptor_version or "—",
                changes=_changes(event),
                hash=event.hash,
                after_as_of=_after(event, as_of),
            )
        )
        if event.type in SECRET_TYPES:
            secret_version = event.version
    return entries


def _after(event: RecordedEvent, as_of: int | datetime | None) -> bool:
    if as_of is None:
        return False
    if isinstance(as_of, int):
        return event.position > as_of
    return event.recorded_at > as_of


def descriptor_periods(events: Sequence[RecordedEvent]) -> list[Period]:
    """The descriptor versions the tenant ran, as the tenants fold saw them change."""
    periods: list[Period] = []
    row = None
    for event in events:
        row = tenants_fold.apply(row, event)
        version = row.descriptor_version if row is not None else None
        if version is not None and (not periods or periods[-1].value != version):
            at = format_timestamp(event.recorded_at)
            if periods:
                periods[-1] = Period(
                    periods[-1].value, periods[-1].since, periods[-1].since_position, at
                )
            periods.append(Period(version, at, event.position, None))
    return periods


def base_url_history(events: Sequence[RecordedEvent]) -> list[BaseUrlRow]:
    """The base-URL intervals of this one tenant: the base_urls fold over its stream."""
    projection = BaseUrlsProjection()
    state = projection.apply_many(projection.initial_state(), events)
    return sorted(state.take_changes(), key=lambda row: row.from_position)


def _forge_verified_by(event: RecordedEvent) -> str:
    meta = event.metadata
    if meta.alg is None:
        return "—"
    retry = f" · retry {meta.retry_count} ({meta.retry_reason or '?'})" if meta.retry_count else ""
    return f"{meta.alg} · Forge invocation token, key {meta.kid or '?'}{retry}"


def forge_timeline(
    events: Sequence[RecordedEvent], as_of: int | datetime | None = None
) -> list[Entry]:
    """An installation's events with their evidence, oldest first. The Forge call's
    route stands where a Connect call's descriptor version does; ``call_id`` is the
    call, and the token is only ever its SHA-256 (never shown here)."""
    return [
        Entry(
            position=event.position,
            version=event.version,
            type=event.type,
            recorded_at=format_timestamp(event.recorded_at),
            verified_by=_forge_verified_by(event),
            call_id=event.metadata.call_id or "—",
            remote_addr=event.metadata.remote_addr or "—",
            descriptor_version=event.metadata.path or "—",
            changes=_changes(event),
            hash=event.hash,
            after_as_of=_after(event, as_of),
        )
        for event in events
    ]


def change_text(event: RecordedEvent) -> str:
    """What an event changed, on one line (the events feed)."""
    return ", ".join(f"{name}={value}" for name, value in _changes(event))
