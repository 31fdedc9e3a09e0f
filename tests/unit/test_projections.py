"""The four read models (SPEC §6) as pure folds, and the presumed-gone query.

Unit tests pin each rule with a handful of events; the Hypothesis tests fold random
valid lifecycles and check that incremental persistence (chunks, changed rows only,
optionally resuming from persisted rows) equals a full rebuild, and that the models
agree with simple oracles computed straight from the event list.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.events import (
    EVENT_TYPES,
    BaseUrlChanged,
    DescriptorUpgraded,
    DetailsChanged,
    Installed,
    Uninstalled,
    client_key_of,
)
from eventstore.testing.synthetic import EMPTY_HEAD, decoded
from eventstore.values import RecordedEvent
from projections import base_urls, descriptors, reimports, tenants
from projections.base_urls import BaseUrlsProjection, BaseUrlsState
from projections.descriptors import DescriptorsProjection, DescriptorsState, latest_version
from projections.model import (
    KEY_TEXT_BYTES,
    BaseUrlRow,
    DescriptorRow,
    ReimportRow,
    TenantRow,
    TenantState,
    as_text,
    key_text,
    normalize_base_url,
    url_key,
    url_text,
)
from projections.presumed_gone import DEFAULT_GRACE, presumed_gone, silence_threshold
from projections.reimports import ReimportsProjection, ReimportsState
from projections.tenants import TenantsProjection, TenantsState
from tests.e2e.test_fold_properties import StoredEvent, old_logs, stored_rows
from tests.projection_events import T0, Log, installed_data, recorded

X = "https://x.atlassian.net"
Y = "https://y.atlassian.net"
Z = "https://z.atlassian.net"

PROJECTIONS: tuple[Any, ...] = (
    TenantsProjection(),
    DescriptorsProjection(),
    BaseUrlsProjection(),
    ReimportsProjection(),
)


def fold_all(events: Iterable[RecordedEvent]) -> dict[str, Any]:
    """Every projection's final state after ``events`` (one ``apply`` per event)."""
    events = list(events)
    states: dict[str, Any] = {}
    for projection in PROJECTIONS:
        state = projection.initial_state()
        for event in events:
            state = projection.apply(state, event)
        states[projection.name] = state
    return states


def tenant_rows(log: Log) -> dict[str, TenantRow]:
    state: TenantsState = fold_all(log.events)["tenants"]
    return {row.client_key: row for row in state.rows()}


def links(log: Log) -> list[ReimportRow]:
    state: ReimportsState = fold_all(log.events)["reimports"]
    return state.take_changes()


def intervals(log: Log) -> list[tuple[str, str, datetime, datetime | None]]:
    state: BaseUrlsState = fold_all(log.events)["base_urls"]
    rows = sorted(state.take_changes(), key=lambda r: r.from_position)
    return [(r.client_key, r.base_url, r.from_, r.to) for r in rows]


def versions(log: Log) -> dict[str, tuple[int, datetime]]:
    state: DescriptorsState = fold_all(log.events)["descriptors"]
    return {row.version: (row.tenants, row.first_seen_at) for row in state.rows()}


# ------------------------------------------------------------------- catalog


def test_every_event_type_is_known_to_every_projection() -> None:
    """A new event type must be a conscious decision in each fold, not a silent skip."""
    assert set(EVENT_TYPES) == tenants.HANDLED_TYPES
    for module in (descriptors, base_urls, reimports):
        assert set(module._HANDLERS) <= set(EVENT_TYPES)


def test_tenant_record_mirrors_the_row() -> None:
    """The fold's mutable record converts to the row field by field, by position."""
    record = msgspec.structs.fields(tenants._Tenant)
    row = msgspec.structs.fields(TenantRow)
    assert [(f.name, f.type) for f in record] == [(f.name, f.type) for f in row]
    frozen = TenantRow(*msgspec.structs.astuple(tenants._Tenant(**sample_tenant())))
    with pytest.raises(AttributeError):
        frozen.enabled = False  # type: ignore[misc]


def sample_tenant() -> dict[str, Any]:
    at = datetime(2024, 1, 1, tzinfo=UTC)
    return dict(
        client_key="k", base_url="https://a.atlassian.net", display_url=None,
        product_type=None, state="installed", enabled=True, descriptor_version=None,
        installed_at=at, updated_at=at, last_seen_at=at, version=1,
    )  # fmt: skip


def test_the_tenant_shape_is_declared_once() -> None:
    """The table's columns and the admin answer follow the row type, field by field."""
    from app.http.schemas import TenantAnswer
    from projections.storage.tables import TENANTS

    row = msgspec.structs.fields(TenantRow)
    assert [(c.name, c.field) for c in TENANTS.columns] == [(f.name, f.name) for f in row]
    answer = TenantAnswer.model_fields
    assert list(answer) == [f.name for f in row]
    for f in row:  # a field the row may leave empty, the answer may too, and no other
        assert nullable(answer[f.name].annotation) == nullable(f.type), f.name


def nullable(annotation: object) -> bool:
    return type(None) in typing.get_args(annotation)


