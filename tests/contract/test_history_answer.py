"""The history route's encoder (``reads.tenant_events_json``) gives, byte for byte, what
msgspec makes of ``reads.tenant_events_answer`` (the CLI's answer), for every event type
and with every shared secret redacted."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import msgspec

from app.queries import reads
from eventstore import open_store
from eventstore.clock import format_timestamp
from eventstore.events import EVENT_TYPES, LicenseChanged, Metadata, SiteRefused, TenantForgotten
from eventstore.testing.synthetic import RandomLog
from eventstore.values import NewEvent


def test_history_json_is_the_answer_encoded(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'ledger.db'}")
    try:
        seen: Counter[str] = Counter()
        streams: set[str] = set()
        for event in RandomLog(seed=3).events(1500):
            store.append(event.stream_id, [NewEvent(event.data, event.metadata)],
                         expected_version=event.version - 1)
            seen[type(event.data).__name__] += 1
            streams.add(event.stream_id)
        # `ledger forget` is an operator's act, not a host's call: the random log has none.
        forgotten = sorted(streams)[0]
        store.append(
            forgotten,
            [NewEvent(TenantForgotten(reason="r"), Metadata(operator="alice", host="box"))],
            expected_version=store.stream_version(forgotten),
        )
        seen["TenantForgotten"] += 1
        # The license check's observations are the ledger's own too (SPEC §11).
        checked = sorted(streams)[1]
        source = Metadata(source="license_check")
        store.append(
            checked,
            [
                NewEvent(LicenseChanged(from_=None, to={"active": True}), source),
                NewEvent(SiteRefused(status=404), source),
            ],
            expected_version=store.stream_version(checked),
        )
        seen.update(["LicenseChanged", "SiteRefused"])
        connect_types = {name for name in EVENT_TYPES if not name.startswith("Forge")}
        assert connect_types <= set(seen), connect_types - set(seen)
        for stream in sorted(streams):
            client_key = stream.split(":", 1)[1]
            expected = msgspec.json.encode(reads.tenant_events_answer(store, client_key))
            assert reads.tenant_events_json(store, client_key) == expected
            assert b'"ct"' not in expected  # every sealed secret is redacted
    finally:
        store.close()


def test_shown_time_encodes_as_format_timestamp() -> None:
    utc_zone = ZoneInfo("Etc/UTC")
    for zone in (UTC, utc_zone, timezone(timedelta(hours=2)), timezone(timedelta(minutes=-30))):
        for micro in (0, 1, 10, 500_000, 123_000, 999_999):
            value = datetime(2026, 12, 2, 23, 59, 59, micro, tzinfo=zone)
            assert msgspec.json.encode(reads.shown_time(value)) == msgspec.json.encode(
                format_timestamp(value)
            ), value
