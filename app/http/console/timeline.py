"""A tenant's history shaped for people: pure functions over the stream's events.

Everything here derives from the events alone (no clock, no database). The timelines
read the events as the admin API shows them (``reads.stream_events``: the one history
path, secrets already redacted), so a page shows what the API answers; the periods
use the same folds the read models use, over typed events:
``projections.tenants.apply`` for the descriptor version a tenant ran,
``BaseUrlsProjection`` for its base-URL intervals.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.queries.evidence import cell
from eventstore.clock import format_timestamp, parse_timestamp
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


# An event as the admin API shows it (``reads.stream_events``).
Shown = Mapping[str, Any]


def _changes(event: Shown) -> list[tuple[str, str]]:
    data: dict[str, Any] = dict(event["data"])
    if event["type"] in SECRET_TYPES:
        data.pop("sharedSecret", None)
        shown = [("sharedSecret", SEALED)]
        if event["type"] == "Installed":
            shown = [(k, _plain(v)) for k, v in data.items() if k != "key"] + shown
        return shown
    return [(name, _plain(value)) for name, value in data.items()]


def _plain(value: Any) -> str:
    """A recorded value as text: JSON for an object or a list (a Forge license)."""
    if value is None:
        return "—"
    return cell(value) if isinstance(value, dict | list) else str(value)


def _verified_by(meta: Mapping[str, Any], secret_version: int | None) -> str:
    alg = meta.get("alg")
    if alg == "RS256":
        return f"RS256 · Atlassian install key {meta.get('kid') or '?'}"
    if alg == "HS256":
        origin = f"v{secret_version}" if secret_version else "unknown version"
        return f"HS256 · tenant's shared secret from {origin}"
    if alg is None and meta.get("operator") is not None:  # `ledger forget`, not a call
        return f"ledger forget · operator {meta['operator']} on {meta.get('host') or '?'}"
    return alg or "—"


def timeline(events: Sequence[Shown], as_of: int | datetime | None = None) -> list[Entry]:
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
        meta = event["metadata"]
        call_id = meta.get("call_id") or f"position {event['position']}"
        if call_id != previous_call:
            in_force, previous_call = secret_version, call_id
        entries.append(_entry(event, _verified_by(meta, in_force),
                              meta.get("descriptor_version"), as_of))  # fmt: skip
        if event["type"] in SECRET_TYPES:
            secret_version = event["version"]
    return entries


def _entry(
    event: Shown, verified_by: str, descriptor_version: str | None, as_of: int | datetime | None
) -> Entry:
    meta = event["metadata"]
    return Entry(
        position=event["position"],
        version=event["version"],
        type=event["type"],
        recorded_at=event["recorded_at"],
        verified_by=verified_by,
        call_id=meta.get("call_id") or "—",
        remote_addr=meta.get("remote_addr") or "—",
        descriptor_version=descriptor_version or "—",
        changes=_changes(event),
        hash=event["hash"],
        after_as_of=_after(event, as_of),
    )


def _after(event: Shown, as_of: int | datetime | None) -> bool:
    if as_of is None:
        return False
    if isinstance(as_of, int):
        return bool(event["position"] > as_of)
    return parse_timestamp(event["recorded_at"]) > as_of


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


def _forge_verified_by(meta: Mapping[str, Any]) -> str:
    alg = meta.get("alg")
    if alg is None:
        return "—"
    count = meta.get("retry_count")
    retry = f" · retry {count} ({meta.get('retry_reason') or '?'})" if count else ""
    return f"{alg} · Forge invocation token, key {meta.get('kid') or '?'}{retry}"


def forge_timeline(events: Sequence[Shown], as_of: int | datetime | None = None) -> list[Entry]:
    """An installation's events with their evidence, oldest first. The Forge call's
    route stands where a Connect call's descriptor version does; ``call_id`` is the
    call, and the token is only ever its SHA-256 (never shown here)."""
    return [
        _entry(event, _forge_verified_by(event["metadata"]), event["metadata"].get("path"), as_of)
        for event in events
    ]


def change_text(event: Shown) -> str:
    """What an event changed, on one line (the events feed)."""
    return ", ".join(f"{name}={value}" for name, value in _changes(event))