def test_projection_names_and_keys() -> None:
    assert [p.name for p in PROJECTIONS] == ["tenants", "descriptors", "base_urls", "reimports"]
    assert [sorted(p.event_types) for p in PROJECTIONS] == [
        sorted(EVENT_TYPES),
        ["DescriptorUpgraded", "Installed", "Uninstalled"],
        ["BaseUrlChanged", "Installed"],
        ["BaseUrlChanged", "Installed"],
    ]
    for projection in PROJECTIONS:
        fields = msgspec.structs.fields(projection.row_type)
        assert set(projection.key_fields) <= {f.name for f in fields}


# ------------------------------------------------------------------- tenants


def test_first_install_sets_every_field() -> None:
    log = Log()
    event = log.installed(
        "ck-1", X, descriptor_version="3", display_url="https://x.example", product_type="jira"
    )
    assert tenant_rows(log)["ck-1"] == TenantRow(
        client_key="ck-1",
        base_url=X,
        display_url="https://x.example",
        product_type="jira",
        state="installed",
        enabled=True,
        descriptor_version="3",
        installed_at=event.recorded_at,
        updated_at=event.recorded_at,
        last_seen_at=event.recorded_at,
        version=1,
    )


def test_install_without_descriptor_version_leaves_it_unknown() -> None:
    log = Log()
    log.installed("ck-1", X)
    assert tenant_rows(log)["ck-1"].descriptor_version is None


def test_rename_sets_base_url_and_keeps_installed_at() -> None:
    log = Log()
    first = log.installed("ck-1", X)
    moved = log.base_url_changed("ck-1", X, Y)
    row = tenant_rows(log)["ck-1"]
    assert (row.base_url, row.installed_at) == (Y, first.recorded_at)
    assert row.updated_at == row.last_seen_at == moved.recorded_at
    assert row.version == 2


def test_upgrade_sets_descriptor_version() -> None:
    log = Log()
    log.installed("ck-1", X, descriptor_version="1")
    upgrade = log.descriptor_upgraded("ck-1", "1", "2")
    row = tenant_rows(log)["ck-1"]
    assert row.descriptor_version == "2"
    assert row.updated_at == upgrade.recorded_at


def test_details_change_touches_display_url_and_product_type_only_when_named() -> None:
    log = Log()
    log.installed("ck-1", X, display_url="https://old.example", product_type="jira")
    log.details_changed("ck-1", {"displayUrl": "https://new.example"})
    row = tenant_rows(log)["ck-1"]
    assert (row.display_url, row.product_type) == ("https://new.example", "jira")

    other = log.details_changed("ck-1", {"serverVersion": "100"})
    row = tenant_rows(log)["ck-1"]
    assert (row.display_url, row.product_type) == ("https://new.example", "jira")
    assert row.updated_at == other.recorded_at  # a detail did change, even if not shown

    log.details_changed("ck-1", {"productType": "confluence", "displayUrl": None})
    row = tenant_rows(log)["ck-1"]
    assert (row.display_url, row.product_type) == (None, "confluence")


