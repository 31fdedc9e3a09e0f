"""The Connect tenant as a decider: SPEC §4 rules 4-7 and every event of §3. Pure.

The shell (``app.ingest``) checks the body (rule 1), reads the token (rule 2),
verifies an RS256 token with the install key (rule 3) and an HS256 token with the
tenant's current secret when it holds one, and hands ``decide`` a ``LifecycleCall``:
the verification's result, the current secret in plain text (or why there is none),
and what the call says. ``decide`` answers in SPEC §4's order; the first rule that
applies decides:

* a secret the call needs (to verify HS256, or to compare an ``installed`` with) whose
  data key does not unwrap → 503, retryable (``master_key_unavailable``,
  ``data_key_unreadable``);
* rule 4, HS256: a first install, or a reinstall, → 401 ``first_install_not_signed``;
  a clientKey the ledger never installed → 204 ``unknown_tenant``, no event; no
  current secret to verify with → 401 ``no_shared_secret``;
* rules 3-4: a token that did not verify → 401 with its reason;
* rule 6: a token accepted before → 204 ``duplicate``, no event; a token older than
  the tenant's last accepted call → 409 ``stale_call``;
* rule 7: ``uninstalled``/``enabled``/``disabled`` for a clientKey never installed →
  204 ``unknown_tenant``, no event;
* otherwise the events of SPEC §3, in the catalog's order.

Secrets leave ``decide`` in plain text (``WithSecret``); the shell seals them with
``sealed_rows``, bound to the stream and the version each event is appended at, after
the decision and before the append: this module never touches keys or randomness.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import msgspec

from app.ingest import shell
from app.ingest.connect.tokens import VerifiedToken
from app.ingest.shell import Append, Skip
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
from eventstore.values import NewEvent, RecordedEvent
from projections import tenants
from projections.model import TenantRow

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
    """What the ledger knows of one tenant: the fold of its stream.

    ``row`` is the tenant as the ``tenants`` read model shows it, folded by the
    projection's own rules (``projections.tenants.apply``): state, enabled, base
    URL and descriptor version are written once, there. The rest is what only the
    decider needs: the app key, every detail field, the sealed secret, the calls.
    """

    stream_id: str
    version: int = 0
    row: TenantRow | None = None  # None until the first Installed
    key: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    secret: SealedSecret | None = None
    # The version of the event that carried ``secret``: the secret opens only with
    # this event's associated data, so a ciphertext re-appended later does not.
    secret_version: int = 0
    last_iat: int | None = None
    # The SHA-256 of every token this tenant's calls were accepted with, and the mac
    # of the body it came with (None when recorded before bodies were told apart; rule 6).
    token_bodies: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def status(self) -> Literal["new", "installed", "uninstalled"]:
        return "new" if self.row is None else self.row.state

    @property
    def known(self) -> bool:
        return self.row is not None

    @property
    def forgotten(self) -> bool:
        """``ledger forget`` destroyed its data key, and no signed install came since."""
        return self.row is not None and self.row.forgotten_at is not None

    @property
    def held(self) -> bool:
        """Installed and not forgotten: a later ``installed`` updates the tenant; anything
        else (new, uninstalled, forgotten) is started afresh by a signed install."""
        return self.status == "installed" and not self.forgotten

    @property
    def enabled(self) -> bool:
        return self.row is not None and self.row.enabled

    @property
    def base_url(self) -> str | None:
        return None if self.row is None else self.row.base_url

    @property
    def descriptor_version(self) -> str | None:
        return None if self.row is None else self.row.descriptor_version


def initial_state(stream_id: str) -> TenantState:
    return TenantState(stream_id=stream_id)


def evolve(state: TenantState, event: RecordedEvent) -> TenantState:
    iat, sha = event.metadata.iat, event.metadata.token_sha256
    state = replace(
        state,
        version=event.version,
        row=tenants.apply(state.row, event),
        last_iat=state.last_iat if iat is None or (state.last_iat or 0) >= iat else iat,
        token_bodies=state.token_bodies
        if sha is None or sha in state.token_bodies
        else {**state.token_bodies, sha: event.metadata.body_mac},
    )
    data = event.data
    if isinstance(data, Installed):
        return replace(
            state,
            key=data.key,
            details=dict(data.details),
            secret=data.shared_secret,
            secret_version=event.version,
        )
    if isinstance(data, SecretRotated):
        return replace(state, secret=data.shared_secret, secret_version=event.version)
    if isinstance(data, DetailsChanged):
        details = dict(state.details)
        for name, value in data.changes.items():
            if value is None:
                details.pop(name, None)
            else:
                details[name] = value
        return replace(state, details=details)
    return state


def fold(stream_id: str, events: Iterable[RecordedEvent]) -> TenantState:
    state = initial_state(stream_id)
    for event in events:
        state = evolve(state, event)
    return state


@dataclass(frozen=True, slots=True)
class TokenRefused:
    """A token that did not verify (rules 3-4), or of an algorithm not accepted."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class NotVerifiable:
    """An HS256 token the shell could not check: it holds no secret of this clientKey."""


