"""The tenant decider (``app.lifecycle``) tested with plain values: SPEC §3 and §4 rules 5-7.

No store, no keys, no clock: the shell's pure step (``app.ingest.shell.plan_with``) decides over
a list of ``RecordedEvent``s, and secrets are "sealed" by a deterministic fake whose
ciphertext is ``"ct:" + secret`` (``tests.log_builder.FakeKeys``).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest import shell
from app.ingest.connect.decider import (
    DECIDER,
    Decision,
    LifecycleCall,
    LifecycleEvent,
    NotVerifiable,
    Refuse,
    SecretUnavailable,
    TenantState,
    TokenRefused,
    WithSecret,
    evolve,
    fold,
    initial_state,
)
from app.ingest.shell import Append, Skip
from eventstore.events import (
    SCHEMA_VERSIONS,
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
    data_to_json,
)
from eventstore.values import NewEvent, RecordedEvent
from tests.log_builder import FakeKeys, fake_seal, verified_call

APP_KEY = "tenant-ledger"
CLIENT_KEY = "jira:6f1a2b3c-0000-4000-8000-000000000001"
STREAM = f"tenant:{CLIENT_KEY}"
URL = "https://acme.atlassian.net"
URL2 = "https://acme-renamed.atlassian.net"
T0 = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
IAT0 = 1_700_000_000

_MISSING: Any = object()


# ---------------------------------------------------------------- helpers


def current_secret(state: TenantState) -> str | None:
    return state.secret.ct[3:] if state.secret is not None else None


def sealed(secret: str, version: int) -> SealedSecret:
    return fake_seal(secret, f"{STREAM}#{version}")


def recorded(
    data: EventData,
    *,
    version: int,
    iat: int | None = None,
    descriptor_version: str | None = None,
    position: int | None = None,
    stream_id: str = STREAM,
    metadata: Metadata | None = None,
) -> RecordedEvent:
    event_type = type(data).__name__
    return RecordedEvent(
        position=version if position is None else position,
        stream_id=stream_id,
        version=version,
        type=event_type,
        schema_version=SCHEMA_VERSIONS[event_type],
        data=data,
        metadata=metadata or Metadata(iat=iat, descriptor_version=descriptor_version),
        recorded_at=T0 + timedelta(minutes=version),
        hash="0" * 64,
    )


def body(**changes: Any) -> dict[str, Any]:
    """A realistic installed payload (without sharedSecret); ``_MISSING`` drops a field."""
    value: dict[str, Any] = {
        "key": APP_KEY,
        "clientKey": CLIENT_KEY,
        "baseUrl": URL,
        "displayUrl": URL,
        "productType": "jira",
        "description": "Atlassian JIRA at https://acme.atlassian.net",
        "serverVersion": "100236",
        "pluginsVersion": "1001.0.0-SNAPSHOT",
        "eventType": "installed",
    }
    for name, new in changes.items():
        if new is _MISSING:
            value.pop(name, None)
        else:
            value[name] = new
    return value


def details_of(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in ("key", "clientKey", "baseUrl")}


_TOKENS = itertools.count()


def make_call(
    event: LifecycleEvent = "installed",
    *,
    payload: dict[str, Any] | None = None,
    secret: str | None = "secret-1",  # noqa: S107
    iat: int = IAT0,
    dv: str | None = "1",
    client_key: str = CLIENT_KEY,
    alg: str = "RS256",
) -> LifecycleCall:
    """A verified call; every call carries a token of its own (see ``replayed``)."""
    if payload is None:
        payload = body(eventType=event)
    sha = f"sha-{event}-{iat}-{next(_TOKENS)}"
    return verified_call(
        event,
        client_key,
        payload,
        secret=secret,
        iat=iat,
        sha256=sha,
        descriptor_version=dv,
        metadata=Metadata(call_id=f"call-{iat}", token_sha256=sha, iat=iat, descriptor_version=dv),
        alg=alg,
    )


@dataclass
class Ledger:
    """One tenant's stream: plan with the shell's pure step, append what was accepted."""

    stream_id: str = STREAM
    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def state(self) -> TenantState:
        return fold(self.stream_id, self.events)

    def plan(self, call: LifecycleCall, keys: FakeKeys | None = None) -> shell.Plan[TenantState]:
        return shell.plan_with(DECIDER, self.stream_id, self.events, keys or FakeKeys(call))

    def decide(self, call: LifecycleCall) -> Decision:
        return self.plan(call).decision

    def append(self, rows: list[NewEvent]) -> list[EventData]:
        for row in rows:
            self.events.append(
                recorded(
                    row.data,
                    version=len(self.events) + 1,
                    stream_id=self.stream_id,
                    metadata=row.metadata,
                )
            )
        return [row.data for row in rows]

    def handle(self, call: LifecycleCall) -> Decision:
        step = self.plan(call)
        self.append(step.new_events())
        return step.decision

    def accept(self, call: LifecycleCall) -> list[EventData]:
        step = self.plan(call)
        assert isinstance(step.decision, Append), step.decision
        return self.append(step.new_events())


def installed_ledger(**changes: Any) -> Ledger:
    """A tenant installed by one call (version 1, descriptor "1", secret "secret-1")."""
    ledger = Ledger()
    ledger.accept(make_call(payload=body(**changes)))
    return ledger


# ---------------------------------------------------------------- Installed


def test_first_install_appends_installed_with_every_payload_field() -> None:
    payload = body(
        entitlementId="ent-1",
        serviceEntitlementNumber="SEN-1",
        oauthClientId="oauth-1",
        installationId="ari:cloud:ecosystem::installation/1",
        futureField={"nested": [1, "two", None, {"deep": True}]},
    )
    events = Ledger().accept(make_call(payload=payload, secret="s3cr3t"))

    assert events == [
        Installed(
            key=APP_KEY,
            client_key=CLIENT_KEY,
            base_url=URL,
            shared_secret=SealedSecret(
                alg="A256GCM", nonce="n", ct="ct:s3cr3t", ad=f"tenant:{CLIENT_KEY}#1"
            ),
            details=details_of(payload),
        )
    ]
    installed = events[0]
    assert isinstance(installed, Installed)
    assert installed.details["futureField"] == {"nested": [1, "two", None, {"deep": True}]}
    assert {"key", "clientKey", "baseUrl", "sharedSecret"}.isdisjoint(installed.details)


def test_first_install_folds_to_an_installed_enabled_tenant() -> None:
    ledger = Ledger()
    ledger.accept(make_call(secret="s3cr3t", iat=IAT0 + 5, dv="7"))
    state = ledger.state

    assert state.known
    assert state.status == "installed"
    assert state.enabled is True
    assert state.version == 1
    assert state.key == APP_KEY
    assert state.base_url == URL
    assert dict(state.details) == details_of(body())
    assert state.descriptor_version == "7"
    assert state.last_iat == IAT0 + 5
    assert current_secret(state) == "s3cr3t"
    assert state.secret is not None and state.secret.ad == f"{STREAM}#1"


def test_first_install_never_keeps_a_plain_shared_secret_in_details() -> None:
    # The payload handed to decide should already lack sharedSecret; even if it does not,
    # the plain text must not reach the event.
    payload = body(sharedSecret="plain-text-secret")
    events = Ledger().accept(make_call(payload=payload, secret="plain-text-secret"))

    assert len(events) == 1
    assert b"plain-text-secret" not in msgspec.json.encode(events[0]).replace(
        b"ct:plain-text-secret", b""
    )
    assert b"plain-text-secret" not in data_to_json(events[0]).replace(b"ct:plain-text-secret", b"")


def test_installed_takes_the_client_key_from_the_verified_call() -> None:
    # Rule 5: the stream (and the identity) is the verified iss, not whatever the body says.
    payload = body(clientKey="someone-else")
    (installed,) = Ledger().accept(make_call(payload=payload))

    assert isinstance(installed, Installed)
    assert installed.client_key == CLIENT_KEY
    assert "clientKey" not in installed.details


def test_first_install_without_a_descriptor_version_records_none() -> None:
    ledger = Ledger()
    events = ledger.accept(make_call(dv=None))

    assert [type(e) for e in events] == [Installed]
    assert ledger.state.descriptor_version is None


def test_reinstall_after_uninstall_is_a_new_installed_event() -> None:
    ledger = installed_ledger(futureField="old")
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))
    assert ledger.state.status == "uninstalled"

    payload = body(baseUrl=URL2, productType="confluence", futureField=_MISSING, newField=1)
    events = ledger.accept(make_call(payload=payload, secret="secret-2", iat=IAT0 + 2, dv="2"))

    assert events == [
        Installed(
            key=APP_KEY,
            client_key=CLIENT_KEY,
            base_url=URL2,
            shared_secret=sealed("secret-2", 3),
            details=details_of(payload),
        )
    ]
    state = ledger.state
    assert state.status == "installed"
    assert state.enabled is True
    assert state.base_url == URL2
    assert dict(state.details) == details_of(payload)  # replaced, nothing carried over
    assert "futureField" not in state.details
    assert state.descriptor_version == "2"
    assert current_secret(state) == "secret-2"
    assert state.version == 3


def test_reinstall_after_uninstall_with_identical_payload_is_still_installed() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))

    events = ledger.accept(make_call(iat=IAT0 + 2))

    assert [type(e) for e in events] == [Installed]
    assert isinstance(events[0], Installed)
    assert events[0].shared_secret == sealed("secret-1", 3)


# ---------------------------------------------------------------- SecretRotated


def test_new_secret_appends_secret_rotated_bound_to_its_version() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(secret="secret-2", iat=IAT0 + 1))

    assert events == [SecretRotated(shared_secret=sealed("secret-2", 2))]
    assert current_secret(ledger.state) == "secret-2"


def test_rotation_ad_follows_the_stream_version() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("disabled", iat=IAT0 + 1))
    ledger.accept(make_call("enabled", iat=IAT0 + 2))
    assert ledger.state.version == 3

    events = ledger.accept(make_call(secret="secret-2", iat=IAT0 + 3))

    assert events == [SecretRotated(shared_secret=sealed("secret-2", 4))]
    assert ledger.events[-1].version == 4


def test_same_secret_does_not_rotate() -> None:
    ledger = installed_ledger()
    assert ledger.accept(make_call(secret="secret-1", iat=IAT0 + 1)) == [InstallConfirmed()]


def test_installed_without_a_secret_keeps_the_stored_one() -> None:
    ledger = installed_ledger()
    assert ledger.accept(make_call(secret=None, iat=IAT0 + 1)) == [InstallConfirmed()]
    assert current_secret(ledger.state) == "secret-1"


def test_rotation_is_judged_against_the_current_secret() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call(secret="secret-2", iat=IAT0 + 1))

    # secret-1 is no longer current: going back to it is a rotation again
    events = ledger.accept(make_call(secret="secret-1", iat=IAT0 + 2))

    assert events == [SecretRotated(shared_secret=sealed("secret-1", 3))]


def test_rotation_when_the_current_secret_is_unreadable() -> None:
    # After `ledger forget` the shell passes current_secret=None: a call carrying a secret
    # stores it anew rather than silently keeping an unreadable one.
    ledger = installed_ledger()
    call = make_call(secret="secret-1", iat=IAT0 + 1)
    step = ledger.plan(call, FakeKeys(call, reveal=lambda _sealed: None))

    assert [row.data for row in step.new_events()] == [
        SecretRotated(shared_secret=sealed("secret-1", 2))
    ]


# ---------------------------------------------------------------- BaseUrlChanged


def test_new_base_url_appends_base_url_changed() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(payload=body(baseUrl=URL2), iat=IAT0 + 1))

    assert events == [BaseUrlChanged(from_=URL, to=URL2)]
    assert ledger.state.base_url == URL2
    assert ledger.state.status == "installed"


def test_base_url_changes_twice() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call(payload=body(baseUrl=URL2), iat=IAT0 + 1))

    events = ledger.accept(make_call(payload=body(baseUrl=URL), iat=IAT0 + 2))

    assert events == [BaseUrlChanged(from_=URL2, to=URL)]
    assert ledger.state.base_url == URL


# ---------------------------------------------------------------- DescriptorUpgraded


def test_installed_with_another_descriptor_version_appends_descriptor_upgraded() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(iat=IAT0 + 1, dv="2"))

    assert events == [DescriptorUpgraded(from_="1", to="2")]
    assert ledger.state.descriptor_version == "2"


def test_descriptor_upgrade_from_an_unknown_version() -> None:
    ledger = Ledger()
    ledger.accept(make_call(dv=None))

    events = ledger.accept(make_call(iat=IAT0 + 1, dv="1"))

    assert events == [DescriptorUpgraded(from_=None, to="1")]
    assert ledger.state.descriptor_version == "1"


def test_call_without_descriptor_version_does_not_downgrade() -> None:
    ledger = installed_ledger()

    assert ledger.accept(make_call(iat=IAT0 + 1, dv=None)) == [InstallConfirmed()]
    assert ledger.state.descriptor_version == "1"


@pytest.mark.parametrize(("event", "marker"), [("enabled", Enabled()), ("disabled", Disabled())])
def test_enabled_or_disabled_with_another_version_upgrades_an_installed_tenant(
    event: LifecycleEvent, marker: EventData
) -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(event, iat=IAT0 + 1, dv="2"))

    assert events == [DescriptorUpgraded(from_="1", to="2"), marker]
    assert ledger.state.descriptor_version == "2"


@pytest.mark.parametrize(("event", "marker"), [("enabled", Enabled()), ("disabled", Disabled())])
def test_enabled_or_disabled_with_the_same_version_does_not_upgrade(
    event: LifecycleEvent, marker: EventData
) -> None:
    ledger = installed_ledger()
    assert ledger.accept(make_call(event, iat=IAT0 + 1, dv="1")) == [marker]
    assert ledger.accept(make_call(event, iat=IAT0 + 2, dv=None)) == [marker]


def test_uninstalled_call_with_another_version_does_not_upgrade() -> None:
    ledger = installed_ledger()

    assert ledger.accept(make_call("uninstalled", iat=IAT0 + 1, dv="2")) == [Uninstalled()]
    assert ledger.state.descriptor_version == "1"


@pytest.mark.parametrize(("event", "marker"), [("enabled", Enabled()), ("disabled", Disabled())])
def test_an_uninstalled_tenant_is_not_upgraded(event: LifecycleEvent, marker: EventData) -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))

    assert ledger.accept(make_call(event, iat=IAT0 + 2, dv="2")) == [marker]
    assert ledger.state.descriptor_version == "1"


# ---------------------------------------------------------------- DetailsChanged


def test_new_detail_field_is_a_details_change() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(payload=body(entitlementId="ent-42"), iat=IAT0 + 1))

    assert events == [DetailsChanged(changes={"entitlementId": "ent-42"})]
    assert ledger.state.details["entitlementId"] == "ent-42"


def test_changed_detail_field_lists_only_that_field() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(payload=body(serverVersion="100300"), iat=IAT0 + 1))

    assert events == [DetailsChanged(changes={"serverVersion": "100300"})]
    assert ledger.state.details == details_of(body(serverVersion="100300"))


def test_removed_detail_field_is_recorded_as_none_and_dropped_from_the_state() -> None:
    ledger = installed_ledger()

    events = ledger.accept(make_call(payload=body(description=_MISSING), iat=IAT0 + 1))

    assert events == [DetailsChanged(changes={"description": None})]
    assert "description" not in ledger.state.details
    assert ledger.state.details == details_of(body(description=_MISSING))


def test_added_changed_and_removed_fields_in_one_details_change() -> None:
    ledger = installed_ledger(futureField={"a": [1, 2]})
    payload = body(
        futureField={"a": [1, 2, 3]},  # a field Atlassian adds later, changed
        displayUrl="https://help.acme.com",
        pluginsVersion=_MISSING,
        oauthClientId="oauth-9",
    )

    events = ledger.accept(make_call(payload=payload, iat=IAT0 + 1))

    assert events == [
        DetailsChanged(
            changes={
                "futureField": {"a": [1, 2, 3]},
                "displayUrl": "https://help.acme.com",
                "pluginsVersion": None,
                "oauthClientId": "oauth-9",
            }
        )
    ]
    assert ledger.state.details == details_of(payload)


@pytest.mark.parametrize(
    ("before", "after"),
    [(1, True), (0, False), (True, 1), ([1], [True]), ({"a": 0}, {"a": False})],
)
def test_detail_changing_between_numbers_and_booleans_is_a_change(before: Any, after: Any) -> None:
    # Python's == takes 1 for True; JSON does not.
    ledger = installed_ledger(licenseTier=before)

    events = ledger.accept(make_call(payload=body(licenseTier=after), iat=IAT0 + 1))

    assert events == [DetailsChanged(changes={"licenseTier": after})]
    assert msgspec.json.encode(ledger.state.details["licenseTier"]) == msgspec.json.encode(after)


# ---------------------------------------------------------------- InstallConfirmed


def test_installed_that_changes_nothing_is_install_confirmed() -> None:
    ledger = installed_ledger()
    before = ledger.state

    events = ledger.accept(make_call(iat=IAT0 + 1))

    assert events == [InstallConfirmed()]
    after = ledger.state
    assert after.version == 2
    assert after.last_iat == IAT0 + 1
    assert (after.base_url, after.details, after.secret, after.descriptor_version) == (
        before.base_url,
        before.details,
        before.secret,
        before.descriptor_version,
    )


def test_field_order_is_not_a_change() -> None:
    ledger = installed_ledger()
    reordered = dict(reversed(list(body().items())))

    assert ledger.accept(make_call(payload=reordered, iat=IAT0 + 1)) == [InstallConfirmed()]


# ---------------------------------------------------------------- several changes at once


def test_several_changes_in_one_call_in_catalog_order() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("enabled", iat=IAT0 + 1))
    payload = body(baseUrl=URL2, displayUrl=URL2, description=_MISSING)

    events = ledger.accept(make_call(payload=payload, secret="secret-2", iat=IAT0 + 2, dv="3"))

    assert events == [
        SecretRotated(shared_secret=sealed("secret-2", 3)),
        BaseUrlChanged(from_=URL, to=URL2),
        DescriptorUpgraded(from_="1", to="3"),
        DetailsChanged(changes={"displayUrl": URL2, "description": None}),
    ]
    assert [e.version for e in ledger.events] == [1, 2, 3, 4, 5, 6]
    state = ledger.state
    assert state.version == 6
    assert current_secret(state) == "secret-2"
    assert state.secret is not None and state.secret.ad == f"{STREAM}#3"
    assert state.base_url == URL2
    assert state.descriptor_version == "3"
    assert state.details == details_of(payload)


# ---------------------------------------------------------------- Enabled / Disabled / Uninstalled


def test_disabled_then_enabled() -> None:
    ledger = installed_ledger()

    assert ledger.accept(make_call("disabled", iat=IAT0 + 1)) == [Disabled()]
    assert ledger.state.enabled is False
    assert ledger.state.status == "installed"

    assert ledger.accept(make_call("enabled", iat=IAT0 + 2)) == [Enabled()]
    assert ledger.state.enabled is True


def test_uninstalled_call() -> None:
    ledger = installed_ledger()

    assert ledger.accept(make_call("uninstalled", iat=IAT0 + 1)) == [Uninstalled()]
    state = ledger.state
    assert state.status == "uninstalled"
    assert state.enabled is False
    assert state.known
    # the record of who the tenant was stays
    assert state.base_url == URL
    assert current_secret(state) == "secret-1"


def test_uninstalled_twice_appends_again() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))

    assert ledger.accept(make_call("uninstalled", iat=IAT0 + 2)) == [Uninstalled()]
    assert ledger.state.status == "uninstalled"


def test_disabled_racing_in_after_uninstalled_does_not_bring_the_tenant_back() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))

    assert ledger.accept(make_call("disabled", iat=IAT0 + 2)) == [Disabled()]
    assert (ledger.state.status, ledger.state.enabled) == ("uninstalled", False)


def test_enabled_after_uninstalled_does_not_bring_the_tenant_back() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 1))

    assert ledger.accept(make_call("enabled", iat=IAT0 + 2)) == [Enabled()]
    assert (ledger.state.status, ledger.state.enabled) == ("uninstalled", False)


@pytest.mark.parametrize("event", ["uninstalled", "enabled", "disabled"])
@pytest.mark.parametrize("dv", [None, "2"])
def test_unknown_tenant_is_ignored(event: LifecycleEvent, dv: str | None) -> None:
    decision = Ledger().decide(make_call(event, dv=dv))

    assert isinstance(decision, Skip)
    assert decision.code == "unknown_tenant"


# ---------------------------------------------------------------- stale calls (rule 6)


@pytest.mark.parametrize("event", ["installed", "uninstalled", "enabled", "disabled"])
def test_call_older_than_the_last_accepted_one_is_refused(event: LifecycleEvent) -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("enabled", iat=IAT0 + 10))
    before = list(ledger.events)

    decision = ledger.handle(make_call(event, secret="old-secret", iat=IAT0 + 9))

    assert isinstance(decision, Refuse)
    assert (decision.status, decision.code) == (409, "stale_call")
    assert ledger.events == before


@pytest.mark.parametrize("event", ["installed", "uninstalled", "enabled", "disabled"])
def test_stale_call_for_an_uninstalled_tenant_is_refused(event: LifecycleEvent) -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("uninstalled", iat=IAT0 + 10))

    decision = ledger.decide(make_call(event, iat=IAT0 + 3))

    assert isinstance(decision, Refuse)
    assert (decision.status, decision.code) == (409, "stale_call")


@pytest.mark.parametrize("event", ["installed", "uninstalled", "enabled", "disabled"])
def test_call_with_the_same_iat_as_the_last_one_is_accepted(event: LifecycleEvent) -> None:
    ledger = installed_ledger()
    ledger.accept(make_call("enabled", iat=IAT0 + 10))

    decision = ledger.handle(make_call(event, iat=IAT0 + 10))

    assert isinstance(decision, Append)
    assert len(decision.events) >= 1
    assert ledger.state.last_iat == IAT0 + 10


def test_an_old_captured_install_cannot_roll_the_secret_back() -> None:
    ledger = installed_ledger()
    ledger.accept(make_call(secret="secret-2", iat=IAT0 + 100))

    decision = ledger.handle(make_call(secret="secret-1", iat=IAT0 + 50))

    assert isinstance(decision, Refuse)
    assert current_secret(ledger.state) == "secret-2"


# ---------------------------------------------------------------- replays (rule 6)


def test_a_token_accepted_before_is_a_duplicate_even_when_older_than_the_last() -> None:
    ledger = installed_ledger()
    first = make_call("disabled", iat=IAT0 + 10)
    second = make_call("enabled", iat=IAT0 + 20)
    ledger.accept(first)
    ledger.accept(second)
    before = list(ledger.events)

    for again in (first, second):
        decision = ledger.handle(again)
        assert decision == Skip("duplicate")
    assert ledger.events == before


def test_a_repeated_first_install_is_a_duplicate() -> None:
    ledger = Ledger()
    call = make_call(secret="s3cr3t")
    ledger.accept(call)
    assert ledger.handle(call) == Skip("duplicate")
    assert len(ledger.events) == 1


# ---------------------------------------------------------------- what the shell verified


def unverifiable(call: LifecycleCall) -> LifecycleCall:
    """An HS256 call the shell had no secret to verify with."""
    return replace(call, alg="HS256", verification=NotVerifiable())


def test_the_decider_emits_new_secrets_in_plain_text() -> None:
    ledger = Ledger()
    first = ledger.decide(make_call(secret="s3cr3t"))
    assert isinstance(first, Append)
    (installing,) = first.events
    assert isinstance(installing, WithSecret) and installing.secret == "s3cr3t"
    assert installing.installed is not None and installing.installed.shared_secret is None
    assert "s3cr3t" not in repr(installing)

    ledger = installed_ledger()
    rotation = ledger.decide(make_call(secret="secret-2", iat=IAT0 + 1))
    assert isinstance(rotation, Append)
    assert list(rotation.events) == [WithSecret("secret-2")]


@pytest.mark.parametrize("uninstalled_first", [False, True])
def test_an_hs256_first_install_or_reinstall_is_refused(uninstalled_first: bool) -> None:
    ledger = Ledger()
    if uninstalled_first:
        ledger = installed_ledger()
        ledger.accept(make_call("uninstalled", iat=IAT0 + 1))
    # Even with the old secret verifying it, a reinstall must be signed.
    for call in (make_call(alg="HS256", iat=IAT0 + 2), unverifiable(make_call(iat=IAT0 + 2))):
        decision = ledger.decide(call)
        assert isinstance(decision, Refuse)
        assert (decision.status, decision.code) == (401, "first_install_not_signed")


@pytest.mark.parametrize("event", ["uninstalled", "enabled", "disabled"])
def test_an_hs256_call_for_an_unknown_tenant_is_skipped(event: LifecycleEvent) -> None:
    decision = Ledger().decide(unverifiable(make_call(event)))
    assert isinstance(decision, Skip) and decision.code == "unknown_tenant"


def test_an_hs256_call_without_a_current_secret_is_refused() -> None:
    ledger = installed_ledger()
    decision = ledger.decide(unverifiable(make_call("enabled", iat=IAT0 + 1)))
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.code) == (401, "no_shared_secret")


@pytest.mark.parametrize("alg", ["RS256", "HS256"])
def test_a_token_that_did_not_verify_is_refused_with_its_reason(alg: str) -> None:
    ledger = installed_ledger()
    call = make_call("enabled", iat=IAT0 + 1, alg=alg)
    refused = replace(call, verification=TokenRefused("invalid_signature", "bad"))
    decision = ledger.decide(refused)
    assert isinstance(decision, Refuse)
    assert (decision.status, decision.code, decision.detail) == (401, "invalid_signature", "bad")


@pytest.mark.parametrize(
    ("event", "alg", "refused"),
    [
        ("enabled", "HS256", True),
        ("installed", "RS256", True),
        ("uninstalled", "RS256", False),  # a signed uninstall needs no secret
        ("disabled", "RS256", False),
    ],
)
def test_a_secret_that_cannot_be_read_refuses_only_calls_that_need_it(
    event: LifecycleEvent, alg: str, refused: bool
) -> None:
    ledger = installed_ledger()
    call = make_call(event, iat=IAT0 + 1, alg=alg)
    missing = SecretUnavailable("master_key_unavailable", "retry later")
    decision = ledger.plan(call, FakeKeys(call, reveal=lambda _sealed: missing)).decision
    if refused:
        assert isinstance(decision, Refuse)
        assert (decision.status, decision.code) == (503, "master_key_unavailable")
    else:
        assert isinstance(decision, Append)


# ---------------------------------------------------------------- evolve / fold


def body_installed(**details: Any) -> Installed:
    return Installed(
        key=APP_KEY,
        client_key=CLIENT_KEY,
        base_url=URL,
        shared_secret=sealed("secret-1", 1),
        details=details,
    )


def test_fold_of_nothing_is_the_initial_state() -> None:
    state = fold(STREAM, [])
    assert state == initial_state(STREAM)
    assert not state.known
    assert (state.version, state.status, state.enabled, state.last_iat) == (0, "new", False, None)


def test_evolve_disabled_after_uninstalled_stays_uninstalled_and_disabled() -> None:
    state = fold(
        STREAM,
        [
            recorded(body_installed(), version=1, iat=IAT0),
            recorded(Uninstalled(), version=2, iat=IAT0 + 1),
            recorded(Disabled(), version=3, iat=IAT0 + 2),
        ],
    )
    assert (state.status, state.enabled, state.version) == ("uninstalled", False, 3)


def test_evolve_enabled_after_uninstalled_stays_uninstalled() -> None:
    state = fold(
        STREAM,
        [
            recorded(body_installed(), version=1, iat=IAT0),
            recorded(Uninstalled(), version=2, iat=IAT0 + 1),
            recorded(Enabled(), version=3, iat=IAT0 + 2),
        ],
    )
    assert (state.status, state.enabled, state.version) == ("uninstalled", False, 3)


def test_evolve_last_iat_is_the_largest_iat_seen() -> None:
    events = [
        recorded(body_installed(), version=1, iat=IAT0 + 10),
        recorded(Disabled(), version=2, iat=IAT0 + 30),
        recorded(Enabled(), version=3, iat=IAT0 + 20),
        recorded(InstallConfirmed(), version=4, iat=None),
    ]
    assert [fold(STREAM, events[:n]).last_iat for n in range(1, 5)] == [
        IAT0 + 10,
        IAT0 + 30,
        IAT0 + 30,
        IAT0 + 30,
    ]


def test_evolve_details_changed_sets_and_removes() -> None:
    state = evolve(
        evolve(initial_state(STREAM), recorded(body_installed(a="1", b="2"), version=1)),
        recorded(DetailsChanged(changes={"a": None, "b": "3", "c": [1]}), version=2),
    )
    assert dict(state.details) == {"b": "3", "c": [1]}


def test_evolve_does_not_mutate_the_previous_state() -> None:
    first = evolve(initial_state(STREAM), recorded(body_installed(a="1"), version=1))
    evolve(first, recorded(DetailsChanged(changes={"a": None, "z": "9"}), version=2))
    assert dict(first.details) == {"a": "1"}


def test_evolve_installed_takes_the_descriptor_version_from_metadata() -> None:
    state = evolve(
        initial_state(STREAM), recorded(body_installed(), version=1, descriptor_version="5")
    )
    assert state.descriptor_version == "5"


# ---------------------------------------------------------------- property: random call sequences

SECRETS = ("alpha-zulu-secret", "bravo-yankee-secret", "charlie-xray-secret")
BASE_URLS = ("https://one.atlassian.net", "https://two.atlassian.net", "https://three.jira.com")
VERSIONS = (None, "1", "2", "3")
DETAIL_VALUES: dict[str, tuple[Any, ...]] = {
    "displayUrl": ("https://one.atlassian.net", "https://help.example.com"),
    "productType": ("jira", "confluence"),
    "serverVersion": ("100", "200"),
    "futureField": ("x", "y"),
}


def opaque_seal(secret: str, ad: str) -> SealedSecret:
    """A reversible fake whose ciphertext does not contain the plain text."""
    return SealedSecret(alg="A256GCM", nonce="n", ct="ct:" + secret.encode().hex(), ad=ad)


def opaque_reveal(sealed: SealedSecret) -> str:
    return bytes.fromhex(sealed.ct[3:]).decode()


def opaque_current(state: TenantState) -> str | None:
    return opaque_reveal(state.secret) if state.secret is not None else None


@dataclass(frozen=True)
class CallSpec:
    event: LifecycleEvent
    base_url: str
    secret: str | None
    dv: str | None
    details: dict[str, Any]
    iat_step: int
    secret_in_payload: bool


def _iat_step(n: int) -> int:
    """Mostly a few seconds later, now and then 5-15 s earlier (a stale call)."""
    return n if n >= 0 else 5 * n


call_specs = st.builds(
    CallSpec,
    event=st.sampled_from(
        ("installed", "uninstalled", "enabled", "disabled", "installed", "installed")
    ),
    base_url=st.sampled_from(BASE_URLS),
    secret=st.one_of(st.sampled_from(SECRETS), st.sampled_from(SECRETS), st.none()),
    dv=st.sampled_from(VERSIONS),
    details=st.fixed_dictionaries(
        {},
        optional={name: st.sampled_from(values) for name, values in DETAIL_VALUES.items()},
    ),
    iat_step=st.integers(min_value=-3, max_value=30).map(_iat_step),
    secret_in_payload=st.booleans(),
)


def _expected_events(model: dict[str, Any], spec: CallSpec) -> list[type[Any]]:
    upgrade = (
        model["status"] == "installed" and spec.dv is not None and spec.dv != model["descriptor"]
    )
    if spec.event == "installed":
        if model["status"] != "installed":
            return [Installed]
        types: list[type[Any]] = []
        if spec.secret is not None and spec.secret != model["secret"]:
            types.append(SecretRotated)
        if spec.base_url != model["base_url"]:
            types.append(BaseUrlChanged)
        if upgrade:
            types.append(DescriptorUpgraded)
        if spec.details != model["details"]:
            types.append(DetailsChanged)
        return types or [InstallConfirmed]
    if spec.event == "uninstalled":
        return [Uninstalled]
    marker = Enabled if spec.event == "enabled" else Disabled
    return [DescriptorUpgraded, marker] if upgrade else [marker]


def _apply_to_model(model: dict[str, Any], spec: CallSpec, iat: int) -> None:
    upgrade = (
        model["status"] == "installed" and spec.dv is not None and spec.dv != model["descriptor"]
    )
    if spec.event == "installed":
        if model["status"] != "installed":
            model.update(
                status="installed",
                enabled=True,
                base_url=spec.base_url,
                secret=spec.secret,
                descriptor=spec.dv,
                details=dict(spec.details),
            )
        else:
            if spec.secret is not None:
                model["secret"] = spec.secret
            model["base_url"] = spec.base_url
            if upgrade:
                model["descriptor"] = spec.dv
            model["details"] = dict(spec.details)
    elif spec.event == "uninstalled":
        model.update(status="uninstalled", enabled=False)
    else:
        if upgrade:
            model["descriptor"] = spec.dv
        model["enabled"] = spec.event == "enabled" and model["status"] == "installed"
    model["last_iat"] = iat if model["last_iat"] is None else max(model["last_iat"], iat)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs=st.lists(call_specs, min_size=4, max_size=40))
def test_random_call_sequences_match_a_reference_model(specs: list[CallSpec]) -> None:
    log: list[RecordedEvent] = []
    state = initial_state(STREAM)
    model: dict[str, Any] = {
        "status": "new",
        "enabled": False,
        "base_url": None,
        "secret": None,
        "descriptor": None,
        "details": {},
        "last_iat": None,
    }
    iat = IAT0
    for spec in specs:
        iat += spec.iat_step
        payload: dict[str, Any] = {
            "key": APP_KEY,
            "clientKey": CLIENT_KEY,
            "baseUrl": spec.base_url,
            **spec.details,
        }
        if spec.secret_in_payload and spec.secret is not None:
            payload["sharedSecret"] = spec.secret
        call = make_call(spec.event, payload=payload, secret=spec.secret, iat=iat, dv=spec.dv)

        step = shell.plan_with(
            DECIDER, STREAM, log, FakeKeys(call, seal=opaque_seal, reveal=opaque_reveal)
        )
        decision = step.decision

        if model["last_iat"] is not None and iat < model["last_iat"]:
            assert isinstance(decision, Refuse)
            assert (decision.status, decision.code) == (409, "stale_call")
            continue  # nothing appended: the state is the fold of the same log
        if spec.event != "installed" and model["status"] == "new":
            assert isinstance(decision, Skip)
            assert decision.code == "unknown_tenant"
            continue
        assert isinstance(decision, Append), decision
        rows = step.new_events()
        assert len(rows) >= 1
        assert [type(row.data) for row in rows] == _expected_events(model, spec)

        for row in rows:
            data = row.data
            version = state.version + 1
            encoded = msgspec.json.encode(data) + data_to_json(data)
            assert not any(secret.encode() in encoded for secret in SECRETS), data
            if isinstance(data, SecretRotated) or (
                isinstance(data, Installed) and spec.secret is not None
            ):
                assert data.shared_secret is not None
                assert data.shared_secret.ad == f"{STREAM}#{version}"
                assert opaque_seal(spec.secret or "", "").ct == data.shared_secret.ct
            event = recorded(data, version=version, position=len(log) + 1, metadata=row.metadata)
            log.append(event)
            state = evolve(state, event)
            assert not (state.status == "uninstalled" and state.enabled)

        _apply_to_model(model, spec, iat)
        assert [e.version for e in log] == list(range(1, len(log) + 1))
        assert state.version == len(log)
        assert state == fold(STREAM, log)
        assert state.status == model["status"]
        assert state.enabled == model["enabled"]
        assert state.base_url == model["base_url"]
        assert opaque_current(state) == model["secret"]
        assert state.descriptor_version == model["descriptor"]
        assert dict(state.details) == model["details"]
        assert state.last_iat == model["last_iat"]
        assert not (state.status == "uninstalled" and state.enabled)
