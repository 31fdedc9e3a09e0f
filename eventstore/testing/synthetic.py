"""Synthetic logs for tests and benchmarks, built with the product's own encoding and chain.

Two ways to get events without running the service:

- ``Log`` hands out hand-written sequences (positions 1, 2, 3 …, per-stream versions
  without gaps, a clock that ticks one minute per event) as ``RecordedEvent``s for
  projection tests, and the same sequence as stored rows (``Log.rows``).
- ``RandomLog`` generates a realistic log of any size: tenants install (secrets sealed
  with AES-GCM under a per-tenant data key), then confirm, upgrade, rotate, rename,
  churn; optionally some new tenants reuse a base URL (reimports) and one tenant's
  history is spread evenly over the whole log.

``chain_rows`` turns either into ``RawEvent`` rows, encoded by ``eventstore.store.prepare``
and hashed by ``eventstore.chain`` (chain version 2) exactly as an append would, ready
for ``EventStore.import_rows``. Nothing here writes to a store.
"""

from __future__ import annotations

import base64
import os
import random
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from eventstore.chain import CHAIN_VERSION, link, link_input_v2, rest_digest, stream_digest
from eventstore.clock import format_timestamp, parse_timestamp
from eventstore.crypto import seal_secret, secret_ad
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
    stream_id_for,
)
from eventstore.values import Head, NewEvent, RawEvent, RecordedEvent, decode_event, prepare

T0 = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(microseconds=1_500_017)  # RandomLog's clock: about 40 events a minute
APP_KEY = "tenant-ledger"
DUMMY_SECRET = SealedSecret(alg="A256GCM", nonce="bm9uY2Vub25jZQ==", ct="Y2lwaGVy", ad="YWQ=")
DUMMY_HASH = "0" * 64
EMPTY_HEAD = Head(0, bytes(32).hex())


@dataclass(frozen=True, slots=True)
class Synthetic:
    """One generated event, before a position and a hash are given to it."""

    stream_id: str
    version: int
    data: EventData
    metadata: Metadata
    recorded_at: datetime


# ---------------------------------------------------------------- stored rows


def chain_rows(events: Iterable[Synthetic], after: Head = EMPTY_HEAD) -> Iterator[RawEvent]:
    """Rows as an append would store them, chained onto ``after`` (chain version 2)."""
    previous, position = bytes.fromhex(after.hash), after.position
    streams: dict[str, bytes] = {}
    for event in events:
        p = prepare(NewEvent(event.data, event.metadata))
        stamp = format_timestamp(event.recorded_at)
        stream = streams.get(event.stream_id)
        if stream is None:
            stream = streams[event.stream_id] = stream_digest(event.stream_id)
        rest = rest_digest(event.version, p.type, p.schema_version, stamp, p.data, p.metadata)
        position += 1
        previous = link(previous, position, link_input_v2(stream, rest))
        yield RawEvent(
            position,
            event.stream_id,
            event.version,
            p.type,
            p.schema_version,
            p.data,
            p.metadata,
            stamp,
            previous.hex(),
            p.call_id,
            CHAIN_VERSION,
        )


def decoded(rows: Iterable[RawEvent]) -> Iterator[RecordedEvent]:
    """Stored rows decoded the way a reader decodes them (fresh objects per event)."""
    for row in rows:
        yield decode_event(
            row.position,
            row.stream_id,
            row.version,
            row.type,
            row.schema_version,
            row.data,
            row.metadata,
            parse_timestamp(row.recorded_at),
            row.hash,
        )


def mix(rows: Iterable[RawEvent], counts: Counter[str]) -> Iterator[RawEvent]:
    """``rows`` unchanged, counted by event type into ``counts`` on the way."""
    for row in rows:
        counts[row.type] += 1
        yield row


# ---------------------------------------------------------------- hand-written sequences


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
        schema_version=SCHEMA_VERSIONS[event_type],
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
    """A growing log: each method appends one event and returns it.

    Events carry a dummy hash; ``rows`` gives the same sequence as chained rows.
    """

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

    def rows(self, after: Head = EMPTY_HEAD) -> Iterator[RawEvent]:
        """The events so far as stored rows chained onto ``after``."""
        return chain_rows(
            (
                Synthetic(e.stream_id, e.version, e.data, e.metadata, e.recorded_at)
                for e in self.events
            ),
            after,
        )

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


