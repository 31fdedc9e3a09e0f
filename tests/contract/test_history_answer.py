"""The one history path (``reads.stream_events_json``, built from the stored rows)
gives, byte for byte, what msgspec makes of the events as ``reads.redact_event`` shows
them (decoded to typed events, every shared secret redacted), on every store: for
any event the store accepts, up to any point (``as_of``)."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.queries import reads
from eventstore import open_store
from eventstore.chain import CHAIN_VERSION, link, link_input_v2, rest_digest, stream_digest
from eventstore.clock import format_timestamp, simulated_clock
from eventstore.events import (
    EVENT_TYPES,
    BaseUrlChanged,
    DescriptorUpgraded,
    DetailsChanged,
    Disabled,
    Enabled,
    EventData,
    ForgeDetailsChanged,
    ForgeInstallConfirmed,
    ForgeInstalled,
    ForgeLicenseChanged,
    ForgeUninstalling,
    ForgeUpgraded,
    InstallConfirmed,
    Installed,
    LicenseChanged,
    Metadata,
    SealedSecret,
    SecretRotated,
    SiteRefused,
    TenantForgotten,
    Uninstalled,
    canonical_json,
    metadata_to_json,
)
from eventstore.store import EventStore
from eventstore.testing.synthetic import RandomLog
from eventstore.values import Head, NewEvent, RawEvent


def expected(store: EventStore, stream_id: str, up_to: int | datetime | None = None) -> bytes:
    """The answer as it was built before the stored-row path: typed events, redacted."""
    events = store.read_stream(stream_id, up_to)
    return msgspec.json.encode({"events": [reads.redact_event(e) for e in events]})


def test_a_realistic_log_shows_as_redacted_typed_events(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        seen: Counter[str] = Counter()
        streams: set[str] = set()
        for event in RandomLog(seed=3).events(1500):
            store.append(event.stream_id, [NewEvent(event.data, event.metadata)],
                         expected_version=event.version - 1)  # fmt: skip
            seen[type(event.data).__name__] += 1
            streams.add(event.stream_id)
        connect_types = {"Installed", "SecretRotated", "BaseUrlChanged", "DescriptorUpgraded",
                         "DetailsChanged", "InstallConfirmed", "Enabled", "Disabled",
                         "Uninstalled"}  # fmt: skip
        assert connect_types <= set(seen), connect_types - set(seen)
        for stream in sorted(streams):
            client_key = stream.split(":", 1)[1]
            body = reads.tenant_events_json(store, client_key)
            assert body == expected(store, stream)
            assert b'"ct"' not in body  # every sealed secret is redacted
            assert reads.tenant_events_answer(store, client_key) == msgspec.json.decode(body)
    finally:
        store.close()


# ------------------------------------------------------------------ any accepted event

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Text as the store takes it (no lone surrogates: UTF-8 cannot hold them), with the
# characters JSON escapes, others it passes through, and the secret's name.
texts = st.text(max_size=12) | st.sampled_from(
    ["", "\x00", "a\"b\\c", "\n\t\x1f\x7f", "\u2028é日本", "sharedSecret", "\\u0041", "null"]
)
keys = texts | st.sampled_from(["sharedSecret", "ct", "from", "to", "a", "B", "é"])
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # any size: msgspec keeps big ones exact
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=8,
)
json_objects = st.dictionaries(keys, json_values, max_size=5)
optional_texts = st.none() | texts
int64 = st.integers(-(2**63), 2**63 - 1)
sealed = st.builds(SealedSecret, alg=texts, nonce=texts, ct=st.just("CIPHERTEXT"), ad=texts)

# An install's other fields: the payload's own names are its fields, never details.
details = json_objects.map(
    lambda d: {k: v for k, v in d.items() if k not in ("key", "clientKey", "baseUrl", "sharedSecret")}
)
FIELDLESS = [InstallConfirmed(), Enabled(), Disabled(), Uninstalled(), ForgeUninstalling()]
# One strategy per type of the catalog (a test below holds it to the catalog).
BY_TYPE: dict[str, st.SearchStrategy[Any]] = {
    "Installed": st.builds(Installed, key=texts, client_key=texts, base_url=texts,
                           shared_secret=st.none() | sealed, details=details),
    "SecretRotated": st.builds(SecretRotated, shared_secret=sealed),
    "BaseUrlChanged": st.builds(BaseUrlChanged, from_=texts, to=texts),
    "DescriptorUpgraded": st.builds(DescriptorUpgraded, from_=optional_texts, to=texts),
    "DetailsChanged": st.builds(DetailsChanged, changes=json_objects),
    **{type(empty).__name__: st.just(empty) for empty in FIELDLESS},
    "TenantForgotten": st.builds(TenantForgotten, reason=texts),
    "ForgeInstalled": st.builds(
        ForgeInstalled, installation_id=texts, cloud_id=optional_texts,
        site_ari=optional_texts, product=optional_texts, app_id=texts,
        app_version=optional_texts, environment_id=optional_texts,
        environment_type=optional_texts, installer_account_id=optional_texts,
        license=st.none() | json_objects),
    "ForgeUpgraded": st.builds(ForgeUpgraded, from_=optional_texts, to=texts),
    "ForgeLicenseChanged": st.builds(ForgeLicenseChanged, from_=st.none() | json_objects,
                                     to=st.none() | json_objects),
    "ForgeDetailsChanged": st.builds(ForgeDetailsChanged, changes=json_objects),
    "ForgeInstallConfirmed": st.builds(ForgeInstallConfirmed, route=texts),
    "LicenseChanged": st.builds(LicenseChanged, from_=st.none() | json_objects,
                                to=st.none() | json_objects),
    "SiteRefused": st.builds(SiteRefused, status=st.integers(100, 599)),
}  # fmt: skip
event_data: st.SearchStrategy[EventData] = st.one_of(*BY_TYPE.values())
metadata = st.builds(
    Metadata,
    **{
        name: st.none() | (int64 if name in ("iat", "retry_count") else texts)
        for name in Metadata.__struct_fields__
    }
    # The call id has a column of its own too, where PostgreSQL can hold no NUL.
    | {"call_id": st.none() | texts.filter(lambda text: "\x00" not in text)},
)
# Times a clock can read: any microsecond (none too, which msgspec would write
# shorter), any year PostgreSQL and Python share.
times = st.datetimes(timezones=st.just(UTC)) | st.datetimes(timezones=st.just(UTC)).map(
    lambda t: t.replace(microsecond=0)
)
calls = st.lists(
    st.tuples(st.lists(st.tuples(event_data, metadata), min_size=1, max_size=3), times),
    min_size=1,
    max_size=4,
)


def fixed(at: datetime) -> Callable[[], datetime]:
    return lambda: at


@SETTINGS
@given(calls=calls, cut=st.integers(0, 12), cut_by_time=st.booleans())
def test_any_accepted_events_show_as_redacted_typed_events(
    store: EventStore,
    calls: list[tuple[list[tuple[EventData, Metadata]], datetime]],
    cut: int,
    cut_by_time: bool,
) -> None:
    stream = f"tenant:{uuid.uuid4()}"
    for events, at in calls:
        with simulated_clock(fixed(at)):
            store.append(stream, [NewEvent(d, m) for d, m in events],
                         expected_version=store.stream_version(stream))  # fmt: skip
    body = reads.stream_events_json(store, stream)
    assert body == expected(store, stream)
    assert b"CIPHERTEXT" not in body
    # Up to a point inside the stream (or before it: no event then).
    recorded = store.read_stream(stream)
    point = recorded[min(cut, len(recorded) - 1)]
    up_to: int | datetime = point.recorded_at if cut_by_time else point.position - (cut > 9)
    shown = reads.stream_events_json(store, stream, up_to)
    if shown is None:
        assert store.read_stream(stream, up_to) == []
    else:
        assert shown == expected(store, stream, up_to)


# ------------------------------------------------------------------ rows as stored


StoredRow = tuple[str, int, dict[str, Any], bytes | None]  # type, schema, data, metadata


def _stored(after: Head, stream: str, rows: list[StoredRow]) -> list[RawEvent]:
    """Rows as an older release stored them (any schema version), chained after ``after``
    as an append chains them."""
    previous, position, out = bytes.fromhex(after.hash), after.position, []
    for version, (event_type, schema, data, stored_meta) in enumerate(rows, start=1):
        body = canonical_json(data)
        meta = stored_meta or metadata_to_json(Metadata(call_id=f"c{version}"))
        stamp = format_timestamp(datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=version))
        position += 1
        rest = rest_digest(version, event_type, schema, stamp, body, meta)
        previous = link(previous, position, link_input_v2(stream_digest(stream), rest))
        out.append(RawEvent(position, stream, version, event_type, schema, body, meta, stamp,
                            previous.hex(), None, CHAIN_VERSION))  # fmt: skip
    return out


def test_older_schema_versions_and_odd_stored_data_are_decoded(store: EventStore) -> None:
    """A row of an older schema version is upcast, and data a fieldless type ignores is
    not shown, exactly as the typed read shows them."""
    stream = f"tenant:{uuid.uuid4()}"
    rows: list[StoredRow] = [
        ("DescriptorUpgraded", 1, {"previous": "1", "version": "2"}, None),
        ("DescriptorUpgraded", 1, {"version": "3"}, None),
        ("Enabled", 1, {"left": "over"}, None),
        ("DetailsChanged", 1, {"a": {"sharedSecret": "nested, not redacted"}}, None),
        ("DetailsChanged", 1, {"sharedSecret": {"ct": "CIPHERTEXT"}, "z": 1}, None),
        ("SecretRotated", 1, {"sharedSecret": {"alg": "a", "nonce": "n", "ct": "CIPHERTEXT",
                                               "ad": "d"}}, None),
        # Metadata no release wrote, but a reader must show as Metadata does: a null
        # (left out) and a field it does not know (left out).
        ("Disabled", 1, {}, b'{"alg":"HS256","call_id":"c","kid":null,"later":1}'),
    ]  # fmt: skip
    store.import_rows(_stored(store.head(), stream, rows))
    body = reads.stream_events_json(store, stream)
    assert body == expected(store, stream)
    assert b"CIPHERTEXT" not in body and b'"previous"' not in body and b'"left"' not in body
    assert b'"kid"' not in body and b'"later"' not in body


def test_every_event_type_is_drawn() -> None:
    assert set(BY_TYPE) == set(EVENT_TYPES)


@pytest.mark.parametrize("missing", ["never", "later"])
def test_a_missing_tenant_is_not_found(store: EventStore, missing: str) -> None:
    client_key = str(uuid.uuid4())
    if missing == "later":
        store.append(f"tenant:{client_key}", [NewEvent(Enabled(), Metadata())], 0)
    with pytest.raises(reads.NotFound) as found:
        reads.tenant_events_json(store, client_key, 0)
    assert found.value.error == ("unknown_tenant" if missing == "never" else "not_yet_installed")
