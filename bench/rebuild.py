"""Rebuild and tenant-history figures (SPEC §9) on PostgreSQL.

1. A realistic log of 1,000,000 events for ~250,000 tenants is COPYed into a migrated
   store (``bench/store.py``'s ``LogGenerator``, subclassed here so that ~2% of new
   tenants are installed at a base URL another tenant holds, some of them after that
   tenant moved away: the ``reimports`` projection then finds ``reimport`` and
   ``url_reused`` links). The hash chain is computed with ``eventstore.chain`` exactly
   as the store does and ``ledger_head`` set; the first 50,000 events are checked with
   ``verify_chain`` and the first real ``append`` on top must chain onto the head.
   A 200-event tenant (the "spread" tenant) is woven into the log, one event every
   ~5,000 positions (events / 200).
2. ``projections.rebuild.rebuild(store)`` (all four projections: fold the whole log in
   memory, COPY rows into fresh tables, swap) runs in a fresh subprocess, which reports
   its own time and its peak RSS (``ru_maxrss``).
3. The ``eventsourcing`` library reads and folds the same events: they are copied into
   a ``PostgresApplicationRecorder`` table (``stored_events`` in the same database; one
   row per event, ``state`` = the library's ``JSONTranscoder`` encoding of
   ``{"timestamp": datetime, "data": {...}, "metadata": {...}}``), and a fresh
   subprocess pages through ``recorder.select_notifications(start, 10000)``, turns each
   notification into a domain event object with the library's ``Mapper``
   (``JSONTranscoder`` with its default transcodings) and folds it into a dict per
   tenant (base_url, state, enabled, descriptor_version, display_url, product_type,
   installed_at, last_seen, version). It writes nothing back, folds one model, not
   four: a lower bar than the rebuild's.
   The two run in alternating rounds (``--repeats``); the best of each counts.
4. Tenant history: a 200-event stream (``Installed`` with a sealed secret, then
   ``Disabled``/``Enabled``/``InstallConfirmed``/``DetailsChanged`` in turn) is appended
   with ``PostgresEventStore.append``, one call per event, on top of the 1,000,000;
   ``ledger serve --workers 1`` runs on that database, and this process sends
   sequential ``GET /admin/tenants/{k}/events`` over one keep-alive ``httpx.Client``
   (200 warm-up requests, then 2,000 timed, each answer checked to hold 200 events).
   The woven-in "spread" tenant is measured the same way, for information.

Run: ``.venv/bin/python bench/rebuild.py`` (full figures), or quicker:
``.venv/bin/python bench/rebuild.py --events 100000 --tenants 25000 --requests 300``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import resource
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Only light imports at module level: the rebuild child's peak RSS should be the
# rebuild's own, not this benchmark's (cryptography, eventsourcing, httpx are
# imported where they are used).
from _benchkit import print_environment, result_line, scratch_database  # noqa: E402

if TYPE_CHECKING:
    from store import LogGenerator

REBUILD_TARGET = 200_000.0  # events/s
RSS_TARGET_MB = 300.0
RATIO_TARGET = 4.0
HISTORY_P99_TARGET_MS = 10.0
HISTORY_EVENTS = 200
START = datetime(2024, 1, 1, tzinfo=UTC)
STEP = timedelta(microseconds=1_500_017)  # about 40 events a minute, as bench/store.py

# (stream_id, version, type, schema_version, data, metadata, call_id, recorded_at text)
Row = tuple[str, int, str, int, bytes, bytes, str, str]


# ---------------------------------------------------------------- 1. the log


def make_generator(seed: int, new_tenant_share: float, reuse_share: float,
                   vacated_share: float, reused: Counter[str]) -> LogGenerator:
    """``LogGenerator`` whose new tenants sometimes take a base URL already used
    (counted in ``reused`` by where the URL came from)."""
    from store import LogGenerator, Tenant

    from eventstore.events import BaseUrlChanged, EventData

    class ReimportingLogGenerator(LogGenerator):
        """A share ``reuse_share`` of new tenants is installed at a base URL that another
        tenant holds (a site reimport: new clientKey, same URL) or, for
        ``vacated_share`` of those, one that a tenant held before it moved away."""

        def __init__(self) -> None:
            super().__init__(seed, new_tenant_share)
            self.vacated: list[str] = []  # URLs some tenant moved away from

        def _new_tenant(self) -> Tenant:
            tenant = super()._new_tenant()
            rng = self.rng
            if self.tenants and rng.random() < reuse_share:
                if self.vacated and rng.random() < vacated_share:
                    tenant.base_url = self.vacated[int(rng.random() * len(self.vacated))]
                    reused["a URL its holder had moved away from"] += 1
                else:
                    holder = self.tenants[int(rng.random() * len(self.tenants))]
                    tenant.base_url = holder.base_url
                    reused["a URL another tenant holds now"] += 1
            return tenant

        def _follow_up(self, tenant: Tenant) -> EventData:
            data = super()._follow_up(tenant)
            if isinstance(data, BaseUrlChanged):
                self.vacated.append(data.from_)
            return data

    return ReimportingLogGenerator()


class SpreadTenant:
    """One tenant with ``count`` events woven into the log at evenly spaced positions:
    ``Installed`` (sealed secret), then Disabled, Enabled, InstallConfirmed,
    DetailsChanged in turn. Its rows are built the way ``LogGenerator.rows`` builds
    them (same metadata shape)."""

    CYCLE = ("Disabled", "Enabled", "InstallConfirmed", "DetailsChanged")

    def __init__(self, generator: LogGenerator, count: int) -> None:
        from store import LogGenerator as Base

        # Base-class tenant: a fresh URL, never one of the reimport URLs.
        self.tenant = Base._new_tenant(generator)
        self.generator = generator
        self.count = count

    def row(self, stamp: str, iat: int) -> Row:
        from eventstore.events import (
            SCHEMA_VERSIONS,
            DetailsChanged,
            Disabled,
            Enabled,
            EventData,
            InstallConfirmed,
            Metadata,
            data_to_json,
            metadata_to_json,
        )

        tenant = self.tenant
        data: EventData
        if tenant.version == 0:
            data = self.generator._installed(tenant)
            tenant.installed = True
        else:
            kind = self.CYCLE[(tenant.version - 1) % 4]
            if kind == "Disabled":
                data = Disabled()
            elif kind == "Enabled":
                data = Enabled()
            elif kind == "InstallConfirmed":
                data = InstallConfirmed()
            else:
                data = DetailsChanged(changes={"serverVersion": str(100000 + iat % 1000)})
        tenant.version += 1
        event_type = type(data).__name__
        call_id = os.urandom(16).hex()
        metadata = Metadata(
            call_id=call_id,
            received_at=stamp,
            token_sha256=os.urandom(32).hex(),
            iat=iat,
            alg="RS256" if event_type == "Installed" else "HS256",
            kid="connect-key-1" if event_type == "Installed" else None,
            remote_addr="18.1.2.3",
            path={"Enabled": "/enabled", "Disabled": "/disabled"}.get(event_type, "/installed"),
            descriptor_version=tenant.descriptor,
        )
        return (tenant.stream_id, tenant.version, event_type, SCHEMA_VERSIONS[event_type],
                data_to_json(data), metadata_to_json(metadata), call_id, stamp)


def woven(rows: Iterator[Row], spread: SpreadTenant, every: int) -> Iterator[Row]:
    """``rows`` with one of the spread tenant's events after every ``every`` rows."""
    base_iat = int(START.timestamp())
    left = spread.count
    for n, row in enumerate(rows, start=1):
        yield row
        if left and n % every == 0:
            left -= 1
            yield spread.row(row[7], base_iat + n)