# ---------------------------------------------------------------- a realistic random log


@dataclass(slots=True)
class Tenant:
    stream_id: str
    client_key: str
    base_url: str
    descriptor: str
    data_key: bytes
    version: int = 0
    installed: bool = False


@dataclass
class RandomLog:
    """A realistic log of any size (see the module docstring); deterministic per seed
    except for the per-event random ids (call ids, token hashes, AES-GCM nonces).

    ``reuse_share`` of new tenants are installed at a base URL another tenant holds
    (a site reimport) or, for ``vacated_share`` of those, one a tenant moved away
    from; ``reused`` counts them. ``spread_events`` events of one more tenant are
    woven in evenly (its stream id is ``spread.stream_id``).
    """

    seed: int = 7
    new_tenant_share: float = 0.12
    reuse_share: float = 0.0
    vacated_share: float = 0.0
    start: datetime = T0
    step: timedelta = STEP
    tenants: list[Tenant] = field(default_factory=list)
    reused: Counter[str] = field(default_factory=Counter)

    # (type, weight) of the events that follow a tenant's first install.
    FOLLOW_UPS = (
        ("InstallConfirmed", 34),
        ("DescriptorUpgraded", 16),
        ("DetailsChanged", 14),
        ("Enabled", 9),
        ("Disabled", 9),
        ("SecretRotated", 8),
        ("BaseUrlChanged", 5),
        ("Uninstalled", 3),
        ("Installed", 2),  # reinstall after an uninstall (or a plain confirm otherwise)
    )
    SPREAD_CYCLE = ("Disabled", "Enabled", "InstallConfirmed", "DetailsChanged")

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.vacated: list[str] = []
        self._types = [t for t, _ in self.FOLLOW_UPS]
        self._weights = list(accumulate(w for _, w in self.FOLLOW_UPS))
        self._addresses = [f"18.{n >> 8 & 255}.{n & 255}.{n % 253 + 1}" for n in range(4096)]
        self.spread = self._fresh_tenant()

    def events(self, count: int, spread_events: int = 0) -> Iterator[Synthetic]:
        """``count`` events in all, ``spread_events`` of them the spread tenant's."""
        every = max(1, count // spread_events) if spread_events else 0
        at = self.start
        for n in range(1, count + 1):
            at += self.step
            if every and n % every == 0 and self.spread.version < spread_events:
                yield self._event(self.spread, self._spread_data(n), at, n)
                continue
            if not self.tenants or self.rng.random() < self.new_tenant_share:
                tenant = self._new_tenant()
                self.tenants.append(tenant)
                data: EventData = self._installed(tenant)
            else:
                tenant = self.tenants[int(self.rng.random() * len(self.tenants))]
                data = self._follow_up(tenant)
            yield self._event(tenant, data, at, n)

    def _event(self, tenant: Tenant, data: EventData, at: datetime, n: int) -> Synthetic:
        if isinstance(data, Installed):
            tenant.installed = True
        elif isinstance(data, Uninstalled):
            tenant.installed = False
        tenant.version += 1
        event_type = type(data).__name__
        rs256 = event_type == "Installed"
        metadata = Metadata(
            call_id=os.urandom(16).hex(),
            received_at=format_timestamp(at),
            token_sha256=os.urandom(32).hex(),
            iat=int(self.start.timestamp()) + n,
            alg="RS256" if rs256 else "HS256",
            kid=f"connect-key-{n % 3 + 1}" if rs256 else None,
            remote_addr=self._addresses[n & 4095],
            path=_PATHS.get(event_type, "/installed"),
            descriptor_version=tenant.descriptor,
        )
        return Synthetic(tenant.stream_id, tenant.version, data, metadata, at)

    def _fresh_tenant(self) -> Tenant:
        rng = self.rng
        client_key = str(uuid.UUID(int=rng.getrandbits(128)))
        return Tenant(
            stream_id=stream_id_for(client_key),
            client_key=client_key,
            base_url=_site(rng),
            descriptor=str(rng.randrange(1, 4)),
            data_key=rng.randbytes(32),
        )

    def _new_tenant(self) -> Tenant:
        tenant, rng = self._fresh_tenant(), self.rng
        if self.tenants and self.reuse_share and rng.random() < self.reuse_share:
            if self.vacated and rng.random() < self.vacated_share:
                tenant.base_url = self.vacated[int(rng.random() * len(self.vacated))]
                self.reused["a URL its holder had moved away from"] += 1
            else:
                holder = self.tenants[int(rng.random() * len(self.tenants))]
                tenant.base_url = holder.base_url
                self.reused["a URL another tenant holds now"] += 1
        return tenant

    def _sealed(self, tenant: Tenant) -> SealedSecret:
        secret = base64.urlsafe_b64encode(self.rng.randbytes(48)).decode()
        return seal_secret(tenant.data_key, secret, secret_ad(tenant.stream_id, tenant.version + 1))

    def _installed(self, tenant: Tenant) -> Installed:
        return Installed(
            key=APP_KEY,
            client_key=tenant.client_key,
            base_url=tenant.base_url,
            shared_secret=self._sealed(tenant),
            details=install_details(self.rng, tenant.base_url),
        )

    def _follow_up(self, tenant: Tenant) -> EventData:
        rng = self.rng
        kind = rng.choices(self._types, cum_weights=self._weights)[0]
        if not tenant.installed:
            kind = "Installed"
        elif kind == "Installed":
            kind = "InstallConfirmed"
        if kind == "Installed":
            return self._installed(tenant)
        if kind == "DescriptorUpgraded":
            old, tenant.descriptor = tenant.descriptor, str(int(tenant.descriptor) + 1)
            return DescriptorUpgraded(from_=old, to=tenant.descriptor)
        if kind == "DetailsChanged":
            return DetailsChanged(changes=_server_versions(rng))
        if kind == "SecretRotated":
            return SecretRotated(shared_secret=self._sealed(tenant))
        if kind == "BaseUrlChanged":
            old, tenant.base_url = tenant.base_url, _site(rng)
            self.vacated.append(old)
            return BaseUrlChanged(from_=old, to=tenant.base_url)
        return _NO_DATA[kind]

    def _spread_data(self, n: int) -> EventData:
        if self.spread.version == 0:
            return self._installed(self.spread)
        kind = self.SPREAD_CYCLE[(self.spread.version - 1) % 4]
        if kind == "DetailsChanged":
            return DetailsChanged(changes={"serverVersion": str(100000 + n % 1000)})
        return _NO_DATA[kind]


_PATHS = {"Enabled": "/enabled", "Disabled": "/disabled", "Uninstalled": "/uninstalled"}
_NO_DATA: dict[str, EventData] = {
    "InstallConfirmed": InstallConfirmed(),
    "Enabled": Enabled(),
    "Disabled": Disabled(),
    "Uninstalled": Uninstalled(),
}


def _site(rng: random.Random) -> str:
    return f"https://site-{rng.getrandbits(32):08x}.atlassian.net"


def _server_versions(rng: random.Random) -> dict[str, Any]:
    return {
        "serverVersion": str(100000 + rng.randrange(1000)),
        "pluginsVersion": f"1001.0.0-SNAPSHOT.{rng.getrandbits(28):07x}",
    }


def install_details(rng: random.Random, base_url: str) -> dict[str, Any]:
    """The ten or so payload fields beyond key/clientKey/baseUrl/sharedSecret."""
    return {
        "displayUrl": base_url,
        "displayUrlServicedeskHelpCenter": base_url + "/servicedesk/customer",
        "productType": rng.choice(("jira", "confluence")),
        "description": "Atlassian JIRA at " + base_url,
        "eventType": "installed",
        "serviceEntitlementNumber": str(rng.randrange(10**9)),
        "entitlementId": str(uuid.UUID(int=rng.getrandbits(128))),
        "entitlementNumber": f"E-{rng.randrange(10**3)}-{rng.randrange(10**3)}",
        "oauthClientId": base64.urlsafe_b64encode(rng.randbytes(24)).decode().rstrip("="),
        "installationId": f"ari:cloud:ecosystem::installation/{uuid.UUID(int=rng.getrandbits(128))}",
        **_server_versions(rng),
    }
