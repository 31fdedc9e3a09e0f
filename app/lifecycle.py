"""The tenant lifecycle as a decider (SPEC §3, §4 rules 5-7): initial state, evolve, decide.

Everything here is pure. The shell (``app.ingest``) reads the tenant's stream, folds it
with ``evolve``, verifies the token, and asks ``decide`` what to append. Secrets reach
``decide`` already decrypted and leave it sealed through the injected ``seal``
function, so this module never touches keys or randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from eventstore.crypto import secret_ad
from eventstore.events import (
    BaseUrlChanged,
    DescriptorUpgraded,
    DetailsChanged,
    Disabled,
    Enabled,
    EventData,
    InstallConfirmed,
    Installed,
    Metadata,
    SealedSecret,
    SecretRotated,
    Uninstalled,
    canonical_json,
)
from eventstore.store import RecordedEvent

LifecycleEvent = Literal["installed", "uninstalled", "enabled", "disabled"]
LIFECYCLE_EVENTS: Final[tuple[LifecycleEvent, ...]] = (
    "installed",
    "uninstalled",
    "enabled",
    "disabled",
)

# Payload fields with events of their own; every other field is a "detail".
CORE_FIELDS: Final = frozenset({"key", "clientKey", "baseUrl", "sharedSecret"})

Sealer = Callable[[str, str], SealedSecret]  # (plain secret, associated data) -> sealed


@dataclass(frozen=True, slots=True)
class TenantState:
    """What the ledger knows of one tenant: the fold of its stream."""

    stream_id: str
    version: int = 0
    status: Literal["new", "installed", "uninstalled"] = "new"
    enabled: bool = False
    key: str | None = None
    base_url: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    secret: SealedSecret | None = None
    # The version of the event that carried ``secret``: the secret opens only with
    # this event's associated data, so a ciphertext re-appended later does not.
    secret_version: int = 0
    descriptor_version: str | None = None
    last_iat: int | None = None

    @property
    def known(self) -> bool:
        return self.status != "new"


def initial_state(stream_id: str) -> TenantState:
    return TenantState(stream_id=stream_id)


def evolve(state: TenantState, event: RecordedEvent) -> TenantState:
    data = event.data
    iat = event.metadata.iat
    last_iat = state.last_iat if iat is None or (state.last_iat or 0) >= iat else iat
    state = replace(state, version=event.version, last_iat=last_iat)
    if isinstance(data, Installed):
        return replace(
            state,
            status="installed",
            enabled=True,
            key=data.key,
            base_url=data.base_url,
            details=dict(data.details),
            secret=data.shared_secret,
            secret_version=event.version,
            descriptor_version=event.metadata.descriptor_version,
        )
    if isinstance(data, SecretRotated):
        return replace(state, secret=data.shared_secret, secret_version=event.version)
    if isinstance(data, BaseUrlChanged):
        return replace(state, base_url=data.to)
    if isinstance(data, DescriptorUpgraded):
        return replace(state, descriptor_version=data.to)
    if isinstance(data, DetailsChanged):
        details = dict(state.details)
        for name, value in data.changes.items():
            if value is None:
                details.pop(name, None)
            else:
                details[name] = value
        return replace(state, details=details)
    if isinstance(data, Enabled):
        # Only an `installed` brings an uninstalled tenant back.
        return replace(state, enabled=state.status == "installed")
    if isinstance(data, Disabled | Uninstalled):
        status = "uninstalled" if isinstance(data, Uninstalled) else state.status
        return replace(state, enabled=False, status=status)
    return state  # InstallConfirmed


def fold(stream_id: str, events: Iterable[RecordedEvent]) -> TenantState:
    state = initial_state(stream_id)
    for event in events:
        state = evolve(state, event)
    return state


@dataclass(frozen=True, slots=True)
class LifecycleCall:
    """A call whose token has been verified; ``client_key`` is the token's ``iss``."""

    event: LifecycleEvent
    client_key: str
    payload: Mapping[str, Any]  # the body without sharedSecret
    shared_secret: str | None
    iat: int
    token_sha256: str
    descriptor_version: str | None
    metadata: Metadata


@dataclass(frozen=True, slots=True)
class Accept:
    events: list[EventData]


@dataclass(frozen=True, slots=True)
class Refuse:
    status: int
    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Ignore:
    """Answered 204 so the host stops retrying, but nothing is stored (rule 7)."""

    code: str
    detail: str


Decision = Accept | Refuse | Ignore


def decide(
    state: TenantState, call: LifecycleCall, current_secret: str | None, seal: Sealer
) -> Decision:
    """The events one verified call appends, or why it appends none.

    ``current_secret`` is the plain text of ``state.secret`` (None if there is none).
    """
    if state.last_iat is not None and call.iat < state.last_iat:
        return Refuse(
            409, "stale_call", "the token was issued before the tenant's last accepted call"
        )

    if call.event == "installed":
        return Accept(_decide_installed(state, call, current_secret, seal))

    if not state.known:
        return Ignore("unknown_tenant", f"{call.event} for a clientKey the ledger never installed")
    if call.event == "uninstalled":
        return Accept([Uninstalled()])
    if call.event == "enabled":
        return Accept([*_upgrade(state, call), Enabled()])
    return Accept([*_upgrade(state, call), Disabled()])


def _upgrade(state: TenantState, call: LifecycleCall) -> list[EventData]:
    """A DescriptorUpgraded when an installed tenant calls with another descriptor version.

    Every lifecycle URL carries ``?v=``; an uninstalled tenant's version is left alone.
    """
    if (
        state.status == "installed"
        and call.descriptor_version is not None
        and call.descriptor_version != state.descriptor_version
    ):
        return [DescriptorUpgraded(from_=state.descriptor_version, to=call.descriptor_version)]
    return []


def _decide_installed(
    state: TenantState, call: LifecycleCall, current_secret: str | None, seal: Sealer
) -> list[EventData]:
    payload = call.payload
    details = {k: v for k, v in payload.items() if k not in CORE_FIELDS}
    next_version = state.version + 1

    def sealed(version: int) -> SealedSecret | None:
        if call.shared_secret is None:
            return None
        return seal(call.shared_secret, secret_ad(state.stream_id, version))

    if state.status != "installed":
        return [
            Installed(
                key=str(payload["key"]),
                client_key=call.client_key,
                base_url=str(payload["baseUrl"]),
                shared_secret=sealed(next_version),
                details=details,
            )
        ]

    events: list[EventData] = []
    if call.shared_secret is not None and call.shared_secret != current_secret:
        rotated = sealed(state.version + len(events) + 1)
        assert rotated is not None
        events.append(SecretRotated(shared_secret=rotated))
    if payload["baseUrl"] != state.base_url:
        events.append(BaseUrlChanged(from_=state.base_url or "", to=str(payload["baseUrl"])))
    events.extend(_upgrade(state, call))
    # Compared as canonical JSON: Python's == would take 1 for true. An absent field
    # and a null one are alike (removal is recorded as null).
    changes = {
        k: v
        for k, v in details.items()
        if canonical_json(state.details.get(k)) != canonical_json(v)
    }
    changes.update({k: None for k in state.details if k not in details})
    if changes:
        events.append(DetailsChanged(changes=changes))
    return events or [InstallConfirmed()]
