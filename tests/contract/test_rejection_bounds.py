"""The rejection log stays bounded when the claimed identity varies (SPEC §4): a window
keeps at most REJECTION_ROW_BUDGET rows of their own, the refusals beyond it are counted
on an overflow row per reason and path, and the counts always add up to the refusals,
with concurrent writers too. On every store."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest
from typer.testing import CliRunner

import eventstore.postgres.store
import eventstore.sqlite
from app.cli.main import cli
from app.sim.connect import make_install_payload
from eventstore import open_store
from eventstore.clock import format_timestamp, utcnow
from eventstore.rejections import (
    REJECTION_OVERFLOW_DETAIL,
    REJECTION_ROW_BUDGET,
    REJECTION_WINDOW_SECONDS,
    Rejection,
    rejection_fingerprint,
    rejection_window,
    storable_rejection,
)
from eventstore.store import EventStore
from tests.harness import ADMIN_TOKEN, running_service

# More than any test here records: every row comes back in one listing.
EVERYTHING = 100_000


def window_start(at: datetime) -> datetime:
    """The first instant of the window ``at`` falls in."""
    return datetime.fromtimestamp(rejection_window(at) * REJECTION_WINDOW_SECONDS, UTC)


def refusal(at: datetime, client_key: str, **fields: Any) -> Rejection:
    base: dict[str, Any] = {
        "path": "/installed",
        "reason": "bad_signature",
        "status": 401,
        "base_url": f"https://{client_key}.atlassian.net",
        "remote_addr": "203.0.113.7",
        "token_sha256": f"{abs(hash(client_key)):064x}"[-64:],
        "detail": "the token's signature does not verify",
    }
    return Rejection(at=at, client_key=client_key, **(base | fields))


def own_and_overflow(rows: list[Rejection]) -> tuple[list[Rejection], list[Rejection]]:
    return [r for r in rows if not r.overflow], [r for r in rows if r.overflow]


def test_a_flood_of_distinct_client_keys_keeps_a_budget_of_rows(store: EventStore) -> None:
    start = window_start(utcnow())
    flood = 20_000
    # One window; two reasons, alternating. Recorded together (a few transactions, so
    # it is quick), each refusal stored as record_rejection stores it.
    store.record_rejections(
        refusal(
            start + timedelta(microseconds=i),
            f"ck-{i}",
            reason=("bad_signature", "token_expired")[i % 2],
        )
        for i in range(flood)
    )
    # Identical to a refusal that has a row: still counted there, budget spent or not.
    store.record_rejection(refusal(start + timedelta(seconds=1), "ck-0"))

    rows = store.list_rejections(EVERYTHING)
    own, overflow = own_and_overflow(rows)
    assert len(own) == REJECTION_ROW_BUDGET  # exactly: never more, none wasted
    assert sum(r.count for r in rows) == flood + 1
    assert {r.client_key for r in own} == {f"ck-{i}" for i in range(REJECTION_ROW_BUDGET)}
    assert [r.count for r in own if r.client_key == "ck-0"] == [2]
    # One overflow row per reason: no claimed identity, its count, first and last time.
    assert sorted(r.reason for r in overflow) == ["bad_signature", "token_expired"]
    for row in overflow:
        assert row.count == (flood - REJECTION_ROW_BUDGET) // 2
        assert (row.client_key, row.base_url, row.remote_addr, row.token_sha256) == (None,) * 4
        assert row.detail == REJECTION_OVERFLOW_DETAIL and row.path == "/installed"
        first = REJECTION_ROW_BUDGET + (row.reason == "token_expired")
        assert row.at == start + timedelta(microseconds=first)
        assert row.last_seen_at == start + timedelta(microseconds=flood - 2 + first % 2)
        assert row.as_dict()["overflow"] is True and row.as_dict()["count"] == row.count
    # Per reason too, the counts add up to the refusals.
    per_reason: Counter[str] = Counter()
    for row in rows:
        per_reason[row.reason] += row.count
    assert per_reason == {"bad_signature": flood // 2 + 1, "token_expired": flood // 2}
    # Filters: an overflow row has a reason but no clientKey.
    assert [r.count for r in store.list_rejections(reason="token_expired") if r.overflow] == [
        (flood - REJECTION_ROW_BUDGET) // 2
    ]
    assert store.list_rejections(client_key=f"ck-{flood - 1}") == []

    # The next window has a budget of its own.
    store.record_rejection(refusal(start + timedelta(seconds=REJECTION_WINDOW_SECONDS), "new"))
    assert not store.list_rejections(1)[0].overflow


def test_concurrent_writers_keep_the_budget_and_every_count(store_url: str) -> None:
    start = window_start(utcnow())
    writers, distinct, repeated = 4, 120, 30
    open_store(store_url).close()  # migrated once, before the writers start
    failures: list[BaseException] = []

    def write(writer: int) -> None:
        # A store of its own: its own connections, as another service process has.
        try:
            with open_store(store_url) as store:
                store.record_rejection(refusal(start, "same"))
                for i in range(distinct):
                    store.record_rejection(refusal(start, f"w{writer}-{i}"))
                    if i < repeated - 1:
                        store.record_rejection(refusal(start, "same"))
        except BaseException as error:  # raised in the test's own thread below
            failures.append(error)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []

    with open_store(store_url) as store:
        rows = store.list_rejections(EVERYTHING)
    own, overflow = own_and_overflow(rows)
    assert sum(r.count for r in rows) == writers * (distinct + repeated)
    # Never beyond the budget; a race between two first copies of one refusal may waste
    # a row of it (each writer's first "same" can claim one).
    assert REJECTION_ROW_BUDGET - (writers - 1) <= len(own) <= REJECTION_ROW_BUDGET
    assert [r.count for r in own if r.client_key == "same"] == [writers * repeated]
    (spill,) = overflow
    assert spill.count == writers * distinct - (len(own) - 1)


def _budget_counters(store_url: str) -> list[int]:
    query = "SELECT window_number FROM rejection_windows ORDER BY window_number"
    if store_url.startswith("sqlite"):
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            found = [r[0] for r in conn.execute(query)]
        conn.close()
        return found
    with psycopg.connect(store_url) as pg:
        return [r[0] for r in pg.execute(query)]


def test_overflow_rows_and_budget_counters_age_out(store_url: str) -> None:
    now = utcnow()
    old = now - timedelta(days=3)
    with open_store(store_url, rejection_purge_interval=3600) as writer:
        for i in range(REJECTION_ROW_BUDGET + 5):
            writer.record_rejection(refusal(old, f"old-{i}"))
        writer.record_rejection(refusal(now - timedelta(hours=1), "recent"))
        _, overflow = own_and_overflow(writer.list_rejections(EVERYTHING))
        assert [r.count for r in overflow] == [5]
    assert _budget_counters(store_url) == [
        rejection_window(old),
        rejection_window(now - timedelta(hours=1)),
    ]
    with open_store(store_url, rejection_retention_days=2) as store:
        store.record_rejection(refusal(now, "new"))  # the first insert purges
        rows = store.list_rejections(EVERYTHING)
    assert {r.client_key for r in rows} == {"recent", "new"}
    assert not any(r.overflow for r in rows)
    assert _budget_counters(store_url) == [
        rejection_window(now - timedelta(hours=1)),
        rejection_window(now),
    ]


def test_a_log_from_before_the_budget_is_upgraded(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = eventstore.sqlite if store_url.startswith("sqlite") else eventstore.postgres.store
    # The schema before the row budget (later migrations follow it).
    before = next(i for i, m in enumerate(backend.MIGRATIONS) if "rejection_windows" in m)
    monkeypatch.setattr(backend, "MIGRATIONS", backend.MIGRATIONS[:before])
    open_store(store_url).close()
    at = window_start(utcnow()) + timedelta(seconds=1)
    old = refusal(at, "ck-old")
    row = (at, old.path, old.reason, old.status, old.client_key, 1, at)
    key = (rejection_fingerprint(storable_rejection(old)), rejection_window(at))
    insert = (
        "INSERT INTO rejections (at, path, reason, status, client_key, count, last_seen_at,"
        " fingerprint, window_number) VALUES ({0}, {0}, {0}, {0}, {0}, {0}, {0}, {0}, {0})"
    )
    if backend is eventstore.sqlite:
        with sqlite3.connect(store_url.removeprefix("sqlite:///")) as conn:
            stamp = format_timestamp(at)
            conn.execute(insert.format("?"), (stamp, *row[1:-1], stamp, *key))
        conn.close()
    else:
        with psycopg.connect(store_url) as pg:
            pg.execute(insert.format("%s").encode(), (*row, *key))
    monkeypatch.undo()

    with open_store(store_url) as store:  # migrated to the row budget
        store.record_rejection(msgspec.structs.replace(old, at=at + timedelta(seconds=1)))
        store.record_rejection(refusal(at, "ck-new"))
        rows = store.list_rejections()
    assert [(r.client_key, r.count, r.overflow) for r in rows] == [
        ("ck-old", 2, False),
        ("ck-new", 1, False),
    ]


def test_refusals_beyond_the_budget_are_counted_over_http(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)  # for the CLI
    with running_service(store_url) as service:
        # Twice the budget and one: however the calls fall on two windows, one of them
        # gets more than its budget.
        sent = 2 * REJECTION_ROW_BUDGET + 1
        for _ in range(sent):  # a new claimed clientKey each time, no token: 401
            answer = service.client.post("/installed?v=1", json=make_install_payload())
            assert answer.status_code == 401, answer.text
        reason = answer.json()["error"]
        rows = service.admin("/admin/rejections", limit=1000, reason=reason).json()["rejections"]
        login = {"token": ADMIN_TOKEN, "next": "/console"}
        assert service.client.post("/console/login", data=login).status_code == 303
        page = service.client.get("/console/rejections").text
    assert sum(r["count"] for r in rows) == sent
    windows: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        windows.setdefault(rejection_window(datetime.fromisoformat(row["at"])), []).append(row)
    for in_window in windows.values():
        own = [r for r in in_window if not r["overflow"]]
        overflow = [r for r in in_window if r["overflow"]]
        assert all(r["count"] == 1 and r["client_key"] for r in own)
        assert len(own) <= REJECTION_ROW_BUDGET
        assert len(overflow) <= 1 and all("client_key" not in r for r in overflow)
        if overflow:  # counted there once the window's budget was spent
            assert len(own) == REJECTION_ROW_BUDGET
    assert any(r["overflow"] for r in rows)
    # The CLI and the console show what a row stands for.
    result = CliRunner().invoke(cli, ["rejections", "--reason", reason, "--limit", "1000"])
    header, *lines = result.stdout.rstrip("\n").split("\n")
    listed = [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]
    assert sum(int(r["count"]) for r in listed) == sent
    assert "(beyond the row budget)" in page and f"From the latest {sent} refused" in page
