"""Upgrades from every earlier schema (SPEC §12, "Upgrades"), on both stores.

For each earlier schema version k, a database is built by the first k migrations only
(the code's MIGRATIONS list cut at k, as a release with k steps had it) and filled the
way a writer of that schema filled it: at schema 1, before chain version 2, rows hashed
by chain version 1 without a chain_version column; from schema 2 on, rows hashed by
chain version 2, imported through the store. The log holds every event type, including
a DescriptorUpgraded in its first schema (upcast when read), and a refused call in the
rejection log's first shape. Then the current code opens it (migrating it), the chain
verifies, new events chain onto the old ones, and the read models folded incrementally
by the runner equal those a rebuild gives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest

import eventstore.postgres.store
import eventstore.sqlite
from eventstore import open_store
from eventstore.chain import link, link_input_v2, rest_digest, row_digest, stream_digest
from eventstore.clock import format_timestamp, parse_timestamp
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
    LicenseChanged,
    Metadata,
    SecretRotated,
    SiteRefused,
    TenantForgotten,
    Uninstalled,
    installation_stream_id,
    stream_id_for,
)
from eventstore.testing.synthetic import DUMMY_SECRET, T0, installed_data
from eventstore.values import NewEvent, RawEvent, prepare
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from tests.conftest import PostgresDatabases
from tests.contract.test_runner import snapshot

FORGE_APP = "ari:cloud:ecosystem::app/6e1c7a8f-6b8e-4d5a-9c3f-2f0d1e4b5a69"
INSTALLATION = "1b9c7a2e-3d4f-4a5b-8c6d-7e8f9a0b1c2d"
OLD_SITE, NEW_SITE = "https://old-name.atlassian.net", "https://new-name.atlassian.net"


def _backend(url: str) -> object:
    return eventstore.sqlite if url.startswith("sqlite") else eventstore.postgres.store


def _migrations(url: str) -> list[str]:
    migrations: list[str] = _backend(url).MIGRATIONS  # type: ignore[attr-defined]  # a module
    return migrations


def _history() -> Iterator[tuple[str, EventData]]:
    """(stream, event) for every event type, in an order the folds accept."""
    a, b, c = stream_id_for("client-a"), stream_id_for("client-b"), stream_id_for("client-c")
    forge = installation_stream_id(INSTALLATION)
    yield a, installed_data("client-a", OLD_SITE, product_type="jira")
    yield a, InstallConfirmed()
    yield a, DescriptorUpgraded(from_="2", to="3")  # after the schema-1 one below
    yield a, SecretRotated(shared_secret=DUMMY_SECRET)
    yield a, BaseUrlChanged(from_=OLD_SITE, to=NEW_SITE)
    yield a, DetailsChanged(changes={"displayUrl": NEW_SITE})
    yield a, Disabled()
    yield a, Enabled()
    seen = {"active": True, "type": "commercial", "evaluation": False, "sen": "SEN-1"}
    yield a, LicenseChanged(from_=None, to=seen)  # the ledger's own license check
    yield a, SiteRefused(status=404)
    yield b, installed_data("client-b", "https://b.atlassian.net", product_type="confluence")
    yield b, TenantForgotten(reason="erasure request 17")
    yield a, Uninstalled()
    yield c, installed_data("client-c", NEW_SITE, product_type="jira")  # a reimport of a's site
    license = {"active": True, "type": "commercial", "evaluation": None, "trial_end": None,
               "subscription_end": None}  # fmt: skip
    yield forge, ForgeInstalled(INSTALLATION, "cloud-1", None, "jira", FORGE_APP, "1.0.0",
                                None, "PRODUCTION", None, license)  # fmt: skip
    yield forge, ForgeInstallConfirmed(route="installed")
    yield forge, ForgeUpgraded(from_="1.0.0", to="1.1.0")
    yield forge, ForgeLicenseChanged(from_=license, to={**license, "active": False})
    yield forge, ForgeDetailsChanged(changes={"environment_type": "STAGING"})
    yield forge, ForgeUninstalling()


@dataclass(frozen=True)
class Row:
    """A row's stored fields, before a position and a hash are given to it."""

    stream_id: str
    version: int
    type: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: str
    call_id: str | None


def _rows() -> list[Row]:
    versions: dict[str, int] = {}
    rows = []
    for n, (stream, data) in enumerate(_history()):
        versions[stream] = versions.get(stream, 0) + 1
        meta = Metadata(call_id=f"call-{n}", descriptor_version="1", remote_addr="203.0.113.7")
        p = prepare(NewEvent(data, meta))
        at = format_timestamp(T0 + timedelta(minutes=n))
        rows.append(Row(stream, versions[stream], p.type, p.schema_version, p.data, p.metadata,
                        at, p.call_id))  # fmt: skip
        if p.type == "InstallConfirmed":  # DescriptorUpgraded as schema version 1 wrote it
            versions[stream] += 1
            old = Row(stream, versions[stream], "DescriptorUpgraded", 1, b'{"version":"2"}',
                      p.metadata, at, None)  # fmt: skip
            rows.append(old)
    return rows


def _chained(rows: list[Row], chain_version: int, after: list[RawEvent]) -> list[RawEvent]:
    """``rows`` hashed by ``chain_version``, chained onto the rows ``after``."""
    previous = bytes.fromhex(after[-1].hash) if after else bytes(32)
    chained: list[RawEvent] = []
    for position, r in enumerate(rows, start=len(after) + 1):
        fields = (r.type, r.schema_version, r.recorded_at, r.data, r.metadata)
        if chain_version == 1:
            digest = row_digest(r.stream_id, r.version, *fields)
        else:
            digest = link_input_v2(stream_digest(r.stream_id), rest_digest(r.version, *fields))
        previous = link(previous, position, digest)
        chained.append(RawEvent(position, r.stream_id, r.version, r.type, r.schema_version,
                                r.data, r.metadata, r.recorded_at, previous.hex(), r.call_id,
                                chain_version))  # fmt: skip
    return chained