def check_prefix(url: str, head_position: int, head_hash: bytes) -> None:
    """The store's own chain check on the first 50,000 events, and its head."""
    from itertools import islice

    from eventstore.chain import verify_chain
    from eventstore.postgres import PostgresEventStore

    store = PostgresEventStore(url, max_connections=1)
    try:
        report = verify_chain(islice(store.read_raw(0, 5000), 50_000))
        head = store.head()
    finally:
        store.close()
    if not report.ok or head.position != head_position or head.hash != head_hash.hex():
        raise SystemExit(f"bulk-loaded chain does not verify: {report}, head {head}")


def generate(url: str, events: int, tenants: int, seed: int) -> tuple[int, bytes, str]:
    """Migrate, generate and COPY the log; print the mix; returns (head, hash, spread key)."""
    from eventstore.postgres import PostgresEventStore

    PostgresEventStore(url, max_connections=1).close()  # migrate
    spread_count = min(HISTORY_EVENTS, max(1, events // 100))
    base_count = events - spread_count
    reused: Counter[str] = Counter()
    generator = make_generator(seed, tenants / base_count, reuse_share=0.02, vacated_share=0.4,
                               reused=reused)
    spread = SpreadTenant(generator, spread_count)
    started = time.perf_counter()
    rows = woven(generator.rows(base_count, START, STEP), spread, max(1, base_count // spread_count))
    from store import copy_rows

    position, head_hash, counts = copy_rows(url, rows)
    mix = Counter(counts)
    elapsed = time.perf_counter() - started
    check_prefix(url, position, head_hash)
    shares = ", ".join(f"{k} {v:,} ({v / position:.1%})" for k, v in mix.most_common())
    installs = len(generator.tenants) + 1
    reuse = ", ".join(f"{v:,} at {k}" for k, v in reused.items())
    print(f"   generated and COPYed {position:,} events in {elapsed:.1f} s (chain computed as the"
          " store does; verify_chain ok on the first 50,000; head matches)")
    print(f"   tenants (distinct clientKeys): {installs:,}; new tenants at a used base URL: {reuse}")
    print(f"   mix: {shares}")
    print(f"   spread tenant {spread.tenant.client_key}: {spread.count} events, one every"
          f" ~{max(1, base_count // spread_count):,} positions")
    return position, head_hash, spread.tenant.client_key


# ---------------------------------------------------------------- 3. eventsourcing's table


def load_eventsourcing(url: str, events: int) -> None:
    """Copy the first ``events`` events into the library's ``stored_events`` table."""
    import psycopg
    from store import eventsourcing_recorder

    datastore, _recorder = eventsourcing_recorder(url)  # the library creates its table
    datastore.close()
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_name = 'stored_events' ORDER BY ordinal_position"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE tablename = 'stored_events'"
        ).fetchall()
        # state = JSONTranscoder().encode({"timestamp": <aware datetime>, "data": ...,
        # "metadata": ...}): the library's DatetimeAsISO transcoding of the timestamp.
        conn.execute(
            "INSERT INTO stored_events (originator_id, originator_version, topic, state,"
            " notification_id)"
            " SELECT substr(stream_id, 8)::uuid, version, 'ledger.events:' || type,"
            "  convert_to('{\"timestamp\":{\"_type_\":\"datetime_iso\",\"_data_\":\""
            "' || to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')"
            " || '+00:00\"},\"data\":' || data || ',\"metadata\":' || metadata || '}', 'UTF8'),"
            "  position FROM events WHERE position <= %s ORDER BY position",
            [events],
        )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('stored_events', 'notification_id'), %s)",
            [events],
        )
        conn.execute("VACUUM (FREEZE, ANALYZE) stored_events")
        sizes = conn.execute(
            "SELECT pg_size_pretty(pg_total_relation_size('events')),"
            " pg_size_pretty(pg_total_relation_size('stored_events'))"
        ).fetchone()
    print(f"   copied into eventsourcing's stored_events in {time.perf_counter() - started:.1f} s"
          f" (\\d: {', '.join(f'{c} {t}' for c, t in columns)};"
          f" {'; '.join(i[0].split(' ON ')[0] for i in indexes)})")
    if sizes:
        print(f"   table sizes with indexes: events {sizes[0]}, stored_events {sizes[1]}")


# ---------------------------------------------------------------- children (fresh processes)


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_rebuild(url: str, profile: bool) -> dict[str, Any]:
    from eventstore.postgres import PostgresEventStore
    from projections.rebuild import rebuild
    from projections.tables import SPECS

    before = {"rss_after_imports_mb": rss_mb(), "peak_after_imports_mb": peak_rss_mb()}
    marks: list[tuple[float, int, float]] = []

    def progress(position: int, head: int) -> None:
        marks.append((time.perf_counter(), position, rss_mb()))

    store = PostgresEventStore(url, max_connections=2)
    profiler = cProfile.Profile() if profile else None
    cpu = cpu_seconds()
    started = time.perf_counter()
    if profiler:
        profiler.enable()
    report = rebuild(store, progress=progress)
    if profiler:
        profiler.disable()
    wall = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    peak = peak_rss_mb()
    with store.pool.connection() as conn:
        counts = {
            name: int(conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0])  # type: ignore[index]
            for name in SPECS
        }
        kinds: dict[str, int] = dict(conn.execute("SELECT kind, count(*) FROM reimports GROUP BY kind").fetchall())
    store.close()
    # The last progress call is after the swap; the one before it ends the fold pass.
    fold_end = marks[-2][0] if len(marks) >= 2 else started
    out: dict[str, Any] = {
        **before,
        "events": report.events,
        "seconds": report.seconds,
        "wall": wall,
        "cpu": cpu,
        "fold_seconds": fold_end - started,
        "rss_after_fold_mb": marks[-2][2] if len(marks) >= 2 else 0.0,
        "peak_rss_mb": peak,
        "rows_copied": report.rows,
        "rows": counts,
        "reimport_kinds": kinds,
    }
    if profiler:
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
        out["profile"] = text.getvalue()
    return out