# A token whose signature and claims checked out (rule 5: its ``iss`` is the tenant),
# one that did not, or one the shell had no secret to check.
Verification = VerifiedToken | TokenRefused | NotVerifiable


@dataclass(frozen=True, slots=True)
class SecretUnavailable:
    """The tenant's data key is stored but does not unwrap: a configuration error (its
    master key was dropped from ``LEDGER_MASTER_KEY``) or damage, never a forgotten
    tenant."""

    code: Literal["master_key_unavailable", "data_key_unreadable"]
    detail: str


# The tenant's current secret as the shell found it: the plain text; None when there
# is none (never stored, forgotten, or bound to another event); or why it is unreadable.
CurrentSecret = str | SecretUnavailable | None


@dataclass(frozen=True, slots=True)
class LifecycleCall:
    """One lifecycle call as the shell hands it to ``decide``."""

    event: LifecycleEvent
    alg: str | None  # the token header's, verified or not
    verification: Verification
    payload: Mapping[str, Any]  # the body without sharedSecret
    shared_secret: str | None = field(repr=False)  # an ``installed`` call's new secret
    descriptor_version: str | None
    metadata: Metadata
    current_secret: CurrentSecret = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Refuse(shell.Refuse):
    """Refused with this answer status (SPEC §4 names one per rule)."""

    status: int


@dataclass(frozen=True, slots=True)
class WithSecret:
    """An ``Installed`` (``installed`` given, its ``shared_secret`` None) or a
    ``SecretRotated`` (``installed`` None), decided with the new secret in plain text."""

    secret: str = field(repr=False)
    installed: Installed | None = None

    def sealed(self, sealed: SealedSecret) -> Installed | SecretRotated:
        if self.installed is None:
            return SecretRotated(shared_secret=sealed)
        return msgspec.structs.replace(self.installed, shared_secret=sealed)


TenantEvent = EventData | WithSecret
Decision = shell.Decision[TenantEvent]


class TenantDecider:
    """The three functions of a ``tenant:<clientKey>`` stream, for ``app.ingest.shell``."""

    def initial_state(self, stream_id: str) -> TenantState:
        return initial_state(stream_id)

    def evolve(self, state: TenantState, event: RecordedEvent) -> TenantState:
        return evolve(state, event)

    def decide(self, state: TenantState, call: LifecycleCall) -> Decision:
        return decide(state, call)


DECIDER: Final = TenantDecider()


def decide(state: TenantState, call: LifecycleCall) -> Decision:
    """The events one call appends, or why it appends none: SPEC §4 in order."""
    verification = call.verification
    refused = _secret_unavailable(call) or _rule_4_hs256(state, call)
    if refused is not None:
        return refused
    if isinstance(verification, TokenRefused):
        return Refuse(verification.code, verification.detail, status=401)
    if not isinstance(verification, VerifiedToken):  # an HS256 call without a secret: rule 4
        return Refuse("no_shared_secret", "the tenant's secret is not available", status=401)
    return (
        _rule_6_replay(state, verification, call.metadata.body_mac)
        or _rule_7_unknown(state, call)
        or _accept(state, call, verification)
    )


