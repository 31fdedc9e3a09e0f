"""PostgreSQL store figures (SPEC §9): append rate and reading the whole log.

a. Single-event appends, one transaction each, one writer: this project's
   ``PostgresEventStore.append`` (an ``Enabled``/``Disabled``/small ``DetailsChanged``
   with realistic ``Metadata`` and the idempotency key the service passes) against the
   ``eventsourcing`` library's ``PostgresApplicationRecorder`` (one ``StoredEvent`` per
   ``insert_events`` call, same payload bytes), each in its own fresh database on the
   same server. The two run in alternating rounds so that background noise (a
   checkpoint, another process) falls on both.

b. ``read_all`` of 1,000,000 events decoded to typed ``RecordedEvent``s. The log is
   bulk-loaded first with ``COPY`` (a realistic mix of all nine event types, secrets
   sealed with AES-GCM), the hash chain computed with ``eventstore.chain.row_digest``
   and ``link`` exactly as the store does, ``ledger_head`` set to match; the chain is
   then checked with the store's own ``verify()`` and one real ``append`` on top.
   ``sum(1 for _ in store.read_all(0, batch_size))`` is timed for several batch sizes.
   A clearly labelled *prototype* reader (not the project's code) shows what a
   cheaper decode path reaches on the same data; the RESULT line always measures
   the project's real ``read_all``.

Run: ``.venv/bin/python bench/store.py`` (full figures), or quicker:
``.venv/bin/python bench/store.py --events 3000 --seconds 3 --read-events 100000``.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import io
import os
import pstats
import random
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate, islice
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import psycopg
from _benchkit import print_environment, result_line, scratch_database

from eventstore.chain import GENESIS, link, row_digest
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
    SecretRotated,
    Uninstalled,
    data_to_json,
    decode_data,
    metadata_to_json,
    stream_id_for,
)
from eventstore.postgres import PostgresEventStore
from eventstore.store import NewEvent, RecordedEvent, format_timestamp

APPEND_TARGET = 3000.0
APPEND_RATIO_TARGET = 3.0
READ_TARGET = 200_000.0


# ---------------------------------------------------------------- realistic data


def _hex(nbytes: int) -> str:
    return os.urandom(nbytes).hex()


def make_metadata(rng: random.Random, event: str, stamp: str, iat: int, alg: str) -> Metadata:
    return Metadata(
        call_id=uuid.UUID(int=rng.getrandbits(128)).hex,
        received_at=stamp,
        token_sha256=f"{rng.getrandbits(256):064x}",
        iat=iat,
        alg=alg,
        kid=f"connect-key-{rng.randrange(1, 4)}" if alg == "RS256" else None,
        remote_addr=f"18.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        path=f"/{event}",
        descriptor_version=str(rng.randrange(1, 6)),
    )


def install_details(rng: random.Random, base_url: str) -> dict[str, Any]:
    """The ten or so payload fields beyond key/clientKey/baseUrl/sharedSecret."""
    return {
        "displayUrl": base_url,
        "displayUrlServicedeskHelpCenter": base_url + "/servicedesk/customer",
        "serverVersion": str(100000 + rng.randrange(1000)),
        "pluginsVersion": f"1001.0.0-SNAPSHOT.{rng.getrandbits(28):07x}",
        "productType": rng.choice(("jira", "confluence")),
        "description": "Atlassian JIRA at " + base_url,
        "eventType": "installed",
        "serviceEntitlementNumber": str(rng.randrange(10**9)),
        "entitlementId": str(uuid.UUID(int=rng.getrandbits(128))),
        "entitlementNumber": f"E-{rng.randrange(10**3)}-{rng.randrange(10**3)}-{rng.randrange(10**3)}",
        "oauthClientId": base64.urlsafe_b64encode(rng.randbytes(24)).decode().rstrip("="),
        "installationId": f"ari:cloud:ecosystem::installation/{uuid.UUID(int=rng.getrandbits(128))}",
    }


# ---------------------------------------------------------------- a. appends


@dataclass
class Rate:
    events: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class AppendWorkload:
    """Single-event appends over a pool of tenant streams, versions tracked locally."""

    def __init__(self, tenants: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.client_keys = [str(uuid.UUID(int=self.rng.getrandbits(128))) for _ in range(tenants)]
        self.versions = [0] * tenants
        self.next = 0

    def take(self) -> tuple[int, str, EventData, Metadata]:
        index = self.next
        self.next = (index + 1) % len(self.client_keys)
        version = self.versions[index]
        self.versions[index] = version + 1
        kind = version % 3
        data: EventData
        if kind == 0:
            data, event = Enabled(), "enabled"
        elif kind == 1:
            data, event = Disabled(), "disabled"
        else:
            data = DetailsChanged(changes={"serverVersion": str(100000 + version)})
            event = "installed"
        now = datetime.now(UTC)
        metadata = make_metadata(
            self.rng, event, format_timestamp(now), int(now.timestamp()), "HS256"
        )
        return version, stream_id_for(self.client_keys[index]), data, metadata


def ledger_round(store: PostgresEventStore, work: AppendWorkload, limit: int, seconds: float) -> Rate:
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while count < limit:
        version, stream_id, data, metadata = work.take()
        store.append(
            stream_id,
            [NewEvent(data, metadata)],
            expected_version=version,
            idempotency_key=metadata.token_sha256,
        )
        count += 1
        if count & 31 == 0 and time.perf_counter() > deadline:
            break
    return Rate(count, time.perf_counter() - started)


def eventsourcing_round(recorder: Any, work: AppendWorkload, limit: int, seconds: float) -> Rate:
    from eventsourcing.persistence import StoredEvent

    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while count < limit:
        version, stream_id, data, metadata = work.take()
        # Same bytes as the ledger stores: the event's data and metadata as JSON.
        state = b'{"data":' + data_to_json(data) + b',"metadata":' + metadata_to_json(metadata) + b"}"
        recorder.insert_events(
            [
                StoredEvent(
                    originator_id=uuid.UUID(stream_id[len("tenant:") :]),
                    originator_version=version + 1,
                    topic=f"ledger.events:{type(data).__name__}",
                    state=state,
                )
            ]
        )
        count += 1
        if count & 31 == 0 and time.perf_counter() > deadline:
            break
    return Rate(count, time.perf_counter() - started)


def eventsourcing_recorder(url: str) -> tuple[Any, Any]:
    from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

    conninfo = psycopg.conninfo.conninfo_to_dict(url)
    datastore = PostgresDatastore(
        dbname=str(conninfo["dbname"]),
        host=str(conninfo.get("host", "127.0.0.1")),
        port=str(conninfo.get("port", 5432)),
        user=str(conninfo.get("user", "postgres")),
        password=str(conninfo.get("password", "")),
    )
    recorder = PostgresApplicationRecorder(datastore, events_table_name="stored_events")
    recorder.create_table()
    return datastore, recorder


def bench_append(events: int, seconds: float, rounds: int) -> None:
    from importlib.metadata import version

    print(
        f"\n-- a. single-event appends, one transaction each, one writer: up to {events} events"
        f" or {seconds:.0f} s per store, in {rounds} alternating rounds"
    )
    with scratch_database("append") as ledger_url, scratch_database("es") as es_url:
        store = PostgresEventStore(ledger_url, min_connections=1, max_connections=1)
        datastore, recorder = eventsourcing_recorder(es_url)
        print(
            f"   eventsourcing {version('eventsourcing')}: "
            f"PostgresApplicationRecorder, enable_db_functions={datastore.enable_db_functions}"
            " (library default: pipelined BEGIN; LOCK TABLE; NOTIFY; INSERT ... unnest; COMMIT)"
        )
        try:
            ours_work, es_work = AppendWorkload(1000, 1), AppendWorkload(1000, 2)
            # Warm up: connections, prepared statements, the first pages of each index.
            ledger_round(store, ours_work, 300, 5)
            eventsourcing_round(recorder, es_work, 300, 5)
            ours, theirs = Rate(), Rate()
            per_round = max(1, events // rounds)
            for number in range(rounds):
                order = [("ledger", ours), ("es", theirs)]
                if number % 2:
                    order.reverse()
                for name, total in order:
                    if name == "ledger":
                        rate = ledger_round(store, ours_work, per_round, seconds / rounds)
                    else:
                        rate = eventsourcing_round(recorder, es_work, per_round, seconds / rounds)
                    total.events += rate.events
                    total.seconds += rate.seconds
                    print(f"   round {number + 1} {name:<7} {rate.events:>6} events in "
                          f"{rate.seconds:6.2f} s = {rate.per_second:8.0f} events/s")
        finally:
            store.close()
            datastore.close()
    ratio = ours.per_second / theirs.per_second
    print(f"   tenant ledger PostgresEventStore.append : {ours.per_second:8.0f} events/s "
          f"({ours.events} events, {ours.seconds:.2f} s, {1e3 / ours.per_second:.3f} ms each)")
    print(f"   eventsourcing PostgresApplicationRecorder: {theirs.per_second:8.0f} events/s "
          f"({theirs.events} events, {theirs.seconds:.2f} s, {1e3 / theirs.per_second:.3f} ms each)")
    print(result_line("append_events_per_s", ours.per_second, "events/s", APPEND_TARGET))
    print(result_line("append_vs_eventsourcing", ratio, "x", APPEND_RATIO_TARGET))


# ---------------------------------------------------------------- b. read_all


@dataclass
class Tenant:
    stream_id: str
    client_key: str
    base_url: str
    version: int
    installed: bool
    descriptor: str
    data_key: bytes


class LogGenerator:
    """A realistic log: tenants install, then confirm, upgrade, rotate, rename, churn.

    Each generated row is ``(stream_id, version, type, schema_version, data, metadata,
    call_id)``, data and metadata being the exact bytes the store would write.
    """

    # (type, weight) of the events that follow a tenant's first install.
    FOLLOW_UPS: tuple[tuple[str, int], ...] = (
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

    def __init__(self, seed: int, new_tenant_share: float = 0.12) -> None:
        self.rng = random.Random(seed)
        self.new_tenant_share = new_tenant_share
        self.tenants: list[Tenant] = []
        self.types = [t for t, _ in self.FOLLOW_UPS]
        self.cum_weights = list(accumulate(w for _, w in self.FOLLOW_UPS))

    def _new_tenant(self) -> Tenant:
        rng = self.rng
        client_key = str(uuid.UUID(int=rng.getrandbits(128)))
        return Tenant(
            stream_id=stream_id_for(client_key),
            client_key=client_key,
            base_url=f"https://site-{rng.getrandbits(32):08x}.atlassian.net",
            version=0,
            installed=False,
            descriptor=str(rng.randrange(1, 4)),
            data_key=rng.randbytes(32),
        )

    def _installed(self, tenant: Tenant) -> Installed:
        sealed = seal_secret(
            tenant.data_key,
            base64.urlsafe_b64encode(self.rng.randbytes(48)).decode(),
            secret_ad(tenant.stream_id, tenant.version + 1),
        )
        return Installed(
            key="tenant-ledger",
            client_key=tenant.client_key,
            base_url=tenant.base_url,
            shared_secret=sealed,
            details=install_details(self.rng, tenant.base_url),
        )

    def _follow_up(self, tenant: Tenant) -> EventData:
        rng = self.rng
        kind = rng.choices(self.types, cum_weights=self.cum_weights)[0]
        if not tenant.installed:
            kind = "Installed"
        if kind == "Installed" and tenant.installed:
            kind = "InstallConfirmed"
        if kind == "Installed":
            return self._installed(tenant)
        if kind == "InstallConfirmed":
            return InstallConfirmed()
        if kind == "DescriptorUpgraded":
            new = str(int(tenant.descriptor) + 1)
            old, tenant.descriptor = tenant.descriptor, new
            return DescriptorUpgraded(from_=old, to=new)
        if kind == "DetailsChanged":
            return DetailsChanged(
                changes={
                    "serverVersion": str(100000 + rng.randrange(1000)),
                    "pluginsVersion": f"1001.0.0-SNAPSHOT.{rng.getrandbits(28):07x}",
                }
            )
        if kind == "Enabled":
            return Enabled()
        if kind == "Disabled":
            return Disabled()
        if kind == "SecretRotated":
            sealed = seal_secret(
                tenant.data_key,
                base64.urlsafe_b64encode(rng.randbytes(48)).decode(),
                secret_ad(tenant.stream_id, tenant.version + 1),
            )
            return SecretRotated(shared_secret=sealed)
        if kind == "BaseUrlChanged":
            new_url = f"https://site-{rng.getrandbits(32):08x}.atlassian.net"
            old_url, tenant.base_url = tenant.base_url, new_url
            return BaseUrlChanged(from_=old_url, to=new_url)
        return Uninstalled()

    def rows(
        self, count: int, start: datetime, step: timedelta
    ) -> Iterator[tuple[str, int, str, int, bytes, bytes, str, str]]:
        """``count`` rows: (stream_id, version, type, schema, data, metadata, call_id, stamp)."""
        rng = self.rng
        base_iat = int(start.timestamp())
        addresses = [f"18.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
                     for _ in range(4096)]
        kids = ["connect-key-1", "connect-key-2", "connect-key-3"]
        paths = {"Enabled": "/enabled", "Disabled": "/disabled", "Uninstalled": "/uninstalled"}
        at = start
        for n in range(count):
            at += step
            # == format_timestamp(at) for a UTC time, without strftime's cost.
            stamp = at.isoformat(timespec="microseconds")[:-6] + "Z"
            if not self.tenants or rng.random() < self.new_tenant_share:
                tenant = self._new_tenant()
                self.tenants.append(tenant)
                data: EventData = self._installed(tenant)
            else:
                tenant = self.tenants[int(rng.random() * len(self.tenants))]
                data = self._follow_up(tenant)
            if isinstance(data, Installed):
                tenant.installed = True
            elif isinstance(data, Uninstalled):
                tenant.installed = False
            tenant.version += 1
            event_type = type(data).__name__
            rs256 = event_type == "Installed"
            call_id = os.urandom(16).hex()
            metadata = Metadata(
                call_id=call_id,
                received_at=stamp,
                token_sha256=os.urandom(32).hex(),
                iat=base_iat + n,
                alg="RS256" if rs256 else "HS256",
                kid=kids[n % 3] if rs256 else None,
                remote_addr=addresses[n & 4095],
                path=paths.get(event_type, "/installed"),
                descriptor_version=tenant.descriptor,
            )
            yield (
                tenant.stream_id,
                tenant.version,
                event_type,
                SCHEMA_VERSIONS[event_type],
                data_to_json(data),
                metadata_to_json(metadata),
                call_id,
                stamp,
            )


def _copy_text(value: str) -> str:
    # COPY text format: backslash is the escape character; compact JSON never holds
    # a raw tab, newline or carriage return.
    return value.replace("\\", "\\\\") if "\\" in value else value


def bulk_load(url: str, count: int, seed: int = 7) -> tuple[int, bytes, dict[str, int]]:
    """COPY ``count`` chained events into a migrated, empty store; returns (head, hash, mix)."""
    generator = LogGenerator(seed)
    # About 40 events a minute, microseconds included (as the store writes them).
    rows = generator.rows(count, datetime(2024, 1, 1, tzinfo=UTC), timedelta(microseconds=1_500_017))
    return copy_rows(url, rows)


def copy_rows(
    url: str, rows: Iterator[tuple[str, int, str, int, bytes, bytes, str, str]]
) -> tuple[int, bytes, dict[str, int]]:
    """COPY rows as ``LogGenerator.rows`` yields them, chained like the store chains
    them, into a migrated, empty store; returns (head position, head hash, mix)."""
    previous = GENESIS
    mix: dict[str, int] = {}
    position = 0
    chunk: list[str] = []
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            row = cur.execute("SELECT position FROM ledger_head").fetchone()
            if not row or row[0] != 0:
                raise RuntimeError("bulk_load needs an empty log")
            with cur.copy(
                "COPY events (position, stream_id, version, type, schema_version, data,"
                " metadata, recorded_at, hash, call_id) FROM STDIN"
            ) as copy:
                for stream_id, version, event_type, schema, data, metadata, call_id, stamp in rows:
                    position += 1
                    digest = row_digest(
                        stream_id, version, event_type, schema, stamp, data, metadata
                    )
                    previous = link(previous, position, digest)
                    mix[event_type] = mix.get(event_type, 0) + 1
                    chunk.append(
                        f"{position}\t{stream_id}\t{version}\t{event_type}\t{schema}\t"
                        f"{_copy_text(data.decode())}\t{_copy_text(metadata.decode())}\t"
                        f"{stamp}\t\\\\x{previous.hex()}\t{call_id}\n"
                    )
                    if len(chunk) >= 5000:
                        copy.write("".join(chunk))
                        chunk.clear()
                if chunk:
                    copy.write("".join(chunk))
            cur.execute(
                "UPDATE ledger_head SET position = %s, hash = %s", [position, previous]
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (FREEZE, ANALYZE) events")
    return position, previous, mix


# Prototype readers, NOT the project's code: they show what a cheaper read path reaches
# on the same data, and are what the report proposes for PostgresEventStore.read_all.
# Same keyset pages and the same RecordedEvent values (checked equal), but:
#  - binary result format, so recorded_at arrives as int64 microseconds (no text
#    timestamptz parsing) and the hash as raw bytea (no server-side encode(..., 'hex'));
#  - text columns loaded as bytes (psycopg's C ByteaBinaryLoader registered for `text`
#    on this connection): msgspec decodes data and metadata straight from the bytes,
#    without building two ~0.5 KB str objects per row first;
#  - RecordedEvent built positionally, the event type string interned per page.
# "prefetch" also fetches page n+1 in a background thread while page n is decoded, so
# the PostgreSQL backend (another core) works in parallel with the decoding.
_PROTO_QUERY = (
    "SELECT position, stream_id, version, type, schema_version, data, metadata,"
    " recorded_at, hash FROM events WHERE position > %s ORDER BY position LIMIT %s"
)


def _proto_pages(url: str, batch_size: int) -> Iterator[list[Any]]:
    from psycopg.types.string import ByteaBinaryLoader

    after = 0
    with psycopg.connect(url, autocommit=True) as conn:
        conn.adapters.register_loader("text", ByteaBinaryLoader)
        while True:
            with conn.cursor(binary=True) as cur:
                rows = cur.execute(_PROTO_QUERY, [after, batch_size], prepare=True).fetchall()
            if rows:
                yield rows
            if len(rows) < batch_size:
                return
            after = rows[-1][0]


def _prefetched(pages: Iterator[list[Any]], depth: int = 2) -> Iterator[list[Any]]:
    import queue
    import threading

    box: queue.Queue[list[Any] | BaseException | None] = queue.Queue(maxsize=depth)

    def produce() -> None:
        try:
            for page in pages:
                box.put(page)
            box.put(None)
        except BaseException as error:
            box.put(error)

    threading.Thread(target=produce, name="prefetch", daemon=True).start()
    while (item := box.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def prototype_read_all(url: str, batch_size: int, prefetch: bool = False) -> Iterator[RecordedEvent]:
    from eventstore.events import decode_metadata

    pages = _proto_pages(url, batch_size)
    if prefetch:
        pages = _prefetched(pages)
    types: dict[bytes, str] = {}
    for rows in pages:
        for position, stream_id, version, kind, schema, data, meta, at, digest in rows:
            event_type = types.get(kind)
            if event_type is None:
                event_type = types[kind] = kind.decode()
            yield RecordedEvent(
                position,
                stream_id.decode(),
                version,
                event_type,
                schema,
                decode_data(event_type, schema, data),
                decode_metadata(meta),
                at,
                digest.hex(),
            )


def check_prototype(store: PostgresEventStore, url: str, sample: int = 30_000) -> None:
    """The prototypes must return exactly what read_all returns."""
    ours = list(islice(store.read_all(0, 5000), sample))
    for prefetch in (False, True):
        proto = list(islice(prototype_read_all(url, 5000, prefetch), sample))
        if ours != proto:
            bad = next(i for i, (a, b) in enumerate(zip(ours, proto, strict=False)) if a != b)
            raise SystemExit(f"prototype reader differs from read_all at {bad}: {ours[bad]}"
                             f" != {proto[bad]}")


def timed_count(make: Callable[[], Iterator[RecordedEvent]]) -> tuple[int, float]:
    started = time.perf_counter()
    count = sum(1 for _ in make())
    return count, time.perf_counter() - started


def profile_read(store: PostgresEventStore, batch_size: int, events: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in islice(store.read_all(0, batch_size), events):
        pass
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(14)
    print(f"   cProfile of read_all over the first {events} events (batch {batch_size}),"
          " by own time:")
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    for line in lines[start : start + 16]:
        print("     " + line[:150])


def bench_read(events: int, batch_sizes: list[int], verify: str, profile: bool,
               prototype: bool, repeats: int) -> None:
    print(f"\n-- b. read_all of {events:,} events decoded to typed RecordedEvents")
    with scratch_database("read") as url:
        store = PostgresEventStore(url, min_connections=1, max_connections=2)
        try:
            started = time.perf_counter()
            head_position, head_hash, mix = bulk_load(url, events)
            elapsed = time.perf_counter() - started
            with psycopg.connect(url) as conn:
                size_row = conn.execute(
                    "SELECT pg_size_pretty(pg_total_relation_size('events'))"
                ).fetchone()
            shares = ", ".join(f"{k} {v / events:.1%}" for k, v in sorted(mix.items(),
                                                                          key=lambda kv: -kv[1]))
            print(f"   bulk-loaded {head_position:,} events by COPY in {elapsed:.1f} s "
                  f"(table with indexes: {size_row[0] if size_row else '?'}); mix: {shares}")
            head = store.head()
            assert head.position == head_position and head.hash == head_hash.hex(), head
            check_chain(store, verify)

            # Warm the page cache (the table is larger than shared_buffers) with one pass.
            count, seconds = timed_count(lambda: store.read_all(0, batch_sizes[0]))
            print(f"   warm-up pass (batch {batch_sizes[0]}): {count:,} events in {seconds:.2f} s"
                  f" = {count / seconds:,.0f} events/s")
            assert count == events + 1, count
            best = (0.0, 0)
            for batch in batch_sizes:
                rates = []
                for _ in range(repeats):
                    count, seconds = timed_count(lambda b=batch: store.read_all(0, b))  # type: ignore[misc]
                    rates.append(count / seconds)
                rate = max(rates)
                print(f"   read_all batch_size={batch:>6}: {count:,} events, best of {repeats}"
                      f" {rate:10,.0f} events/s (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
                best = max(best, (rate, batch))
            rate, batch = best
            if profile:
                profile_read(store, batch, min(events, 200_000))
            if prototype:
                check_prototype(store, url)
                for prefetch in (False, True):
                    label = "cheaper decode + prefetch thread" if prefetch else "cheaper decode"
                    rates = []
                    for _ in range(repeats):
                        count, seconds = timed_count(
                            lambda p=prefetch: prototype_read_all(url, batch, p)  # type: ignore[misc]
                        )
                        rates.append(count / seconds)
                    print(f"   PROTOTYPE reader, not the project's code ({label}; see"
                          f" prototype_read_all; equal to read_all on the first 30,000 events),"
                          f" batch {batch}: best of {repeats} {max(rates):,.0f} events/s (runs:"
                          f" {', '.join(f'{r:,.0f}' for r in rates)})")
            print(f"   best: batch_size={batch}, {rate:,.0f} events/s")
            print(result_line("read_all_events_per_s", rate, "events/s", READ_TARGET))
        finally:
            store.close()


def check_chain(store: PostgresEventStore, verify: str) -> None:
    """Prove the bulk-loaded chain is the store's own: verify(), then a real append on top."""
    from eventstore.chain import verify_chain

    started = time.perf_counter()
    if verify == "full":
        report = store.verify()
    else:
        report = verify_chain(islice(store.read_raw(0, 5000), 50_000))
    if not report.ok:
        raise SystemExit(f"bulk-loaded chain does not verify: {report}")
    what = "whole log" if verify == "full" else f"first {report.events:,} events"
    print(f"   store.verify() ({what}): ok in {time.perf_counter() - started:.1f} s")
    # One real append: ledger_append links onto the head we wrote.
    stamp = format_timestamp(datetime.now(UTC))
    meta = Metadata(call_id=_hex(16), received_at=stamp, alg="HS256", path="/enabled")
    result = store.append(stream_id_for("bench-check"), [NewEvent(Enabled(), meta)], 0)
    recorded = result.events[0]
    rows = list(store.read_raw(recorded.position - 2, 10))
    previous = bytes.fromhex(rows[0].hash)
    last = rows[1]
    from eventstore.chain import link_input

    if link(previous, last.position, link_input(last)).hex() != recorded.hash:
        raise SystemExit("a real append on top of the bulk-loaded log does not chain")
    print("   a real store.append() on top of the bulk-loaded head chains correctly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=20_000,
                        help="appends per store in part a (default 20000)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="time budget per store in part a (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds in part a")
    parser.add_argument("--read-events", type=int, default=1_000_000,
                        help="events bulk-loaded for part b (default 1000000)")
    parser.add_argument("--batch-sizes", default="5000,10000,20000,50000",
                        help="read_all batch sizes to try (default 5000,10000,20000,50000)")
    parser.add_argument("--verify", choices=("prefix", "full"), default="prefix",
                        help="verify the bulk-loaded chain fully or its first 50,000 events")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    parser.add_argument("--no-prototype", action="store_true",
                        help="skip the prototype reader")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed read passes per batch size; the best counts (default 2)")
    parser.add_argument("--only", choices=("append", "read"), help="run one part only")
    args = parser.parse_args()
    print_environment("bench/store.py: PostgreSQL event store")
    started = time.perf_counter()
    if args.only != "read":
        bench_append(args.events, args.seconds, args.rounds)
    if args.only != "append":
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
        bench_read(args.read_events, sizes, args.verify, not args.no_profile,
                   not args.no_prototype, max(1, args.repeats))
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