# The library's domain event classes for the eventsourcing side: its Mapper resolves the
# stored topic to one of these and sets the decoded state as the object's __dict__.
class EsEvent:
    originator_id: uuid.UUID
    originator_version: int
    timestamp: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]


ES_TYPES = ("Installed", "SecretRotated", "BaseUrlChanged", "DescriptorUpgraded",
            "DetailsChanged", "InstallConfirmed", "Enabled", "Disabled", "Uninstalled")


def child_eventsourcing(url: str, page: int) -> dict[str, Any]:
    from eventsourcing.persistence import (
        DatetimeAsISO,
        DecimalAsStr,
        JSONTranscoder,
        Mapper,
        UUIDAsHex,
    )
    from eventsourcing.utils import register_topic
    from store import eventsourcing_recorder

    classes: dict[str, type[EsEvent]] = {}
    for name in ES_TYPES:
        cls = type(name, (EsEvent,), {})
        register_topic(f"ledger.events:{name}", cls)
        classes[name] = cls
    transcoder = JSONTranscoder()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        transcoder.register(transcoding)
    mapper: Mapper[uuid.UUID] = Mapper(transcoder=transcoder)
    datastore, recorder = eventsourcing_recorder(url)

    tenants: dict[uuid.UUID, dict[str, Any]] = {}

    def installed(t: dict[str, Any] | None, e: EsEvent) -> dict[str, Any]:
        data = e.data
        tenant = {
            "base_url": data["baseUrl"], "display_url": data.get("displayUrl"),
            "product_type": data.get("productType"), "state": "installed", "enabled": True,
            "descriptor_version": e.metadata.get("descriptor_version"),
            "installed_at": e.timestamp, "last_seen": e.timestamp,
            "version": e.originator_version,
        }
        tenants[e.originator_id] = tenant
        return tenant

    def seen(t: dict[str, Any], e: EsEvent) -> None:
        t["last_seen"] = e.timestamp
        t["version"] = e.originator_version

    def base_url(t: dict[str, Any], e: EsEvent) -> None:
        t["base_url"] = e.data["to"]
        seen(t, e)

    def descriptor(t: dict[str, Any], e: EsEvent) -> None:
        t["descriptor_version"] = e.data["to"]
        seen(t, e)

    def details(t: dict[str, Any], e: EsEvent) -> None:
        if "displayUrl" in e.data:
            t["display_url"] = e.data["displayUrl"]
        if "productType" in e.data:
            t["product_type"] = e.data["productType"]
        seen(t, e)

    def enabled(t: dict[str, Any], e: EsEvent) -> None:
        if t["state"] == "installed":
            t["enabled"] = True
        seen(t, e)

    def disabled(t: dict[str, Any], e: EsEvent) -> None:
        t["enabled"] = False
        seen(t, e)

    def uninstalled(t: dict[str, Any], e: EsEvent) -> None:
        t["state"] = "uninstalled"
        t["enabled"] = False
        seen(t, e)

    updates: dict[type[EsEvent], Callable[[dict[str, Any], EsEvent], None]] = {
        classes["SecretRotated"]: seen, classes["BaseUrlChanged"]: base_url,
        classes["DescriptorUpgraded"]: descriptor, classes["DetailsChanged"]: details,
        classes["InstallConfirmed"]: seen, classes["Enabled"]: enabled,
        classes["Disabled"]: disabled, classes["Uninstalled"]: uninstalled,
    }
    installed_cls = classes["Installed"]
    to_event = mapper.to_domain_event
    count = 0
    start = 1
    cpu = cpu_seconds()
    started = time.perf_counter()
    while True:
        notifications = recorder.select_notifications(start, page)
        for notification in notifications:
            event: EsEvent = to_event(notification)  # type: ignore[assignment]
            if type(event) is installed_cls:
                installed(None, event)
            else:
                tenant = tenants.get(event.originator_id)
                if tenant is not None:
                    updates[type(event)](tenant, event)
        count += len(notifications)
        if len(notifications) < page:
            break
        start = notifications[-1].id + 1
    seconds = time.perf_counter() - started
    cpu = cpu_seconds() - cpu
    datastore.close()
    states = Counter(t["state"] for t in tenants.values())
    return {"events": count, "seconds": seconds, "cpu": cpu, "tenants": len(tenants),
            "states": dict(states), "peak_rss_mb": peak_rss_mb()}


