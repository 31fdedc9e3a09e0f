"""SPEC §6: every Connect fold is total, and one accepted call never stops the read side.

Three properties, on every store, against a real service (real HTTP, real runner):

* the door (SPEC §4 rule 1) refuses a read field that is not a string or null;
* accepted calls carrying any JSON value in every field the door lets through fold,
  and every read model reaches the head;
* logs as older releases stored them (any JSON value in any data field, the read
  fields too, odd descriptor versions, older schema versions), imported as stored
  rows, fold too: no table write fails, no admin answer or console page fails, and a
  rebuild gives the same tables.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.connect.body import READ_FIELDS
from app.sim.connect import make_install_payload
from eventstore.chain import CHAIN_VERSION, link, link_input_v2, rest_digest, stream_digest
from eventstore.clock import format_timestamp
from eventstore.events import (
    SCHEMA_VERSIONS,
    Metadata,
    canonical_json,
    metadata_to_json,
    stream_id_for,
)
from eventstore.store import EventStore
from eventstore.testing.synthetic import DUMMY_SECRET
from eventstore.values import Head, RawEvent
from projections.backends import storage_for
from projections.rebuild import rebuild
from projections.storage.tables import SPECS
from tests.harness import ADMIN_TOKEN, RunningService, running_service

SLOW = settings(
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@pytest.fixture
def service(store_url: str) -> Iterator[RunningService]:
    with running_service(store_url) as running:
        running.client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console"})
        yield running


# ------------------------------------------------------------------ JSON values


def _incompressible(seed: int, size: int) -> str:
    """A long string no compression shortens (PostgreSQL compresses index entries)."""
    return random.Random(seed).randbytes(size).hex()


huge_strings = st.builds(_incompressible, st.integers(0, 2**32), st.integers(600, 3000))
# Printable text the door accepts: no controls, surrogates or format characters
# (bidi overrides are of those); a path for a base URL also has no space nor backslash.
printable = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cf")), max_size=40)
cjk = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)


def json_values(strings: st.SearchStrategy[str], leaves: int = 6) -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | strings
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(printable, inner, max_size=3),
        max_leaves=leaves,
    )


# Anything an old log can hold: NUL and other controls, huge strings, any shape.
any_json = json_values(
    st.text(max_size=20) | st.sampled_from(["", "\x00", "a\x00b"]) | huge_strings
)


# ------------------------------------------------------------------ the checks


def snapshot(store: EventStore) -> dict[str, list[Any]]:
    storage = storage_for(store)
    return {
        name: sorted(
            storage.load_rows(name),
            key=lambda r: tuple(str(getattr(r, f)) for f in r.__struct_fields__),
        )
        for name in SPECS
    }


def read_side_answers(service: RunningService, client_keys: list[str]) -> None:
    """Every read model reaches the head, every answer about these tenants is given,
    and a rebuild gives the same tables."""
    store = service.store
    head = store.head().position
    listed = service.admin("/admin/tenants", min_position=head, limit=1000)
    assert listed.status_code == 200, listed.text  # 503 after 5 s: a read model stalled
    assert set(storage_for(store).checkpoints().values()) == {head}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and not ready.json().get("degraded"), ready.text
    for path in (
        "/admin/descriptors",
        "/admin/reimports",
        "/console",
        "/console/descriptors",
    ):
        response = service.admin(path)
        assert response.status_code == 200, (path, response.text)
    gone = service.admin("/admin/tenants", presumed_gone="true", grace_hours=0, limit=1000)
    assert gone.status_code == 200, gone.text
    known = {t["client_key"] for t in listed.json()["tenants"]}
    for key in client_keys:
        quoted = quote(key, safe="")
        one = service.admin(f"/admin/tenants/{quoted}")
        assert one.status_code == (200 if key in known else 404), one.text
        if key in known:
            assert one.json()["client_key"] == key
        events = service.admin(f"/admin/tenants/{quoted}/events")
        has_events = store.stream_version(stream_id_for(key)) > 0
        assert events.status_code == (200 if has_events else 404), events.text
        page = service.client.get(f"/console/tenants/{quoted}")  # with the base URL history
        assert page.status_code == (200 if key in known else 404), page.text[-300:]
    folded = snapshot(store)
    rebuild(store)
    assert snapshot(store) == folded
    assert set(storage_for(store).checkpoints().values()) == {head}


# ------------------------------------------------------------------ the door


@pytest.mark.parametrize("value", [12345, {"a": "b"}])
def test_a_read_field_that_is_not_a_string_is_refused_over_http(
    service: RunningService, value: Any
) -> None:
    known = service.install()
    head = service.store.head().position
    for name in READ_FIELDS:
        for event, alg in (("installed", "RS256"), ("enabled", "HS256")):
            payload = make_install_payload(**{name: value})
            if event == "enabled":
                payload = dict(known, **{name: value})
            secret = known["sharedSecret"] if alg == "HS256" else None
            call = service.call(event, payload, alg=alg, shared_secret=secret)
            response = service.send(call)
            assert response.status_code == 400, (name, event, response.text)
            assert response.json()["error"] == "bad_field_type"
            assert name in response.json()["detail"]
            latest = service.store.list_rejections(1)[0]
            assert latest.reason == "bad_field_type"
    assert service.store.head().position == head
    read_side_answers(service, [known["clientKey"]])


# ------------------------------------------------------------------ accepted calls

door_strings = printable | st.text(cjk, min_size=1, max_size=30)
read_values = st.none() | door_strings
# A path long enough (in UTF-8 bytes) to overflow a PostgreSQL index entry, as the
# door allows (baseUrl up to 2,048 characters).
paths = st.just("") | st.builds(lambda s: "/" + s, st.text(cjk, min_size=700, max_size=1000))
site_names = st.sampled_from(["alpha", "beta", "gamma"])
OPTIONAL_READ = [n for n in READ_FIELDS if n not in ("key", "clientKey", "baseUrl", "sharedSecret")]


@st.composite
def payload_changes(draw: st.DrawFn) -> dict[str, Any]:
    """Fields of an ``installed`` body: read fields as strings or null, others anything."""
    changes: dict[str, Any] = {
        name: draw(read_values) for name in draw(st.sets(st.sampled_from(OPTIONAL_READ)))
    }
    unknown = draw(
        st.dictionaries(
            st.sampled_from(["licenseDetails", "capabilities", "extra", "cloudId", "x"]),
            json_values(door_strings),
            max_size=3,
        )
    )
    return changes | unknown


@st.composite
def call_sequences(draw: st.DrawFn) -> list[tuple[int, str, dict[str, Any], str | None]]:
    """(tenant, lifecycle event, body changes, descriptor version) for two tenants."""
    steps = []
    for tenant in (0, 1):
        steps.append(
            (tenant, "installed", draw(payload_changes()), draw(st.sampled_from(["1", "2"])))
        )
    for _ in range(draw(st.integers(0, 5))):
        event = draw(
            st.sampled_from(["installed", "installed", "enabled", "disabled", "uninstalled"])
        )
        steps.append(
            (
                draw(st.integers(0, 1)),
                event,
                draw(payload_changes()),
                draw(st.sampled_from(["1", "2", "3", None])),
            )
        )
    return steps


@settings(SLOW, max_examples=25)
@given(calls=call_sequences(), sites=st.lists(st.tuples(site_names, paths), min_size=2, max_size=2))
def test_accepted_calls_with_any_json_values_never_stop_the_read_side(
    service: RunningService,
    calls: list[tuple[int, str, dict[str, Any], str | None]],
    sites: list[tuple[str, str]],
) -> None:
    tag = uuid.uuid4().hex[:8]
    keys = [f"jira:{tag}-{n}" for n in (0, 1)]
    bodies: dict[int, dict[str, Any]] = {}
    for tenant, event, changes, version in calls:
        site, path = sites[tenant]
        base_url = f"https://{site}-{tag}.atlassian.net{path}"
        if event == "installed" or tenant not in bodies:
            body = make_install_payload(client_key=keys[tenant], base_url=base_url) | changes
            event = "installed"
            bodies[tenant] = body
        else:
            body = bodies[tenant]
        alg = "RS256" if event == "installed" else "HS256"
        call = service.call(event, body, alg=alg, descriptor_version=version)
        response = service.send(call)
        assert response.status_code == 204, (event, response.text)
    read_side_answers(service, keys)


# ------------------------------------------------------------------ stored logs

T0 = datetime(2025, 1, 1, tzinfo=UTC)
SEALED = {
    "alg": DUMMY_SECRET.alg,
    "nonce": DUMMY_SECRET.nonce,
    "ct": DUMMY_SECRET.ct,
    "ad": DUMMY_SECRET.ad,
}
# A handful of base URLs (odd ones too) so that tenants meet at one (reimports).
old_base_urls = (
    st.sampled_from(
        ["https://one.atlassian.net", "https://ONE.atlassian.net/", "https://two.atlassian.net"]
    )
    | any_json
)
odd_versions = (
    st.none() | st.sampled_from(["1", "2", "", "\x00"]) | huge_strings | st.text(max_size=8)
)
StoredEvent = tuple[int, str, int, dict[str, Any], str | None]  # tenant, type, schema, data, v


@st.composite
def old_installed(draw: st.DrawFn) -> dict[str, Any]:
    details = {name: draw(any_json) for name in draw(st.sets(st.sampled_from(READ_FIELDS[3:-2])))}
    details |= draw(
        st.dictionaries(st.sampled_from(["licenseDetails", "eventType", "zz"]), any_json)
    )
    data = details | {
        "key": draw(st.just("tenant-ledger") | any_json),
        "clientKey": draw(st.just(None) | any_json),  # None: the stream's own (filled in later)
        "baseUrl": draw(old_base_urls),
    }
    if draw(st.booleans()):
        data["sharedSecret"] = SEALED
    return data


@st.composite
def old_event(draw: st.DrawFn) -> tuple[str, int, dict[str, Any]]:
    kind = draw(
        st.sampled_from(
            [
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
            ]
        )
    )
    if kind == "Installed":
        return kind, 1, draw(old_installed())
    if kind == "BaseUrlChanged":  # what the stored shape's decoder reads: strings or null
        return (
            kind,
            1,
            {"from": draw(st.none() | st.text()), "to": draw(st.none() | st.text() | huge_strings)},
        )
    if kind == "DescriptorUpgraded":
        return kind, 2, {"from": draw(odd_versions), "to": draw(odd_versions)}
    if kind == "DescriptorUpgraded/1":  # the first shape: upcast on read, any value
        data = {"version": draw(any_json)}
        if draw(st.booleans()):
            data["previous"] = draw(any_json)
        return "DescriptorUpgraded", 1, data
    if kind == "DetailsChanged":
        names = st.sampled_from([*READ_FIELDS[3:-2], "eventType", "licenseDetails", "new"])
        return kind, 1, draw(st.dictionaries(names, any_json, min_size=1))
    if kind == "SecretRotated":
        return kind, 1, {"sharedSecret": SEALED}
    return kind, SCHEMA_VERSIONS[kind], {}


@st.composite
def old_logs(draw: st.DrawFn) -> list[StoredEvent]:
    events: list[StoredEvent] = []
    for tenant in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 9)):  # mostly; else a stream that never had an Installed
            events.append((tenant, "Installed", 1, draw(old_installed()), draw(odd_versions)))
    for _ in range(draw(st.integers(0, 8))):
        tenant = draw(st.integers(0, 2))
        event_type, schema, data = draw(old_event())
        events.append((tenant, event_type, schema, data, draw(odd_versions)))
    return events


def stored_rows(head: Head, events: list[StoredEvent], keys: list[str]) -> list[RawEvent]:
    """The rows an older release would have stored: chained after ``head`` as an append
    chains them (``eventstore.testing.synthetic.chain_rows``), in any schema version."""
    previous, position = bytes.fromhex(head.hash), head.position
    versions: dict[str, int] = {}
    rows = []
    for tenant, event_type, schema, data, descriptor_version in events:
        stream_id = "tenant:" + keys[tenant]
        if event_type == "Installed" and data["clientKey"] is None:
            data = data | {"clientKey": keys[tenant]}
        version = versions[stream_id] = versions.get(stream_id, 0) + 1
        body = canonical_json(data)
        metadata = metadata_to_json(
            Metadata(call_id=uuid.uuid4().hex, descriptor_version=descriptor_version)
        )
        stamp = format_timestamp(T0 + timedelta(minutes=position))
        rest = rest_digest(version, event_type, schema, stamp, body, metadata)
        position += 1
        previous = link(previous, position, link_input_v2(stream_digest(stream_id), rest))
        rows.append(
            RawEvent(position, stream_id, version, event_type, schema, body, metadata, stamp,
                     previous.hex(), None, CHAIN_VERSION)
        )  # fmt: skip
    return rows


@settings(SLOW, max_examples=35)
@given(events=old_logs())
def test_any_stored_connect_log_folds_on_every_read_model(
    service: RunningService, events: list[StoredEvent]
) -> None:
    tag = uuid.uuid4().hex[:8]
    keys = [f"old-{tag}-{n}" for n in range(3)]
    service.store.import_rows(stored_rows(service.store.head(), events, keys))
    read_side_answers(service, keys)


def test_a_numeric_display_url_as_an_old_release_stored_it(service: RunningService) -> None:
    """The case of issue 17: ``"displayUrl": 12345`` stopped the runner on PostgreSQL."""
    data = {"key": "tenant-ledger", "clientKey": None, "baseUrl": "https://one.atlassian.net"}
    log: list[StoredEvent] = [
        (0, "Installed", 1, data | {"displayUrl": 12345, "productType": {"a": [1]}}, "1"),
        (0, "DetailsChanged", 1, {"displayUrl": ["x"], "productType": 1.5}, None),
    ]
    keys = [f"old-{uuid.uuid4().hex[:8]}"]
    service.store.import_rows(stored_rows(service.store.head(), log, keys))
    read_side_answers(service, keys)
    tenant = service.admin(f"/admin/tenants/{keys[0]}").json()
    assert (tenant["display_url"], tenant["product_type"]) == ('["x"]', "1.5")
