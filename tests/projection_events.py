"""Building ``RecordedEvent``s for projection tests, without a store.

``recorded`` and the per-type functions take the position, stream version and
time explicitly; ``Log`` hands them out in order (positions 1, 2, 3 …, per-stream
versions without gaps, a clock that ticks one minute per event) for tests that
only care about the sequence. Secrets are dummy sealed values: projections never
open them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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
    stream_id_for,
)
from eventstore.store import RecordedEvent

T0 = datetime(2024, 1, 1, tzinfo=UTC)
APP_KEY = "tenant-ledger"
DUMMY_SECRET = SealedSecret(alg="A256GCM", nonce="bm9uY2Vub25jZQ==", ct="Y2lwaGVy", ad="YWQ=")
DUMMY_HASH = "0" * 64


def recorded(
    client_key: str,
    data: EventData,
    *,
    position: int,
    version: int,
    at: datetime,
    descriptor_version: str | None = None,
) -> RecordedEvent:
    """One event of ``tenant:<client_key>`` as a store would hand it to a reader."""
    event_type = type(data).__name__
    return RecordedEvent(
        position=position,
        stream_id=stream_id_for(client_key),
        version=version,
        type=event_type,
        schema_version=2 if event_type == "DescriptorUpgraded" else 1,
        data=data,
        metadata=Metadata(call_id=f"call-{position}", descriptor_version=descriptor_version),
        recorded_at=at,
        hash=DUMMY_HASH,
    )


def installed_data(
    client_key: str,
    base_url: str,
    *,
    display_url: str | None = None,
    product_type: str | None = None,
    **details: Any,
) -> Installed:
    if display_url is not None:
        details["displayUrl"] = display_url
    if product_type is not None:
        details["productType"] = product_type
    return Installed(
        key=APP_KEY,
        client_key=client_key,
        base_url=base_url,
        shared_secret=DUMMY_SECRET,
        details=details,
    )


class Log:
    """A growing log: each method appends one event and returns it."""

    def __init__(self, start: datetime = T0, step: timedelta = timedelta(minutes=1)) -> None:
        self.events: list[RecordedEvent] = []
        self.now = start
        self.step = step
        self._versions: dict[str, int] = {}

    def add(
        self,
        client_key: str,
        data: EventData,
        *,
        descriptor_version: str | None = None,
        at: datetime | None = None,
    ) -> RecordedEvent:
        if at is None:
            self.now += self.step
            at = self.now
        version = self._versions.get(client_key, 0) + 1
        self._versions[client_key] = version
        event = recorded(
            client_key,
            data,
            position=len(self.events) + 1,
            version=version,
            at=at,
            descriptor_version=descriptor_version,
        )
        self.events.append(event)
        return event

    def installed(
        self,
        client_key: str,
        base_url: str,
        *,
        descriptor_version: str | None = None,
        display_url: str | None = None,
        product_type: str | None = None,
        at: datetime | None = None,
    ) -> RecordedEvent:
        data = installed_data(
            client_key, base_url, display_url=display_url, product_type=product_type
        )
        return self.add(client_key, data, descriptor_version=descriptor_version, at=at)

    def secret_rotated(self, client_key: str, *, at: datetime | None = None) -> RecordedEvent:
        return self.add(client_key, SecretRotated(shared_secret=DUMMY_SECRET), at=at)

    def base_url_changed(
        self, client_key: str, from_: str, to: str, *, at: datetime | None = None
    ) -> RecordedEvent:
        return self.add(client_key, BaseUrlChanged(from_=from_, to=to), at=at)

    def descriptor_upgraded(
        self, client_key: str, from_: str | None, to: str, *, at: datetime | None = None
    ) -> RecordedEvent:
        return self.add(
            client_key, DescriptorUpgraded(from_=from_, to=to), descriptor_version=to, at=at
        )

    def details_changed(
        self, client_key: str, changes: dict[str, Any], *, at: datetime | None = None
    ) -> RecordedEvent:
        return self.add(client_key, DetailsChanged(changes=changes), at=at)

    def install_confirmed(self, client_key: str, *, at: datetime | None = None) -> RecordedEvent:
        return self.add(client_key, InstallConfirmed(), at=at)

    def enabled(self, client_key: str, *, at: datetime | None = None) -> RecordedEvent:
        return self.add(client_key, Enabled(), at=at)

    def disabled(self, client_key: str, *, at: datetime | None = None) -> RecordedEvent:
        return self.add(client_key, Disabled(), at=at)

    def uninstalled(self, client_key: str, *, at: datetime | None = None) -> RecordedEvent:
        return self.add(client_key, Uninstalled(), at=at)