def test_confirm_only_bumps_last_seen_and_version() -> None:
    log = Log()
    first = log.installed("ck-1", X, descriptor_version="1")
    confirm = log.install_confirmed("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert row.updated_at == first.recorded_at
    assert row.last_seen_at == confirm.recorded_at
    assert row.version == 2


def test_secret_rotation_is_a_change_the_row_does_not_show() -> None:
    log = Log()
    log.installed("ck-1", X)
    before = tenant_rows(log)["ck-1"]
    rotated = log.secret_rotated("ck-1")
    after = tenant_rows(log)["ck-1"]
    assert after == msgspec.structs.replace(
        before,
        updated_at=rotated.recorded_at,
        last_seen_at=rotated.recorded_at,
        version=2,
    )


def test_disable_then_enable() -> None:
    log = Log()
    log.installed("ck-1", X)
    disabled = log.disabled("ck-1")
    assert tenant_rows(log)["ck-1"].enabled is False
    again = log.disabled("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert row.updated_at == disabled.recorded_at  # a repeat changes nothing
    assert (row.last_seen_at, row.version) == (again.recorded_at, 3)
    log.enabled("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert row.enabled is True
    assert row.state == "installed"


def test_uninstall() -> None:
    log = Log()
    log.installed("ck-1", X)
    gone = log.uninstalled("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert (row.state, row.enabled) == ("uninstalled", False)
    assert row.updated_at == gone.recorded_at


def test_disabled_or_enabled_after_uninstall_stays_uninstalled_and_disabled() -> None:
    log = Log()
    log.installed("ck-1", X)
    gone = log.uninstalled("ck-1")
    late = log.disabled("ck-1")
    log.enabled("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert (row.state, row.enabled) == ("uninstalled", False)
    assert row.updated_at == gone.recorded_at
    assert row.last_seen_at > late.recorded_at
    assert row.version == 4


def test_repeated_uninstall_changes_nothing_but_last_seen() -> None:
    log = Log()
    log.installed("ck-1", X)
    gone = log.uninstalled("ck-1")
    again = log.uninstalled("ck-1")
    row = tenant_rows(log)["ck-1"]
    assert (row.updated_at, row.last_seen_at, row.version) == (
        gone.recorded_at,
        again.recorded_at,
        3,
    )


def test_reinstall_after_uninstall_sets_everything_again() -> None:
    log = Log()
    log.installed("ck-1", X, descriptor_version="1", product_type="jira")
    log.disabled("ck-1")
    log.uninstalled("ck-1")
    again = log.installed("ck-1", Y, descriptor_version="2")
    assert tenant_rows(log)["ck-1"] == TenantRow(
        client_key="ck-1",
        base_url=Y,
        display_url=None,
        product_type=None,
        state="installed",
        enabled=True,
        descriptor_version="2",
        installed_at=again.recorded_at,
        updated_at=again.recorded_at,
        last_seen_at=again.recorded_at,
        version=4,
    )


def test_events_before_any_install_are_ignored() -> None:
    log = Log()
    stray = log.disabled("ck-1")
    assert tenants.apply(None, stray) is None
    assert tenant_rows(log) == {}


def test_row_fold_equals_projection_row() -> None:
    log = Log()
    log.installed("ck-1", X, descriptor_version="1")
    log.installed("ck-2", Y)
    log.base_url_changed("ck-1", X, Z)
    log.uninstalled("ck-2")
    log.descriptor_upgraded("ck-1", "1", "2")
    rows = tenant_rows(log)
    for client_key, row in rows.items():
        own = [e for e in log.events if client_key_of(e.stream_id) == client_key]
        assert tenants.fold(own) == row


def test_tenant_changes_are_handed_over_once_latest_version_only() -> None:
    log = Log()
    log.installed("ck-1", X)
    log.installed("ck-2", Y)
    projection = TenantsProjection()
    state = projection.apply_many(projection.initial_state(), log.events)
    assert {r.client_key for r in state.take_changes()} == {"ck-1", "ck-2"}
    assert state.take_changes() == []
    state = projection.apply(state, log.disabled("ck-1"))
    state = projection.apply(state, log.enabled("ck-1"))
    assert state.take_changes() == [state.get("ck-1")]
    row = state.get("ck-1")
    assert row is not None
    assert row.version == 3
    assert len(state) == 2


# ------------------------------------------------------------------- descriptors


def test_descriptor_counts_follow_installed_tenants_and_latest_is_first_seen_last() -> None:
    log = Log()
    a = log.installed("a", X, descriptor_version="1")
    log.installed("b", Y, descriptor_version="1")
    c = log.installed("c", Z, descriptor_version="2")
    assert versions(log) == {"1": (2, a.recorded_at), "2": (1, c.recorded_at)}

    log.descriptor_upgraded("a", "1", "2")
    assert versions(log) == {"1": (1, a.recorded_at), "2": (2, c.recorded_at)}

    log.uninstalled("b")
    assert versions(log)["1"] == (0, a.recorded_at)  # the row stays, nobody on it

    back = log.installed("b", Y, descriptor_version="3")
    log.descriptor_upgraded("c", "2", "1")  # a downgrade sees nothing new
    assert versions(log) == {
        "1": (1, a.recorded_at),
        "2": (1, c.recorded_at),
        "3": (1, back.recorded_at),
    }
    state: DescriptorsState = fold_all(log.events)["descriptors"]
    assert state.latest == "3"
    assert latest_version(state.rows()) == "3"


def test_latest_is_by_log_order_not_by_timestamp() -> None:
    log = Log()
    log.installed("a", X, descriptor_version="1")
    log.installed("b", Y, descriptor_version="2", at=T0 - timedelta(days=1))
    state: DescriptorsState = fold_all(log.events)["descriptors"]
    assert state.latest == "2"
    assert latest_version(state.rows()) == "2"


def test_install_without_version_counts_nowhere_until_upgraded() -> None:
    log = Log()
    log.installed("a", X)
    assert versions(log) == {}
    up = log.descriptor_upgraded("a", None, "5")
    assert versions(log) == {"5": (1, up.recorded_at)}


def test_uninstalled_tenant_leaves_count_and_reinstall_reenters() -> None:
    log = Log()
    log.installed("a", X, descriptor_version="1")
    log.uninstalled("a")
    log.uninstalled("a")  # a repeat must not count twice
    assert versions(log)["1"][0] == 0
    log.installed("a", X, descriptor_version="1")
    assert versions(log)["1"][0] == 1


def test_upgrade_of_an_uninstalled_tenant_is_seen_but_not_counted() -> None:
    """The service never writes this; the fold stays consistent with ``tenants``."""
    log = Log()
    log.installed("a", X, descriptor_version="1")
    log.uninstalled("a")
    up = log.descriptor_upgraded("a", "1", "2")
    log.descriptor_upgraded("never-installed", None, "2")
    assert versions(log) == {"1": (0, T0 + timedelta(minutes=1)), "2": (0, up.recorded_at)}
    assert tenant_rows(log)["a"].descriptor_version == "2"


def test_descriptor_changes_name_only_touched_versions() -> None:
    log = Log()
    log.installed("a", X, descriptor_version="1")
    log.installed("b", Y, descriptor_version="2")
    projection = DescriptorsProjection()
    state = projection.apply_many(projection.initial_state(), log.events)
    state.take_changes()
    state = projection.apply(state, log.descriptor_upgraded("b", "2", "3"))
    changed = {row.version: row.tenants for row in state.take_changes()}
    assert changed == {"2": 0, "3": 1}
    state = projection.apply(state, log.install_confirmed("a"))
    assert state.take_changes() == []


# ------------------------------------------------------------------- base_urls


def test_base_url_intervals_open_close_and_survive_uninstall() -> None:
    log = Log()
    i = log.installed("a", X)
    m = log.base_url_changed("a", X, Y)
    log.uninstalled("a")
    log.installed("a", "https://Y.atlassian.net/")  # same URL, other spelling: stays open
    assert intervals(log) == [
        ("a", X, i.recorded_at, m.recorded_at),
        ("a", Y, m.recorded_at, None),
    ]
    r = log.uninstalled("a")
    r = log.installed("a", Z)  # reinstall elsewhere closes and opens
    assert intervals(log)[1:] == [
        ("a", Y, m.recorded_at, r.recorded_at),
        ("a", Z, r.recorded_at, None),
    ]


def test_base_url_change_to_the_same_normalised_url_keeps_the_interval() -> None:
    log = Log()
    i = log.installed("a", X)
    log.base_url_changed("a", X, X + "/")
    assert intervals(log) == [("a", X, i.recorded_at, None)]


def test_base_url_changes_hand_over_closed_and_opened_rows() -> None:
    log = Log()
    projection = BaseUrlsProjection()
    state = projection.apply(projection.initial_state(), log.installed("a", X))
    opened = state.take_changes()
    assert [(r.base_url, r.to) for r in opened] == [(X, None)]
    state = projection.apply(state, log.base_url_changed("a", X, Y))
    changed = sorted(state.take_changes(), key=lambda r: r.from_position)
    assert [(r.base_url, r.to is None) for r in changed] == [(X, False), (Y, True)]
    assert (changed[0].client_key, changed[0].from_) == (opened[0].client_key, opened[0].from_)
    assert state.open_interval("a") == changed[1]


def test_base_url_row_encodes_from_and_to() -> None:
    row = BaseUrlRow(base_url=X, client_key="a", from_=T0, to=None, from_position=1)
    assert set(msgspec.to_builtins(row)) == {
        "base_url",
        "client_key",
        "from",
        "to",
        "from_position",
    }


# ------------------------------------------------------------------- reimports


def test_new_client_key_at_a_held_url_is_a_reimport() -> None:
    log = Log()
    log.installed("a", X)
    b = log.installed("b", X + "/")
    assert links(log) == [
        ReimportRow(
            base_url=X + "/",
            previous_client_key="a",
            client_key="b",
            detected_at=b.recorded_at,
            kind="reimport",
        )
    ]


def test_uninstalled_previous_holder_still_holds_the_url() -> None:
    log = Log()
    log.installed("a", "HTTPS://X.Atlassian.net")
    log.uninstalled("a")
    log.installed("b", X)
    assert [(lnk.previous_client_key, lnk.kind) for lnk in links(log)] == [("a", "reimport")]


def test_previous_holder_that_moved_away_means_url_reused() -> None:
    log = Log()
    log.installed("a", X)
    log.base_url_changed("a", X, Y)
    log.installed("c", X)
    assert [(lnk.previous_client_key, lnk.client_key, lnk.kind) for lnk in links(log)] == [
        ("a", "c", "url_reused")
    ]


def test_link_goes_to_the_most_recent_holder() -> None:
    log = Log()
    log.installed("a", X)
    log.installed("b", X)
    log.installed("c", X)
    assert [(lnk.previous_client_key, lnk.client_key, lnk.kind) for lnk in links(log)] == [
        ("a", "b", "reimport"),
        ("b", "c", "reimport"),
    ]


def test_most_recent_holder_even_when_an_older_one_is_still_there() -> None:
    log = Log()
    log.installed("a", X)
    log.installed("b", X)
    log.base_url_changed("b", X, Y)
    log.installed("c", X)
    assert [(lnk.previous_client_key, lnk.kind) for lnk in links(log)][1:] == [("b", "url_reused")]


def test_reinstall_in_place_is_not_an_arrival_and_not_new() -> None:
    log = Log()
    log.installed("a", X)
    log.installed("b", X)
    log.uninstalled("a")
    log.installed("a", X)  # a reinstall: no link, and b stays the latest arrival
    log.installed("c", X)
    assert [(lnk.previous_client_key, lnk.client_key) for lnk in links(log)] == [
        ("a", "b"),
        ("b", "c"),
    ]


def test_returning_to_a_url_is_an_arrival() -> None:
    log = Log()
    log.installed("a", X)
    log.installed("b", Z)
    log.base_url_changed("b", Z, X)
    log.base_url_changed("a", X, Y)
    log.base_url_changed("a", Y, X)
    log.installed("c", X)
    state: ReimportsState = fold_all(log.events)["reimports"]
    assert state.holder(X + "/") == "c"
    assert [(lnk.previous_client_key, lnk.kind) for lnk in state.take_changes()] == [
        ("a", "reimport")
    ]


def test_no_link_at_a_url_nobody_held() -> None:
    log = Log()
    log.installed("a", X)
    log.base_url_changed("a", X, Y)
    log.installed("b", Z)
    log.installed("c", "https://x.atlassian.net/wiki")  # another URL: the path counts
    assert links(log) == []


def test_reimports_resume_from_base_url_rows_in_any_order() -> None:
    log = Log()
    log.installed("a", X)
    log.installed("b", Y)
    log.base_url_changed("a", X, Z)
    log.base_url_changed("b", Y, X)
    state: BaseUrlsState = fold_all(log.events)["base_urls"]
    rows = state.take_changes()
    for ordered in (rows, rows[::-1]):
        resumed = ReimportsState.from_rows(ordered)
        assert resumed.holder(X) == "b"
        assert resumed.holder(Z) == "a"
        resumed = reimports.apply(resumed, log.installed(f"n{len(log.events)}", Y))
        assert [(lnk.previous_client_key, lnk.kind) for lnk in resumed.take_changes()] == [
            ("b", "url_reused")
        ]
        resumed = reimports.apply(resumed, log.installed(f"n{len(log.events)}", Z))
        assert [(lnk.previous_client_key, lnk.kind) for lnk in resumed.take_changes()] == [
            ("a", "reimport")
        ]


def test_resumed_states_have_nothing_to_hand_over_yet() -> None:
    """Rows loaded from the tables are already persisted: no rewrite of them all."""
    log = Log()
    log.installed("a", X, descriptor_version="1")
    log.base_url_changed("a", X, Y)
    log.installed("b", X)
    rebuilt = persist(log.events, [], resume_from_rows=False, one_by_one=False)
    tenant_rows = list(rebuilt["tenants"].values())
    url_rows = list(rebuilt["base_urls"].values())
    for state in (
        TenantsState.from_rows(tenant_rows),
        DescriptorsState.from_rows(rebuilt["descriptors"].values(), tenant_rows),
        BaseUrlsState.from_rows(url_rows),
        ReimportsState.from_rows(url_rows),
    ):
        assert state.take_changes() == []


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://x.atlassian.net", "https://x.atlassian.net"),
        ("https://x.atlassian.net/", "https://x.atlassian.net"),
        ("HTTPS://X.Atlassian.NET//", "https://x.atlassian.net"),
        ("https://X.atlassian.net/Wiki/", "https://x.atlassian.net/Wiki"),
        ("https://x.atlassian.net/wiki", "https://x.atlassian.net/wiki"),
        ("x.atlassian.net/", "x.atlassian.net"),
    ],
)
def test_normalize_base_url(url: str, normal: str) -> None:
    assert normalize_base_url(url) == normal


# ------------------------------------------------------------------- presumed gone

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def _tenant(
    key: str, last_seen: datetime, state: TenantState = "installed", enabled: bool = True
) -> TenantRow:
    return TenantRow(
        client_key=key,
        base_url=f"https://{key}.atlassian.net",
        display_url=None,
        product_type=None,
        state=state,
        enabled=enabled,
        descriptor_version="1",
        installed_at=T0,
        updated_at=T0,
        last_seen_at=last_seen,
        version=1,
    )


def _version(version: str, first_seen: datetime, position: int) -> DescriptorRow:
    return DescriptorRow(version, first_seen, 0, position)


def test_presumed_gone_uses_the_latest_version_older_than_grace() -> None:
    rows = [
        _version("1", NOW - timedelta(days=100), 1),
        _version("2", NOW - timedelta(hours=30), 2),
        _version("3", NOW - timedelta(hours=1), 3),  # too recent to judge anyone by
    ]
    silent = _tenant("silent", NOW - timedelta(hours=40))
    disabled = _tenant("disabled", NOW - timedelta(hours=40), enabled=False)
    between = _tenant("between", NOW - timedelta(hours=29))  # called after v2 appeared
    recent = _tenant("recent", NOW - timedelta(hours=2))
    removed = _tenant("removed", NOW - timedelta(hours=40), state="uninstalled")
    found = presumed_gone([silent, disabled, between, recent, removed], rows, NOW, DEFAULT_GRACE)
    assert found == [silent, disabled]
    assert silence_threshold(rows, NOW) == NOW - timedelta(hours=30)


def test_presumed_gone_needs_a_version_older_than_grace() -> None:
    rows = [_version("1", NOW - timedelta(hours=23), 1)]
    assert presumed_gone([_tenant("t", NOW - timedelta(days=30))], rows, NOW) == []
    assert presumed_gone([_tenant("t", NOW - timedelta(days=30))], [], NOW) == []


def test_presumed_gone_boundaries_are_strict() -> None:
    exactly_grace = [_version("1", NOW - timedelta(hours=24), 1)]
    assert silence_threshold(exactly_grace, NOW) is None  # not *more* than grace ago
    t = NOW - timedelta(hours=25)
    rows = [_version("1", t, 1)]
    assert presumed_gone([_tenant("t", t)], rows, NOW) == []  # seen at T: not before it
    shorter = presumed_gone([_tenant("t", t - timedelta(seconds=1))], rows, NOW, timedelta(0))
    assert [row.client_key for row in shorter] == ["t"]


# ------------------------------------------------------------------- properties

CLIENTS = ("c0", "c1", "c2", "c3")
URLS = (
    "https://a.atlassian.net",
    "https://A.atlassian.net/",
    "https://b.atlassian.net",
    "https://c.atlassian.net/wiki",
    "https://c.atlassian.net/Wiki",
)
VERSIONS = (None, "1", "2", "3")
DETAILS = ("displayUrl", "productType", "serverVersion")

actions = st.lists(
    st.tuples(
        st.integers(0, len(CLIENTS) - 1),
        st.integers(0, 7),
        st.integers(0, len(URLS) - 1),
        st.integers(0, len(VERSIONS) - 1),
    ),
    max_size=60,
)


def lifecycle(steps: Sequence[tuple[int, int, int, int]]) -> list[RecordedEvent]:
    """Interprets random steps as a valid log: what the service could have written."""
    log = Log()
    url_of: dict[str, str] = {}
    version_of: dict[str, str | None] = {}
    installed: set[str] = set()
    for client_index, op, url_index, version_index in steps:
        client, url, version = CLIENTS[client_index], URLS[url_index], VERSIONS[version_index]
        if client not in installed:
            if client in url_of and op % 2:
                log.disabled(client)  # a late call racing in after Uninstalled
                continue
            log.installed(client, url, descriptor_version=version, display_url=f"d{op}")
            installed.add(client)
            url_of[client], version_of[client] = url, version
        elif op == 0:
            log.secret_rotated(client)
        elif op == 1 and url != url_of[client]:
            log.base_url_changed(client, url_of[client], url)
            url_of[client] = url
        elif op == 2 and version is not None and version != version_of[client]:
            log.descriptor_upgraded(client, version_of[client], version)
            version_of[client] = version
        elif op == 3:
            log.details_changed(client, {DETAILS[url_index % 3]: f"v{version_index}"})
        elif op == 5:
            log.enabled(client)
        elif op == 6:
            log.disabled(client)
        elif op == 7:
            log.uninstalled(client)
            installed.discard(client)
        else:
            log.install_confirmed(client)
    return log.events


def key_of(projection: Any, row: Any) -> tuple[Any, ...]:
    return tuple(getattr(row, name) for name in projection.key_fields)


def persist(
    events: Sequence[RecordedEvent],
    cuts: Sequence[int],
    *,
    resume_from_rows: bool,
    one_by_one: bool,
) -> dict[str, dict[tuple[Any, ...], Any]]:
    """What a runner would leave in its tables: fold chunk by chunk, upsert the
    changed rows after each chunk, optionally restart from those tables."""
    bounds = [0, *sorted(cuts), len(events)]
    states = {p.name: p.initial_state() for p in PROJECTIONS}
    tables: dict[str, dict[tuple[Any, ...], Any]] = {p.name: {} for p in PROJECTIONS}
    for start, end in pairwise(bounds):
        chunk = events[start:end]
        for projection in PROJECTIONS:
            state = states[projection.name]
            if one_by_one:
                for event in chunk:
                    state = projection.apply(state, event)
            else:
                state = projection.apply_many(state, chunk)
            for row in state.take_changes():
                tables[projection.name][key_of(projection, row)] = row
            states[projection.name] = state
        if resume_from_rows:
            states = {
                "tenants": TenantsState.from_rows(tables["tenants"].values()),
                "descriptors": DescriptorsState.from_rows(
                    tables["descriptors"].values(), tables["tenants"].values()
                ),
                "base_urls": BaseUrlsState.from_rows(tables["base_urls"].values()),
                "reimports": ReimportsState.from_rows(tables["base_urls"].values()),
            }
    return tables


PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(steps=actions, cut_fractions=st.lists(st.floats(0, 1), max_size=4), data=st.data())
def test_incremental_persistence_equals_rebuild(
    steps: list[tuple[int, int, int, int]], cut_fractions: list[float], data: st.DataObject
) -> None:
    events = lifecycle(steps)
    cuts = [int(f * len(events)) for f in cut_fractions]
    rebuild = persist(events, [], resume_from_rows=False, one_by_one=False)
    resume = data.draw(st.booleans(), label="resume_from_rows")
    one_by_one = data.draw(st.booleans(), label="one_by_one")
    assert persist(events, cuts, resume_from_rows=resume, one_by_one=one_by_one) == rebuild
    # The in-memory state after a rebuild shows the same rows as the tables.
    states = fold_all(events)
    assert {r.client_key: r for r in states["tenants"].rows()} == {
        k[0]: r for k, r in rebuild["tenants"].items()
    }
    assert sorted(states["descriptors"].rows(), key=lambda r: r.version) == sorted(
        rebuild["descriptors"].values(), key=lambda r: r.version
    )


@PROPERTY_SETTINGS
@given(steps=actions)
def test_folding_only_the_declared_event_types_gives_the_same_rows(
    steps: list[tuple[int, int, int, int]],
) -> None:
    events = lifecycle(steps)
    for projection in PROJECTIONS:

        def table(folded: list[RecordedEvent], p: Any = projection) -> dict[Any, Any]:
            state = p.apply_many(p.initial_state(), folded)
            return {key_of(p, row): row for row in state.take_changes()}

        relevant = [e for e in events if e.type in projection.event_types]
        assert table(relevant) == table(events)


def _expected_tenant(events: Sequence[RecordedEvent]) -> dict[str, Any]:
    """The tenant's visible fields, straight from its event list (no fold code)."""
    installs = [e for e in events if isinstance(e.data, Installed)]
    life = [e for e in events if e.type in ("Installed", "Uninstalled", "Enabled", "Disabled")]
    life_since_install = life[life.index(installs[-1]) :]
    is_installed = not any(isinstance(e.data, Uninstalled) for e in life_since_install)
    last_switch = [e.type for e in life_since_install if e.type != "Uninstalled"][-1]
    base_url = descriptor_version = None
    for e in events:
        if isinstance(e.data, Installed):
            base_url, descriptor_version = e.data.base_url, e.metadata.descriptor_version
        elif isinstance(e.data, BaseUrlChanged):
            base_url = e.data.to
        elif isinstance(e.data, DescriptorUpgraded):
            descriptor_version = e.data.to
    return {
        "base_url": base_url,
        "state": "installed" if is_installed else "uninstalled",
        "enabled": is_installed and last_switch in ("Installed", "Enabled"),
        "descriptor_version": descriptor_version,
        "installed_at": installs[-1].recorded_at,
        "last_seen_at": events[-1].recorded_at,
        "version": len(events),
    }


def _expected_links(
    events: Sequence[RecordedEvent], intervals: Iterable[BaseUrlRow]
) -> set[tuple[str, str, str, datetime, str]]:
    """Links derived from the base URL intervals: the holder that arrived last
    before the new clientKey's first install, still there or not."""
    rows = list(intervals)
    expected = set()
    seen: set[str] = set()
    for event in events:
        if not isinstance(event.data, Installed) or event.stream_id in seen:
            continue
        seen.add(event.stream_id)
        url = normalize_base_url(event.data.base_url)
        before = [
            r
            for r in rows
            if normalize_base_url(r.base_url) == url and r.from_position < event.position
        ]
        if before:
            holder = max(before, key=lambda r: r.from_position)
            still = holder.to is None or holder.to > event.recorded_at
            expected.add(
                (
                    event.data.base_url,
                    holder.client_key,
                    client_key_of(event.stream_id),
                    event.recorded_at,
                    "reimport" if still else "url_reused",
                )
            )
    return expected


@PROPERTY_SETTINGS
@given(steps=actions)
def test_models_agree_with_the_event_list(steps: list[tuple[int, int, int, int]]) -> None:
    events = lifecycle(steps)
    states = fold_all(events)
    rows: dict[str, TenantRow] = {r.client_key: r for r in states["tenants"].rows()}

    # tenants: each row equals what its own events say, and the row-level fold.
    streams: dict[str, list[RecordedEvent]] = {}
    for event in events:
        streams.setdefault(client_key_of(event.stream_id), []).append(event)
    assert set(rows) == set(streams)
    for client, own in streams.items():
        row = rows[client]
        assert tenants.fold(own) == row
        assert {k: getattr(row, k) for k in _expected_tenant(own)} == _expected_tenant(own)

    # descriptors: counts are the installed tenants on each version; first sightings.
    descriptor_rows = {r.version: r for r in states["descriptors"].rows()}
    first: dict[str, RecordedEvent] = {}
    for event in events:
        seen = (
            event.metadata.descriptor_version
            if isinstance(event.data, Installed)
            else event.data.to
            if isinstance(event.data, DescriptorUpgraded)
            else None
        )
        if seen is not None:
            first.setdefault(seen, event)
    assert set(descriptor_rows) == set(first)
    for version, row in descriptor_rows.items():
        on_it = [
            r for r in rows.values() if r.state == "installed" and r.descriptor_version == version
        ]
        assert row.tenants == len(on_it)
        assert (row.first_seen_at, row.first_seen_position) == (
            first[version].recorded_at,
            first[version].position,
        )
    latest = max(first, key=lambda v: first[v].position) if first else None
    assert states["descriptors"].latest == latest

    # base_urls: one open interval per tenant, at its current URL; the closed ones
    # chain without gaps or overlaps.
    url_rows = states["base_urls"].take_changes()
    for client, tenant in rows.items():
        held = sorted(
            (r for r in url_rows if r.client_key == client), key=lambda r: r.from_position
        )
        assert [r.to is None for r in held] == [False] * (len(held) - 1) + [True]
        assert normalize_base_url(held[-1].base_url) == normalize_base_url(tenant.base_url)
        for before, after in pairwise(held):
            assert before.to == after.from_
            assert normalize_base_url(before.base_url) != normalize_base_url(after.base_url)

    # reimports: exactly the links the intervals imply, at most one per clientKey.
    link_rows = states["reimports"].take_changes()
    assert len({lnk.client_key for lnk in link_rows}) == len(link_rows)
    assert {
        (lnk.base_url, lnk.previous_client_key, lnk.client_key, lnk.detected_at, lnk.kind)
        for lnk in link_rows
    } == _expected_links(events, url_rows)


def test_lifecycle_strategy_reaches_the_interesting_cases() -> None:
    """Guards the property tests against a generator that never builds reimports."""
    steps = [(0, 0, 0, 1), (0, 1, 2, 0), (1, 0, 0, 2), (2, 0, 2, 0), (2, 7, 0, 0), (2, 1, 3, 0)]
    events = lifecycle(steps)
    assert [e.type for e in events] == [
        "Installed",
        "BaseUrlChanged",
        "Installed",
        "Installed",
        "Uninstalled",
        "Disabled",
    ]
    kinds = sorted(lnk.kind for lnk in fold_all(events)["reimports"].take_changes())
    assert kinds == ["reimport", "url_reused"]


def test_recorded_builds_what_a_store_returns() -> None:
    event = recorded("ck", installed_data("ck", X), position=7, version=2, at=T0)
    assert (event.stream_id, event.position, event.version, event.type) == (
        "tenant:ck",
        7,
        2,
        "Installed",
    )


# ------------------------------------------------------------------- any value (SPEC §6)
# The log holds whatever older releases accepted: any JSON value in any payload field.


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, None),
        ("", ""),
        ("https://x.atlassian.net", "https://x.atlassian.net"),
        (12345, "12345"),
        (1.5, "1.5"),
        (True, "true"),
        (False, "false"),
        ([], "[]"),
        ({"b": 1, "a": [None]}, '{"a":[null],"b":1}'),
        ("a\x00b", '"a\\u0000b"'),
    ],
)
def test_a_value_of_event_data_becomes_text_by_one_rule(value: Any, text: str | None) -> None:
    assert as_text(value) == text
    assert key_text(value) == text
    if type(value) is str and "\x00" not in value:
        assert as_text(value) is value  # no copy in the usual case


