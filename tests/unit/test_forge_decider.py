"""The installation decider and the Forge read models as pure functions: no store, no HTTP.

A small in-memory log drives ``app.ingest.shell.plan`` (the shell's pure step) with the real
decider, so the events folded by the projections are the ones the service would write.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest import shell
from app.ingest.forge.body import ForgeFacts, Route
from app.ingest.forge.decider import ForgeCall, InstallationDecider
from app.ingest.forge.tokens import LICENSE_KEYS
from eventstore.events import (
    DetailsChanged,
    EventData,
    ForgeDetailsChanged,
    ForgeInstalled,
    ForgeLicenseChanged,
    ForgeUpgraded,
    Installed,
    Metadata,
    installation_stream_id,
    stream_id_for,
)
from eventstore.ids import installation_ari
from eventstore.values import RecordedEvent
from projections.installations import (
    InstallationsProjection,
    LinksProjection,
    client_keys_at,
    fold_installation,
    forge_states,
)
from projections.migration import migration_report

T0 = datetime(2026, 1, 1, tzinfo=UTC)
DECIDER = InstallationDecider()
APP = str(uuid.uuid4())


def facts(installation: str, **changes: Any) -> ForgeFacts:
    base: dict[str, Any] = {
        "installation_id": installation,
        "app_id": APP,
        "app_version": "1.0.0",
        "environment_id": "env",
        "environment_type": "PRODUCTION",
        "license": {"active": True},
        "cloud_id": "cloud-1",
        "site_ari": "ari:cloud:jira::site/cloud-1",
        "product": "jira",
        "installer_account_id": "acc-1",
    }
    return ForgeFacts(**(base | changes))


@dataclass
class Log:
    events: list[RecordedEvent] = field(default_factory=list)

    def stream(self, stream_id: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.stream_id == stream_id]

    def append(self, stream_id: str, data: list[EventData], metadata: Metadata) -> None:
        version = len(self.stream(stream_id))
        for offset, item in enumerate(data, 1):
            position = len(self.events) + 1
            self.events.append(
                RecordedEvent(
                    position,
                    stream_id,
                    version + offset,
                    type(item).__name__,
                    1,
                    item,
                    metadata,
                    T0 + timedelta(minutes=position),
                    "0" * 64,
                )
            )

    def forge(self, route: Route, fact: ForgeFacts, delivery: str) -> list[str]:
        """Decide like the service; the types appended (empty for a repeat)."""
        stream_id = installation_stream_id(fact.installation_id)
        metadata = Metadata(call_id=delivery, delivery_sha256=delivery)
        step = shell.plan(
            DECIDER, stream_id, self.stream(stream_id), ForgeCall(route, fact, delivery, metadata)
        )
        decision = step.decision
        if not isinstance(decision, shell.Append):
            assert isinstance(decision, shell.Skip) and decision.code == "duplicate"
            return []
        self.append(stream_id, list(decision.events), decision.metadata)
        return [type(e).__name__ for e in decision.events]

    def connect(self, client_key: str, installation: str | None) -> None:
        stream_id = stream_id_for(client_key)
        details = {"installationId": installation_ari(installation)} if installation else {}
        if not self.stream(stream_id):
            data: EventData = Installed(
                "tenant-ledger", client_key, f"https://{client_key}.atlassian.net", None, details
            )
        else:
            data = DetailsChanged({"installationId": details.get("installationId")})
        self.append(stream_id, [data], Metadata(call_id=f"connect-{len(self.events)}"))


# ------------------------------------------------------------------ the decider


def test_an_installation_life() -> None:
    log, one = Log(), str(uuid.uuid4())
    assert log.forge("installed", facts(one), "d1") == ["ForgeInstalled"]
    assert log.forge("installed", facts(one), "d1") == []  # the same delivery again
    assert log.forge("installed", facts(one), "d2") == ["ForgeInstallConfirmed"]
    assert log.forge("upgraded", facts(one, app_version="2.0.0"), "d3") == ["ForgeUpgraded"]
    assert log.forge(
        "upgraded", facts(one, app_version="2.0.0", license={"active": False}), "d4"
    ) == ["ForgeLicenseChanged"]
    # Unstated fields (None) are no change; stated ones are.
    assert log.forge(
        "upgraded",
        facts(
            one,
            app_version="2.0.0",
            license={"active": False},
            installer_account_id=None,
            environment_type="STAGING",
        ),
        "d5",
    ) == ["ForgeDetailsChanged"]
    assert log.forge(
        "pre-uninstall",
        facts(
            one,
            app_version="2.0.0",
            license={"active": False},
            environment_type="STAGING",
            site_ari=None,
            product=None,
        ),
        "d6",
    ) == ["ForgeUninstalling"]
    # Back from uninstalling: recorded even though no field changed.
    assert log.forge(
        "installed",
        facts(one, app_version="2.0.0", license={"active": False}, environment_type="STAGING"),
        "d7",
    ) == ["ForgeInstallConfirmed"]
    row = fold_installation(log.events)
    assert row is not None
    assert (row.state, row.app_version, row.license_active, row.environment_type) == (
        "installed",
        "2.0.0",
        False,
        "STAGING",
    )
    upgraded = log.events[2].data
    assert (upgraded.from_, upgraded.to) == ("1.0.0", "2.0.0")  # type: ignore[union-attr]


def test_pre_uninstall_first_records_the_installation_then_uninstalling() -> None:
    log, one = Log(), str(uuid.uuid4())
    assert log.forge("pre-uninstall", facts(one, site_ari=None, product=None), "p") == [
        "ForgeInstalled",
        "ForgeUninstalling",
    ]
    row = fold_installation(log.events)
    assert row is not None and row.state == "uninstalling"


def test_a_license_recorded_before_the_2026_layout_is_not_changed_by_it() -> None:
    """Events of the isActive era hold five license keys; the same facts read from a
    2026 token have ten (the new ones null): the same license, no ForgeLicenseChanged."""
    log, one = Log(), str(uuid.uuid4())
    old = {"active": True, "type": "commercial", "evaluation": False, "trial_end": None,
           "subscription_end": None}  # fmt: skip
    assert log.forge("installed", facts(one, license=old), "d1") == ["ForgeInstalled"]
    new = old | dict.fromkeys(LICENSE_KEYS[5:], None)
    assert log.forge("installed", facts(one, license=new), "d2") == ["ForgeInstallConfirmed"]
    changed = new | {"billing_period": "ANNUAL"}
    assert log.forge("installed", facts(one, license=changed), "d3") == ["ForgeLicenseChanged"]


def test_the_installation_fold_is_total_on_odd_recorded_values() -> None:
    """Whatever JSON a recorded field holds (older code, a hand-made log), the fold
    gives a row whose columns both databases can store."""
    one = str(uuid.uuid4())
    stream = installation_stream_id(one)
    log = Log()
    installed = ForgeInstalled(one, "cloud-1", None, "jira", APP, "1.0.0", None, None, None,
                               {"isActive": True})  # fmt: skip
    log.append(stream, [installed], Metadata())
    assert (row := fold_installation(log.events)) and row.license_active is True
    odd: list[EventData] = [
        ForgeLicenseChanged(from_=None, to={"active": "yes", "isActive": True}),
        ForgeDetailsChanged({"cloud_id": {"id": 1}, "product": 5, "environment_type": None}),
        ForgeUpgraded(from_=None, to=["2", 0]),  # type: ignore[arg-type]  # an odd recorded value
    ]
    log.append(stream, odd, Metadata())
    row = fold_installation(log.events)
    assert row is not None
    assert (row.license_active, row.cloud_id, row.product, row.environment_type) == (
        None,  # "yes" is not a boolean: unknown, and active present means no fallback
        '{"id":1}',
        "5",
        None,
    )
    assert row.app_version == '["2",0]'
    installations, links = fold(log.events)  # the whole-log fold takes it too
    assert [r.cloud_id for r in installations] == ['{"id":1}'] and links == []


# ------------------------------------------------------------------ the read models


def fold(events: list[RecordedEvent]) -> tuple[list[Any], list[Any]]:
    installations, links = InstallationsProjection(), LinksProjection()
    a = installations.apply_many(installations.initial_state(), events)
    b = links.apply_many(links.initial_state(), events)
    return sorted(a.take_changes(), key=repr), sorted(b.take_changes(), key=repr)


def test_links_reinstall_inheritance_and_report() -> None:
    log = Log()
    first, second, lonely = (str(uuid.uuid4()) for _ in range(3))
    log.connect("ck-a", first)
    log.forge("installed", facts(first), "1")
    log.forge("installed", facts(second), "2")  # same cloud: a reinstall
    log.forge("installed", facts(lonely, cloud_id="cloud-2", site_ari=None), "3")
    log.connect("ck-b", None)
    installations, links = fold(log.events)
    by_id = {row.installation_id: row for row in installations}
    assert by_id[first].client_key == by_id[second].client_key == "ck-a"
    assert by_id[lonely].client_key is None
    assert sorted(
        (link.kind, link.previous_installation_id, link.installation_id) for link in links
    ) == sorted([("connect", None, first), ("reinstall", first, second)])
    from projections import tenants

    tenant_rows = [tenants.fold(log.stream(stream_id_for(k))) for k in ("ck-a", "ck-b")]
    assert tenant_rows[0] is not None and tenant_rows[0].installation_id == first
    report = migration_report([t for t in tenant_rows if t], installations, links)
    assert report.linked == 1
    assert [t.client_key for t in report.connect_only] == ["ck-b"]
    assert [r.installation_id for r in report.forge_only] == [lonely]


def test_a_tenant_an_installation_inherited_gets_its_own_link_when_it_names_it() -> None:
    log = Log()
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    log.connect("ck-a", first)
    log.forge("installed", facts(first), "1")
    log.forge("installed", facts(second), "2")  # same cloud: second inherits ck-a
    cut = len(log.events)
    log.connect("ck-a", second)  # ck-a names the new installation itself: a link
    log.connect("ck-a", second)  # naming it again: no second link
    expected = [("connect", "ck-a", first), ("connect", "ck-a", second), ("reinstall", "ck-a", second)]
    _, links = fold(log.events)
    assert sorted((r.kind, r.client_key, r.installation_id) for r in links) == sorted(expected)
    # The same after resuming from the rows before the link (the runner after a restart).
    states = forge_states(*fold(log.events[:cut]))
    later = LinksProjection().apply_many(states["links"], log.events[cut:]).take_changes()
    assert [(r.kind, r.client_key, r.installation_id) for r in later] == [expected[1]]


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.integers(0, 2), st.integers(0, 3)),
        st.tuples(
            st.sampled_from(["installed", "upgraded", "pre-uninstall"]),
            st.integers(0, 3),  # installation
            st.integers(0, 1),  # cloud
            st.integers(0, 2),  # version
            st.booleans(),  # license active
        ),
        st.tuples(st.just("replay"), st.integers(0, 50)),
    ),
    max_size=25,
)
IDS = [str(uuid.UUID(int=n + 1)) for n in range(4)]


def play(operations: list[tuple[Any, ...]]) -> Log:
    log = Log()
    deliveries: list[tuple[Route, ForgeFacts, str]] = []
    for op in operations:
        if op[0] == "connect":
            log.connect(f"ck-{op[1]}", IDS[op[2]] if op[2] < 3 else None)
        elif op[0] == "replay":
            if deliveries:
                route, fact, delivery = deliveries[op[1] % len(deliveries)]
                assert log.forge(route, fact, delivery) == []  # a repeat appends nothing
        else:
            route, which, cloud, version, active = op
            fact = facts(
                IDS[which],
                cloud_id=f"cloud-{cloud}",
                app_version=f"{version}.0.0",
                license={"active": active},
            )
            delivery = f"{route}:{which}:{cloud}:{version}:{active}:{len(deliveries)}"
            assert log.forge(route, fact, delivery)  # every new delivery appends
            deliveries.append((route, fact, delivery))
    return log


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPERATIONS, st.integers(0, 60))
def test_resuming_from_rows_is_the_same_as_one_fold(operations: list[Any], cut: int) -> None:
    """What the runner does after a restart: resume from the rows at a checkpoint."""
    events = play(operations).events
    cut = min(cut, len(events))
    whole = fold(events)
    head, tail = events[:cut], events[cut:]
    rows_i, rows_l = fold(head)
    states = forge_states(rows_i, rows_l)
    installations, links = InstallationsProjection(), LinksProjection()
    i = installations.apply_many(states["installations"], tail)
    linked = links.apply_many(states["links"], tail)
    merged_i = {r.installation_id: r for r in rows_i} | {
        r.installation_id: r for r in i.take_changes()
    }
    merged_l = {r.link_id: r for r in rows_l} | {r.link_id: r for r in linked.take_changes()}
    assert sorted(merged_i.values(), key=repr) == whole[0]
    assert sorted(merged_l.values(), key=repr) == whole[1]
    # The admin answer's as-of rule (links alone) agrees with the fold.
    for row in whole[0]:
        assert client_keys_at(lambda _: whole[1], row.installation_id, None) == row.client_keys
        assert row.client_key == (row.client_keys[-1] if row.client_keys else None)