def needs_secret(call: LifecycleCall) -> bool:
    """HS256 verification and an ``installed`` decision need the current secret: a
    signed uninstall goes through even while a master key is missing."""
    return call.alg == "HS256" or call.event == "installed"


def _secret_unavailable(call: LifecycleCall) -> Decision | None:
    secret = call.current_secret
    if isinstance(secret, SecretUnavailable) and needs_secret(call):
        return Refuse(secret.code, secret.detail, status=503)
    return None


def _rule_4_hs256(state: TenantState, call: LifecycleCall) -> Decision | None:
    """HS256 only for a clientKey the ledger holds, verified with its current secret."""
    if call.alg != "HS256":
        return None
    # A reinstall after an uninstall (or after `ledger forget`) starts the tenant
    # afresh (a new Installed with a new secret), so like a first install it must be
    # signed by Atlassian: an old secret must not buy a new tenancy.
    if call.event == "installed" and not state.held:
        return Refuse(
            "first_install_not_signed",
            "a first install, or a reinstall, must be signed by Atlassian (RS256)",
            status=401,
        )
    if not state.known:  # rule 7: nothing to verify with, nothing will be stored
        return _unknown_tenant(call)
    return None


TOKEN_REUSED_DETAIL: Final = "this token was already used with another body"  # noqa: S105 - words


def _rule_6_replay(
    state: TenantState, token: VerifiedToken, body_mac: str | None
) -> Decision | None:
    if token.sha256 in state.token_bodies:
        earlier = state.token_bodies[token.sha256]
        if earlier is None or body_mac is None or earlier == body_mac:
            return Skip("duplicate")
        # A copy raced in (or was replayed) with another body: never silent.
        return Refuse("token_reused", TOKEN_REUSED_DETAIL, status=409)
    if state.last_iat is not None and token.iat < state.last_iat:
        return Refuse(
            "stale_call",
            "the token was issued before the tenant's last accepted call",
            status=409,
        )
    return None


def _rule_7_unknown(state: TenantState, call: LifecycleCall) -> Decision | None:
    if call.event != "installed" and not state.known:
        return _unknown_tenant(call)
    return None


def _unknown_tenant(call: LifecycleCall) -> Skip:
    return Skip("unknown_tenant", f"{call.event} for a clientKey the ledger never installed")


def _accept(state: TenantState, call: LifecycleCall, token: VerifiedToken) -> Decision:
    events: list[TenantEvent]
    if call.event == "installed":
        events = _installed(state, call, token)
    elif call.event == "uninstalled":
        events = [Uninstalled()]
    elif call.event == "enabled":
        events = [*_upgrade(state, call), Enabled()]
    else:
        events = [*_upgrade(state, call), Disabled()]
    return Append(events, call.metadata, idempotency_key=token.sha256)


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


def _installed(state: TenantState, call: LifecycleCall, token: VerifiedToken) -> list[TenantEvent]:
    payload = call.payload
    details = {k: v for k, v in payload.items() if k not in CORE_FIELDS}
    if not state.held:  # new, uninstalled or forgotten: a fresh tenancy, a new data key
        installed = Installed(
            key=str(payload["key"]),
            client_key=token.iss,
            base_url=str(payload["baseUrl"]),
            shared_secret=None,
            details=details,
        )
        if call.shared_secret is None:
            return [installed]
        return [WithSecret(call.shared_secret, installed)]

    events: list[TenantEvent] = []
    current = call.current_secret if isinstance(call.current_secret, str) else None
    if call.shared_secret is not None and call.shared_secret != current:
        events.append(WithSecret(call.shared_secret))
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


def sealed_rows(
    stream_id: str, version: int, decision: Append[TenantEvent], seal: Sealer
) -> list[NewEvent]:
    """The rows of a decision appended after ``version``: each new secret sealed with
    the associated data of the event that carries it (stream and version), so that a
    ciphertext copied into another event does not open."""
    rows = []
    for offset, event in enumerate(decision.events, start=1):
        if isinstance(event, WithSecret):
            event = event.sealed(seal(event.secret, secret_ad(stream_id, version + offset)))
        rows.append(NewEvent(event, decision.metadata))
    return rows