@pytest.mark.parametrize("char", ["x", "é", "界", "😀"])
def test_a_long_indexed_text_is_bounded_distinct_and_stable(char: str) -> None:
    long = char * 3000
    other = char * 2999 + "y"
    bounded = key_text(long)
    assert bounded is not None and len(bounded.encode()) <= KEY_TEXT_BYTES
    assert bounded == key_text(long) != key_text(other)
    assert bounded.startswith(char * 10)
    fits = char * (KEY_TEXT_BYTES // len(char.encode()))
    assert key_text(fits) == fits
    assert as_text(long) == long  # only indexed columns are bounded
    assert url_key(None) == url_text(None) == ""


def test_odd_values_of_an_old_log_fold_as_text() -> None:
    log = Log()
    log.add("k", Installed("tenant-ledger", 7, 12345, None, {"displayUrl": 1, "productType": {}}))  # type: ignore[arg-type]  # an old log's values
    log.add("k", DetailsChanged({"displayUrl": ["x"], "productType": None}))
    log.add("k", DescriptorUpgraded(from_=None, to=[2]))  # type: ignore[arg-type]  # upcast from v1
    log.add("k", BaseUrlChanged(from_="12345", to=None))  # type: ignore[arg-type]  # as decoded
    row = tenant_rows(log)["k"]
    assert (row.client_key, row.base_url, row.display_url) == ("k", "", '["x"]')
    assert (row.product_type, row.descriptor_version) == (None, "[2]")
    assert versions(log) == {"[2]": (1, log.events[2].recorded_at)}
    assert [(key, url) for key, url, _, _ in intervals(log)] == [("k", "12345"), ("k", "")]


KEYS = ["old-0", "old-1", "old-2"]
TEXT_FIELDS = {
    "tenants": ("client_key", "base_url", "display_url", "product_type", "descriptor_version"),
    "descriptors": ("version",),
    "base_urls": ("base_url", "client_key"),
    "reimports": ("base_url", "previous_client_key", "client_key"),
}
INDEXED = {("tenants", "descriptor_version"), ("descriptors", "version"), ("base_urls", "base_url")}


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(stored=old_logs(), cut_fractions=st.lists(st.floats(0, 1), max_size=3))
def test_any_stored_connect_log_folds_to_text_and_resumes_like_a_rebuild(
    stored: list[StoredEvent], cut_fractions: list[float]
) -> None:
    events = list(decoded(stored_rows(EMPTY_HEAD, stored, KEYS)))
    rebuilt = persist(events, [], resume_from_rows=False, one_by_one=False)
    cuts = [int(f * len(events)) for f in cut_fractions]
    assert persist(events, cuts, resume_from_rows=True, one_by_one=True) == rebuilt
    for name, fields in TEXT_FIELDS.items():
        for row in rebuilt[name].values():
            for field in fields:
                value = getattr(row, field)
                assert value is None or (type(value) is str and "\x00" not in value)
                if (name, field) in INDEXED and value is not None:
                    assert len(value.encode()) <= KEY_TEXT_BYTES
    for key in KEYS:  # the admin API's fold of one stream agrees with the table
        stream = [e for e in events if e.stream_id == "tenant:" + key]
        assert tenants.fold(stream) == rebuilt["tenants"].get((key,))


def test_shared_strings_are_one_object_per_value_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``model.shared``: equal values come back as one object; past its limit a value
    is returned as given and the table does not grow."""
    from projections import model

    monkeypatch.setattr(model, "_SHARED", {})
    monkeypatch.setattr(model, "SHARED_LIMIT", 2)
    first = model.shared("".join(["1", ".0"]))
    assert model.shared("".join(["1", ".", "0"])) is first
    assert model.shared(None) is None
    model.shared("2.0")
    third = "".join(["3", ".0"])
    assert model.shared(third) is third and len(model._SHARED) == 2
    assert model.shared("".join(["3", ".0"])) is not third