def _write_schema_1(url: str, rows: list[RawEvent]) -> None:
    """What a writer of schema 1 stored: no chain_version column (chain version 1)."""
    columns = "position, stream_id, version, type, schema_version, data, metadata, recorded_at, hash, call_id"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.executemany(
                f"INSERT INTO events ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.position, r.stream_id, r.version, r.type, r.schema_version,
                  r.data.decode(), r.metadata.decode(), r.recorded_at, r.hash, r.call_id)
                 for r in rows],
            )  # fmt: skip
        conn.close()
        return
    with psycopg.connect(url) as pg, pg.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO events ({columns}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)".encode(),
            [(r.position, r.stream_id, r.version, r.type, r.schema_version, r.data.decode(),
              r.metadata.decode(), parse_timestamp(r.recorded_at), bytes.fromhex(r.hash), r.call_id)
             for r in rows],
        )  # fmt: skip
        cursor.execute(
            b"UPDATE ledger_head SET position = %s, hash = %s",
            (rows[-1].position, bytes.fromhex(rows[-1].hash)),
        )


def _write_refusal(url: str) -> None:
    """A refused call in the rejection log's first shape (the columns of schema 1)."""
    insert = "INSERT INTO rejections (at, path, reason, status) VALUES ({0}, {0}, {0}, {0})"
    row = (T0, "/installed", "bad_jwt", 401)
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            conn.execute(insert.format("?"), (format_timestamp(T0), *row[1:]))
        conn.close()
        return
    with psycopg.connect(url) as pg:
        pg.execute(insert.format("%s").encode(), row)


def _build_at_schema(url: str, k: int, monkeypatch: pytest.MonkeyPatch) -> int:
    """A database that lived through schemas 1..k, holding every event type: a refusal
    and the first half of the history written at schema 1 (chain version 1), the rest at
    schema k (chain version 2 from schema 2 on). Returns the number of events."""
    history = _rows()
    half = len(history) // 2 if k > 1 else len(history)
    migrations = _migrations(url)
    with monkeypatch.context() as patch:
        patch.setattr(_backend(url), "MIGRATIONS", migrations[:1])
        open_store(url).close()
        _write_refusal(url)
        old = _chained(history[:half], 1, [])
        _write_schema_1(url, old)
        if k > 1:
            patch.setattr(_backend(url), "MIGRATIONS", migrations[:k])
            with open_store(url) as store:  # migrated from 1 to k
                store.import_rows(_chained(history[half:], 2, old))
    assert {r.type for r in history} == set(EVENT_TYPES), "every event type is in the old log"
    return len(history)


def _applied(url: str) -> list[int]:
    query = "SELECT version FROM schema_migrations ORDER BY version"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            found = [v for (v,) in conn.execute(query)]
        conn.close()
        return found
    with psycopg.connect(url) as pg:
        return [v for (v,) in pg.execute(query.encode())]


def test_both_stores_have_the_same_schema_steps() -> None:
    """Every release moves both stores by the same numbered steps (so the upgrade test
    below covers every earlier schema of each)."""
    assert len(eventstore.sqlite.MIGRATIONS) == len(eventstore.postgres.store.MIGRATIONS)


@pytest.mark.parametrize("k", range(1, len(eventstore.sqlite.MIGRATIONS)))
def test_an_earlier_schema_is_upgraded_verified_and_rebuilt_to_the_same_read_models(
    store_url: str, k: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    current = len(_migrations(store_url))
    written = _build_at_schema(store_url, k, monkeypatch)
    assert _applied(store_url) == list(range(1, k + 1))

    with open_store(store_url) as store:  # the current code: migrates on open
        assert _applied(store_url) == list(range(1, current + 1))
        report = store.verify()
        assert report.ok and report.events == written, report
        runner = ProjectionRunner(store, batch_size=5)
        assert runner.run_once() == written
        # New events chain onto the old ones (chain version 2 after version 1 rows).
        tenant = stream_id_for("client-after-upgrade")
        fresh = installed_data("client-after-upgrade", "https://after.atlassian.net")
        store.append(tenant, [NewEvent(fresh, Metadata(call_id="after"))], 0)
        runner.run_once()
        assert store.verify().ok
        assert not runner.stalled, runner.stalled
        assert set(runner.checkpoints.values()) == {written + 1}
        incremental = snapshot(store)
        rebuild(store)
        assert snapshot(store) == incremental
        rejections = store.list_rejections()
    assert incremental["tenants"] and incremental["installations"] and incremental["reimports"]
    a = next(t for t in incremental["tenants"] if t.client_key == "client-a")
    assert (a.base_url, a.state) == (NEW_SITE, "uninstalled"), a
    assert [(r.reason, r.count) for r in rejections] == [("bad_jwt", 1)]


def test_the_append_function_keeps_its_plans_without_seq_scans_or_jit(
    postgres_databases: PostgresDatabases,
) -> None:
    """Migration 7: the settings that keep one plan per session for the append
    function's statements (and keep that plan an index lookup) are on the function."""
    function = "ledger_try_append_batch"
    url = postgres_databases.create()
    open_store(url).close()  # migrates
    with psycopg.connect(url) as conn:
        (config,) = conn.execute(
            "SELECT proconfig FROM pg_proc WHERE proname = %s", [function]
        ).fetchone() or (None,)
    assert set(config or ()) == {
        "plan_cache_mode=force_generic_plan",
        "enable_seqscan=off",
        "jit=off",
    }