def run_child(kind: str, url: str, *extra: str) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", kind, "--url", url,
               *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("CHILD ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{kind} child failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(lines[-1][len("CHILD "):])
    return result


def bench_rebuild(url: str, repeats: int, profile: bool) -> None:
    from importlib.metadata import version

    print(f"\n-- 2/3. rebuild of all projections vs eventsourcing's read-and-fold,"
          f" {repeats} alternating round(s), each in a fresh subprocess")
    print("   ours: projections.rebuild.rebuild(PostgresEventStore) = read_all in 10,000-event"
          " pages decoded to typed RecordedEvents, folded into tenants, descriptors, base_urls,"
          " reimports; rows COPYed into fresh tables (with their indexes); swapped in")
    print(f"   theirs: eventsourcing {version('eventsourcing')} PostgresApplicationRecorder"
          ".select_notifications(start, 10000) pages, Mapper(JSONTranscoder).to_domain_event"
          " per notification, folded into one dict per tenant in memory; nothing written")
    ours: list[dict[str, Any]] = []
    theirs: list[dict[str, Any]] = []
    for number in range(repeats):
        order = ["ours", "theirs"] if number % 2 == 0 else ["theirs", "ours"]
        for side in order:
            if side == "ours":
                r = run_child("rebuild", url)
                ours.append(r)
                print(f"   round {number + 1} rebuild      : {r['events']:,} events in"
                      f" {r['seconds']:6.2f} s = {r['events'] / r['seconds']:9,.0f} events/s"
                      f" (fold pass {r['fold_seconds']:.2f} s, COPY + swap"
                      f" {r['seconds'] - r['fold_seconds']:.2f} s; CPU {r['cpu']:.1f} s); peak RSS"
                      f" {r['peak_rss_mb']:.0f} MB (after imports {r['rss_after_imports_mb']:.0f}"
                      f" MB, after the fold pass {r['rss_after_fold_mb']:.0f} MB)")
            else:
                r = run_child("eventsourcing", url)
                theirs.append(r)
                print(f"   round {number + 1} eventsourcing: {r['events']:,} events in"
                      f" {r['seconds']:6.2f} s = {r['events'] / r['seconds']:9,.0f} events/s"
                      f" (CPU {r['cpu']:.1f} s; {r['tenants']:,} tenants {r['states']}; peak RSS"
                      f" {r['peak_rss_mb']:.0f} MB)")
    best = max(ours, key=lambda r: r["events"] / r["seconds"])
    best_es = max(theirs, key=lambda r: r["events"] / r["seconds"])
    rate = best["events"] / best["seconds"]
    es_rate = best_es["events"] / best_es["seconds"]
    peak = max(r["peak_rss_mb"] for r in ours)
    print(f"   rows per table after the swap: {best['rows']} (COPYed: {best['rows_copied']});"
          f" reimport links by kind: {best['reimport_kinds']}")
    print(f"   best rebuild {rate:,.0f} events/s; best eventsourcing {es_rate:,.0f} events/s;"
          f" peak RSS is the largest of the rebuild runs")
    if profile:
        r = run_child("rebuild", url, "--profile")
        print(f"   cProfile of one more rebuild ({r['seconds']:.1f} s under the profiler),"
              " by own time:")
        lines = [line for line in r["profile"].splitlines() if line.strip()]
        first = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
        for line in lines[first:first + 19]:
            print("     " + line[:160])
    print(result_line("rebuild_events_per_s", rate, "events/s", REBUILD_TARGET))
    print(result_line("rebuild_peak_rss_mb", peak, "MB", RSS_TARGET_MB, lower_is_better=True))
    print(result_line("rebuild_vs_eventsourcing", rate / es_rate, "x", RATIO_TARGET))


# ---------------------------------------------------------------- 4. tenant history over HTTP


def append_history(url: str, master_key: str, count: int, head: tuple[int, bytes]) -> str:
    """A ``count``-event tenant appended one call at a time with the store's own append."""
    from store import make_metadata

    from eventstore.chain import link, link_input
    from eventstore.crypto import KeyRing, MasterKeys, seal_secret, secret_ad
    from eventstore.events import (
        DetailsChanged,
        Disabled,
        Enabled,
        EventData,
        InstallConfirmed,
        Installed,
        stream_id_for,
    )
    from eventstore.postgres import PostgresEventStore
    from eventstore.store import NewEvent, format_timestamp

    rng = random.Random(11)
    client_key = str(uuid.UUID(int=rng.getrandbits(128)))
    stream_id = stream_id_for(client_key)
    base_url = f"https://history-{rng.getrandbits(32):08x}.atlassian.net"
    store = PostgresEventStore(url, max_connections=1)
    started = time.perf_counter()
    try:
        data_key = KeyRing(store, MasterKeys.parse(master_key)).data_key(stream_id, create=True)
        for version in range(count):
            data: EventData
            now = datetime.now(UTC)
            if version == 0:
                from store import install_details

                data, path = Installed(
                    key="tenant-ledger",
                    client_key=client_key,
                    base_url=base_url,
                    shared_secret=seal_secret(data_key, secrets.token_urlsafe(48),
                                              secret_ad(stream_id, 1)),
                    details=install_details(rng, base_url),
                ), "installed"
            else:
                data, path = (
                    (Disabled(), "disabled"),
                    (Enabled(), "enabled"),
                    (InstallConfirmed(), "installed"),
                    (DetailsChanged(changes={"serverVersion": str(100000 + version)}),
                     "installed"),
                )[(version - 1) % 4]
            metadata = make_metadata(rng, path, format_timestamp(now), int(now.timestamp()),
                                     "RS256" if version == 0 else "HS256")
            store.append(stream_id, [NewEvent(data, metadata)], expected_version=version,
                         idempotency_key=metadata.token_sha256)
        # The first real append links onto the bulk-loaded head.
        first = next(store.read_raw(head[0], 1))
        if link(head[1], first.position, link_input(first)).hex() != first.hash:
            raise SystemExit("a real append on top of the bulk-loaded log does not chain")
    finally:
        store.close()
    print(f"   appended a {count}-event tenant with PostgresEventStore.append in"
          f" {time.perf_counter() - started:.1f} s (the first append chains onto the bulk-loaded"
          " head)")
    return client_key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def start_service(url: str, master_key: str, admin_token: str, log_dir: Path) -> Service:
    import httpx

    port = free_port()
    env = dict(os.environ)
    env.update(
        LEDGER_DATABASE_URL=url,
        LEDGER_MASTER_KEY=master_key,
        LEDGER_ADMIN_TOKEN=admin_token,
        LEDGER_APP_BASE_URL=f"http://127.0.0.1:{port}",
    )
    ledger = ROOT / ".venv" / "bin" / "ledger"
    log_path = log_dir / "service.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(ledger), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True,
        )
    service = Service(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise SystemExit(f"ledger serve died:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(service.url + "/healthz", timeout=1).status_code == 200:
                return service
        if time.monotonic() > deadline:
            service.stop()
            raise SystemExit("ledger serve did not answer /healthz within 60 s")
        time.sleep(0.1)


def wait_for_projections(url: str, limit: float = 120.0) -> float:
    """Until the service's projection runner has folded the whole log (it resumes from
    the rebuilt tables, then folds the appended events): its CPU would skew latencies."""
    import psycopg

    started = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() - started < limit:
            row = conn.execute(
                "SELECT (SELECT min(position) FROM projection_checkpoints),"
                " (SELECT position FROM ledger_head)"
            ).fetchone()
            if row and row[0] is not None and row[0] >= row[1]:
                return time.monotonic() - started
            time.sleep(0.2)
    raise SystemExit("the service's projection runner did not catch up")


def time_requests(service: Service, admin_token: str, path: str, warmup: int, requests: int,
                  expect_events: int | None) -> tuple[list[float], int]:
    """Sequential GETs over one keep-alive connection: latencies (ms) of the timed ones
    (status line to last body byte; the JSON is parsed and checked after the clock
    stops), and the answer size in bytes. Every answer must be 200 and, when
    ``expect_events`` is given, hold exactly that many events."""
    import httpx

    latencies: list[float] = []
    size = 0
    with httpx.Client(base_url=service.url, timeout=10,
                      headers={"Authorization": f"Bearer {admin_token}"}) as client:
        for n in range(warmup + requests):
            started = time.perf_counter()
            answer = client.get(path)
            body = answer.content
            elapsed = time.perf_counter() - started
            if answer.status_code != 200:
                raise SystemExit(f"GET {path}: {answer.status_code} {body[:300]!r}")
            if expect_events is not None:
                events = json.loads(body)["events"]
                if len(events) != expect_events:
                    raise SystemExit(f"GET {path}: {len(events)} events, expected {expect_events}")
            if n >= warmup:
                latencies.append(elapsed * 1e3)
            size = len(body)
    return latencies, size


def describe(latencies: list[float]) -> str:
    mean = sum(latencies) / len(latencies)
    return (f"p50 {percentile(latencies, 50):.2f} ms, p99 {percentile(latencies, 99):.2f} ms,"
            f" max {max(latencies):.2f} ms, mean {mean:.2f} ms ({1e3 / mean:,.0f} requests/s)")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def bench_history(url: str, head: tuple[int, bytes], spread_key: str | None, warmup: int,
                  requests: int) -> None:
    print(f"\n-- 4. tenant history: GET /admin/tenants/{{k}}/events of a {HISTORY_EVENTS}-event"
          f" stream, ledger serve --workers 1, one keep-alive httpx.Client, {warmup} warm-up"
          f" then {requests} sequential requests")
    master_key = base64.b64encode(os.urandom(32)).decode()
    admin_token = secrets.token_urlsafe(32)
    client_key = append_history(url, master_key, HISTORY_EVENTS, head)
    with tempfile.TemporaryDirectory(prefix="ledger-bench-rebuild-") as work:
        service = start_service(url, master_key, admin_token, Path(work))
        try:
            caught_up = wait_for_projections(url)
            print(f"   service up at {service.url} (pid {service.process.pid}); its projection"
                  f" runner caught up {caught_up:.1f} s after /healthz")
            # The floor under any admin answer: same client, connection and stack.
            base, _ = time_requests(service, admin_token, "/healthz", warmup,
                                    max(100, requests // 4), None)
            print(f"   baseline GET /healthz over the same client: {describe(base)}")
            subjects = [("appended", client_key)]
            if spread_key is not None:
                subjects.append(("spread", spread_key))
            p99 = 0.0
            for label, key in subjects:
                latencies, size = time_requests(service, admin_token,
                                                f"/admin/tenants/{key}/events", warmup,
                                                requests, HISTORY_EVENTS)
                where = ("one append call per event, consecutive positions" if label == "appended"
                         else "woven into the bulk-loaded log, spread over all positions")
                print(f"   {label:<8} tenant ({where}): {size / 1024:.0f} KiB answers;"
                      f" {describe(latencies)}")
                if label == "appended":
                    p99 = percentile(latencies, 99)
        finally:
            service.stop()
    print(result_line("history_p99_ms", p99, "ms", HISTORY_P99_TARGET_MS, lower_is_better=True))


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000,
                        help="events in the log (default 1000000)")
    parser.add_argument("--tenants", type=int, default=250_000,
                        help="distinct tenants, about (default 250000)")
    parser.add_argument("--repeats", type=int, default=2,
                        help="alternating rebuild / eventsourcing rounds; the best counts")
    parser.add_argument("--profile", action="store_true",
                        help="also run one rebuild under cProfile and print its top costs")
    parser.add_argument("--requests", type=int, default=2000, help="timed history requests")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up history requests")
    parser.add_argument("--no-spread", action="store_true",
                        help="skip measuring the woven-in spread tenant's history")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", choices=("rebuild", "eventsourcing"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child == "rebuild":
            result = child_rebuild(args.url, args.profile)
        else:
            result = child_eventsourcing(args.url, 10_000)
        print("CHILD " + json.dumps(result, default=str))
        return

    print_environment("bench/rebuild.py: rebuild all projections; tenant history over HTTP")
    started = time.perf_counter()
    with scratch_database("rebuild") as url:
        print(f"\n-- 1. the log: {args.events:,} events for ~{args.tenants:,} tenants, COPY")
        position, head_hash, spread_key = generate(url, args.events, args.tenants, args.seed)
        load_eventsourcing(url, position)
        bench_rebuild(url, max(1, args.repeats), args.profile)
        bench_history(url, (position, head_hash), None if args.no_spread else spread_key,
                      args.warmup, args.requests)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s;"
          f" load average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
