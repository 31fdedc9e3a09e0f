"""A rebuild reads the log as lean events (``projections.lean``) and dispatches them to
every fold at once (``projections.rebuild``); the runner folds typed ``RecordedEvent``s
through each projection's ``apply_many``. Over any accepted log, on every store, the
two give the same read models, and the lean reader gives exactly what converting the
typed events gives.

The logs: Connect tenants and Forge installations sharing a few base URLs, cloudIds,
installation ids and descriptor versions (so reimports, reinstall links and counts
happen), every event type, odd JSON values where a payload field may hold them, and
``DescriptorUpgraded`` rows of the first schema version (upcast on read).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.chain import CHAIN_VERSION, link, link_input_v2, rest_digest, stream_digest
from eventstore.clock import format_timestamp
from eventstore.events import Metadata, canonical_json, metadata_to_json
from eventstore.store import EventStore
from eventstore.values import RawEvent
from projections.backends import storage_for
from projections.lean import lean_event_of, lean_pages
from projections.rebuild import rebuild, with_dependencies
from projections.registry import PROJECTIONS
from projections.storage.tables import SPECS

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SITES = ["https://a.atlassian.net", "https://A.atlassian.net/", "https://b.atlassian.net/wiki"]
CLOUDS = ["cloud-1", "cloud-2"]
VERSIONS = [None, "1", "2", ""]
SEALED = {"alg": "A256GCM", "nonce": "bg==", "ct": "Y3Q=", "ad": "YWQ="}

odd = st.one_of(st.none(), st.integers(-3, 3), st.booleans(), st.just(["x"]), st.just({"a": 1}))
site = st.sampled_from(SITES) | odd
licenses = st.none() | st.fixed_dictionaries(
    {"active": st.booleans() | st.just("yes")}, optional={"type": st.just("commercial")}
)

# (stream kind, event type, schema version, data) with "<install:n>" standing for an
# installation id of this example (filled in when the rows are made).
Event = tuple[int, str, int, dict[str, Any], str | None]


@st.composite
def connect_event(draw: st.DrawFn, tenants: int, installs: int) -> Event:
    tenant = draw(st.integers(0, tenants - 1))
    install = st.integers(0, installs - 1).map(lambda n: f"<install:{n}>")
    named = install | st.sampled_from(["not-a-uuid", None])
    kind = draw(
        st.sampled_from(
            [
                "Installed",
                "Installed",
                "BaseUrlChanged",
                "DescriptorUpgraded",
                "DescriptorUpgraded/1",
                "DetailsChanged",
                "SecretRotated",
                "InstallConfirmed",
                "Enabled",
                "Disabled",
                "Uninstalled",
                "TenantForgotten",
                "LicenseChanged",
                "SiteRefused",
            ]
        )
    )
    version = draw(st.sampled_from(VERSIONS))
    data: dict[str, Any] = {}
    schema = 1
    if kind == "Installed":
        details = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "displayUrl": site,
                    "productType": st.sampled_from(["jira", "confluence"]) | odd,
                    "installationId": named,
                    "description": odd,
                },
            )
        )
        data = details | {"key": "tenant-ledger", "clientKey": None, "baseUrl": draw(site)}
        if draw(st.booleans()):
            data["sharedSecret"] = SEALED
    elif kind == "BaseUrlChanged":
        data = {
            "from": draw(st.sampled_from(SITES)),
            "to": draw(st.sampled_from(SITES) | st.none()),
        }
    elif kind == "DescriptorUpgraded":
        schema = 2
        data = {"from": draw(st.sampled_from(VERSIONS)), "to": draw(st.sampled_from(VERSIONS))}
    elif kind == "DescriptorUpgraded/1":
        kind, data = "DescriptorUpgraded", {"version": draw(st.sampled_from(VERSIONS) | odd)}
    elif kind == "DetailsChanged":
        fields = {"displayUrl": site, "productType": odd, "installationId": named, "x": odd}
        data = draw(st.fixed_dictionaries({}, optional=fields))
    elif kind == "SecretRotated":
        data = {"sharedSecret": SEALED}
    elif kind == "TenantForgotten":
        data = {"reason": "asked"}
    elif kind == "LicenseChanged":
        data = {"from": draw(licenses), "to": draw(licenses)}
    elif kind == "SiteRefused":
        data = {"status": draw(st.sampled_from([401, 403, 404]))}
    return tenant, kind, schema, data, version


@st.composite
def forge_event(draw: st.DrawFn, installs: int) -> Event:
    install = draw(st.integers(0, installs - 1))
    kind = draw(
        st.sampled_from(
            [
                "ForgeInstalled",
                "ForgeInstalled",
                "ForgeUpgraded",
                "ForgeLicenseChanged",
                "ForgeDetailsChanged",
                "ForgeInstallConfirmed",
                "ForgeUninstalling",
            ]
        )
    )
    cloud = st.sampled_from(CLOUDS) | st.none()
    data: dict[str, Any] = {}
    if kind == "ForgeInstalled":
        data = {
            "installation_id": f"<install:{install}>",
            "cloud_id": draw(cloud),
            "site_ari": None,
            "product": draw(st.sampled_from(["jira", "confluence"]) | st.none()),
            "app_id": "app",
            "app_version": draw(st.sampled_from(["1.0", "2.0"]) | st.none()),
            "environment_id": None,
            "environment_type": draw(st.sampled_from(["PRODUCTION"]) | st.none()),
            "installer_account_id": None,
            "license": draw(licenses),
        }
    elif kind == "ForgeUpgraded":
        data = {"from": "1.0", "to": draw(st.sampled_from(["2.0", "3.0"]))}
    elif kind == "ForgeLicenseChanged":
        data = {"from": None, "to": draw(licenses)}
    elif kind == "ForgeDetailsChanged":
        fields = {"cloud_id": cloud, "product": st.just("jira"), "environment_type": st.none()}
        data = draw(st.fixed_dictionaries({}, optional=fields).filter(bool))
    elif kind == "ForgeInstallConfirmed":
        data = {"route": "installed"}
    return -1 - install, kind, 1, data, None


@st.composite
def logs(draw: st.DrawFn) -> list[Event]:
    tenants, installs = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    event = connect_event(tenants, installs) | forge_event(installs)
    return draw(st.lists(event, min_size=1, max_size=30))


def stored_rows(store: EventStore, events: list[Event]) -> list[RawEvent]:
    """The events as stored rows, chained onto the store's head (streams new to it)."""
    head = store.head()
    previous, position = bytes.fromhex(head.hash), head.position
    installs = [str(uuid.uuid4()) for _ in range(3)]
    tag = uuid.uuid4().hex[:8]
    versions: dict[str, int] = {}
    rows = []
    for stream, event_type, schema, data, descriptor_version in events:
        client_key = f"lean-{tag}-{stream}"
        stream_id = (
            f"tenant:{client_key}" if stream >= 0 else f"installation:{installs[-1 - stream]}"
        )
        body = {k: _fill(v, installs, client_key) for k, v in data.items()}
        if event_type == "Installed":
            body["clientKey"] = client_key
        version = versions[stream_id] = versions.get(stream_id, 0) + 1
        raw = canonical_json(body)
        metadata = metadata_to_json(
            Metadata(call_id=uuid.uuid4().hex, descriptor_version=descriptor_version,
                     operator="ops" if event_type == "TenantForgotten" else None)
        )  # fmt: skip
        stamp = format_timestamp(T0 + timedelta(seconds=position // 2))  # some equal times
        rest = rest_digest(version, event_type, schema, stamp, raw, metadata)
        position += 1
        previous = link(previous, position, link_input_v2(stream_digest(stream_id), rest))
        rows.append(
            RawEvent(position, stream_id, version, event_type, schema, raw, metadata, stamp,
                     previous.hex(), None, CHAIN_VERSION)
        )  # fmt: skip
    return rows


def _fill(value: Any, installs: list[str], client_key: str) -> Any:
    if isinstance(value, str) and value.startswith("<install:"):
        return installs[int(value[len("<install:") : -1])]
    return value


def _ordinary(store: EventStore) -> dict[str, list[Any]]:
    """Each projection's rows after folding the typed log with its own ``apply_many``."""
    events = list(store.read_all(0, 1000))
    rows = {}
    for name, projection in PROJECTIONS.items():
        state = projection.apply_many(projection.initial_state(), events)
        rows[name] = _sorted(name, state.take_changes())
    return rows


def _sorted(name: str, rows: list[Any]) -> list[Any]:
    spec = SPECS[name]
    fields = [spec.columns[spec.column_names.index(column)].field for column in spec.key]
    return sorted(rows, key=lambda row: tuple(getattr(row, f) for f in fields))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(events=logs(), names=st.sampled_from([(), ("tenants",), ("base_urls",), ("links",)]))
def test_a_lean_rebuild_gives_the_tables_the_ordinary_folds_give(
    store: EventStore, events: list[Event], names: tuple[str, ...]
) -> None:
    store.import_rows(stored_rows(store, events))
    # The reader: what converting each typed event gives, page boundaries anywhere.
    typed = [lean_event_of(event) for event in store.read_all(0, 1000)]
    assert [event for page in lean_pages(store, 0, 7) for event in page] == typed

    report = rebuild(store, names, batch_size=5)  # all, or one group
    storage = storage_for(store)
    expected = _ordinary(store)
    assert report.names == with_dependencies(names)
    for name in report.names:
        assert _sorted(name, storage.load_rows(name)) == expected[name], name
