"""Master-key rotation that finishes (issue 8 item 4), on every store, over real HTTP.

The story: tenants installed under key A; configure "B,A"; `ledger rewrap`; configure
only "B": every tenant still verifies. Without the rewrap, dropping A is a configuration
error answered 503 `master_key_unavailable`, never a forgotten tenant.
"""

from __future__ import annotations

import base64
import json
import os
import pty
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from typer.testing import CliRunner

from app.cli.main import cli
from eventstore import open_store
from eventstore.crypto import (
    MasterKeys,
    RewrapReport,
    key_id,
    rewrap_data_keys,
    secret_ad,
    wrapped_key_id,
)
from eventstore.events import Metadata, SecretRotated, stream_id_for
from eventstore.store import EventStore
from eventstore.values import NewEvent
from tests.harness import RunningService, running_service

runner = CliRunner()


def new_master_key() -> tuple[str, bytes]:
    raw = os.urandom(32)
    return base64.b64encode(raw).decode(), raw


def rewrap(store_url: str, master_key: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = runner.invoke(
        cli,
        ["rewrap", "--json", *args],
        env={"LEDGER_DATABASE_URL": store_url, "LEDGER_MASTER_KEY": master_key},
        catch_exceptions=False,
    )
    return result.exit_code, json.loads(result.stdout)


def hs256(service: RunningService, event: str, payload: dict[str, Any]) -> httpx.Response:
    return service.send(service.call(event, payload, alg="HS256"))


def log_entries(service: RunningService) -> list[dict[str, Any]]:
    return [json.loads(line) for line in service.logs.getvalue().splitlines() if line.strip()]


def assert_no_key_material(text: str, *keys: bytes) -> None:
    for raw in keys:
        assert base64.b64encode(raw).decode() not in text
        assert raw.hex() not in text


# ---------------------------------------------------------------- the whole story


def test_add_rewrap_drop_and_every_tenant_still_verifies(store_url: str) -> None:
    a, a_raw = new_master_key()
    b, b_raw = new_master_key()
    with running_service(store_url, master_key=a) as service:
        tenants = [service.install() for _ in range(3)]
        forgotten = service.install()
        assert service.store.destroy_data_key(stream_id_for(forgotten["clientKey"]))

    # Step 1: the new key first, the old one still configured.
    with running_service(store_url, master_key=f"{b},{a}") as service:
        late = service.install()  # a new tenant is wrapped by B already
        # Step 2: rewrap while the service serves.
        code, first = rewrap(store_url, f"{b},{a}")
        assert code == 0, first
        assert (first["rewrapped"], first["already_current"], first["unwrappable"]) == (3, 1, 0)
        assert first["current_key_id"] == key_id(b_raw)
        assert hs256(service, "enabled", tenants[0]).status_code == 204
        code, second = rewrap(store_url, f"{b},{a}")  # idempotent
        assert code == 0
        assert (second["rewrapped"], second["already_current"], second["unwrappable"]) == (0, 4, 0)
        stored = [service.store.get_data_key(stream_id_for(t["clientKey"])) for t in tenants]
        assert all(w is not None and wrapped_key_id(w) == key_id(b_raw) for w in stored)

    # Step 3: the old key dropped.
    with running_service(store_url, master_key=b) as service:
        for payload in [*tenants, late]:
            before = len(service.stream(payload["clientKey"]))
            response = hs256(service, "disabled", payload)
            assert response.status_code == 204, response.text
            events = service.stream(payload["clientKey"])
            assert len(events) == before + 1 and events[-1].type == "Disabled"
        # A tenant that was really forgotten keeps today's answer.
        response = hs256(service, "enabled", forgotten)
        assert (response.status_code, response.json()["error"]) == (401, "no_shared_secret")
        assert "master_key_unavailable" not in service.logs.getvalue()
        assert_no_key_material(service.logs.getvalue(), a_raw, b_raw)


def test_a_dropped_master_key_answers_503_names_its_id_and_stores_nothing(
    store_url: str,
) -> None:
    a, a_raw = new_master_key()
    b, b_raw = new_master_key()
    with running_service(store_url, master_key=a) as service:
        payload, other = service.install(), service.install()

    with running_service(store_url, master_key=b) as service:
        key = payload["clientKey"]
        head = service.store.head()
        calls = [
            service.call("enabled", payload, alg="HS256"),
            service.call("uninstalled", payload, alg="HS256"),
            service.call("installed", payload),  # signed: before, 25 retries then `contention`
            service.call("installed", dict(payload, sharedSecret=secrets.token_urlsafe(40))),
        ]
        for call in calls:
            response = service.send(call)
            assert response.status_code == 503, response.text
            assert response.json()["error"] == "master_key_unavailable"
            assert int(response.headers["Retry-After"]) > 0
            assert key_id(a_raw) not in response.text  # the id is for the operator's log
        assert service.store.head() == head  # no event stored

        rejections = [r for r in service.store.list_rejections() if r.client_key == key]
        # Identical refusals in one window are one row with a count (the rejection log).
        assert {r.reason for r in rejections} == {"master_key_unavailable"}
        assert sum(r.count for r in rejections) == len(calls)
        assert all(r.status == 503 for r in rejections)
        errors = [
            e
            for e in log_entries(service)
            if e["level"] == "error" and e.get("reason") == "master_key_unavailable"
        ]
        assert len(errors) == len(calls)
        assert all(key_id(a_raw) in e["message"] and e["client_key"] == key for e in errors)
        assert_no_key_material(service.logs.getvalue(), a_raw, b_raw)

        # A signed uninstall needs no secret: it is not held up by the missing key.
        assert service.send(service.call("uninstalled", other)).status_code == 204
        assert service.stream(other["clientKey"])[-1].type == "Uninstalled"

    # A rewrap without the old key cannot help: it says which key is missing, exits 1,
    # and leaves the wrapped keys as they were.
    with open_store(store_url) as store:
        before = store.get_data_key(stream_id_for(key))
        code, report = rewrap(store_url, b)
        assert code == 1
        assert (report["rewrapped"], report["unwrappable"]) == (0, 2)
        assert {u["key_id"] for u in report["unwrappable_keys"]} == {key_id(a_raw)}
        assert {u["client_key"] for u in report["unwrappable_keys"]} == {
            key,
            other["clientKey"],
        }
        assert store.get_data_key(stream_id_for(key)) == before


def test_a_damaged_data_key_is_not_taken_for_a_forgotten_tenant(store_url: str) -> None:
    with running_service(store_url) as service:
        payload = service.install()
        stream = stream_id_for(payload["clientKey"])
        wrapped = service.store.get_data_key(stream)
        assert wrapped is not None
        damaged = wrapped[:-1] + bytes([wrapped[-1] ^ 1])
        assert service.store.swap_data_key(stream, wrapped, damaged)
        head = service.store.head()

        response = hs256(service, "enabled", payload)

        assert (response.status_code, response.json()["error"]) == (503, "data_key_unreadable")
        assert "Retry-After" in response.headers
        assert service.store.head() == head
        assert service.store.list_rejections(1)[0].reason == "data_key_unreadable"


# ---------------------------------------------------------------- associated data


def test_an_old_ciphertext_appended_again_does_not_open(store_url: str) -> None:
    with running_service(store_url) as service:
        payload = service.install()
        key = payload["clientKey"]
        service.install(dict(payload, sharedSecret=secrets.token_urlsafe(40)))
        events = service.stream(key)
        assert [e.type for e in events] == ["Installed", "SecretRotated"]
        old = events[0].data.shared_secret  # type: ignore[union-attr]
        assert old is not None and old.ad == secret_ad(stream_id_for(key), 1)
        # Someone with write access to the log appends the first ciphertext, label and
        # all, as the current secret: the old secret must not verify calls again.
        service.store.append(
            stream_id_for(key), [NewEvent(SecretRotated(old), Metadata())], events[-1].version
        )

        response = hs256(service, "enabled", payload)

        assert (response.status_code, response.json()["error"]) == (401, "no_shared_secret")
        assert len(service.stream(key)) == 3
        assert any(e.get("reason") == "secret_unreadable" for e in log_entries(service))
        assert payload["sharedSecret"] not in service.logs.getvalue()


# ---------------------------------------------------------------- store methods, rewrap core


def test_data_keys_are_listed_in_batches_and_swapped_only_if_unchanged(
    store: EventStore,
) -> None:
    for name in ("c", "a", "d", "b"):
        store.put_data_key(f"tenant:{name}", name.encode())
    first = store.list_data_keys("", 3)
    assert first == [("tenant:a", b"a"), ("tenant:b", b"b"), ("tenant:c", b"c")]
    assert store.list_data_keys(first[-1][0], 3) == [("tenant:d", b"d")]
    assert store.list_data_keys("tenant:d", 3) == []

    assert store.swap_data_key("tenant:a", b"a", b"a2") is True
    assert store.get_data_key("tenant:a") == b"a2"
    assert store.swap_data_key("tenant:a", b"a", b"a3") is False  # no longer what was read
    assert store.get_data_key("tenant:a") == b"a2"
    assert store.destroy_data_key("tenant:b")
    assert store.swap_data_key("tenant:b", b"b", b"b2") is False  # forgotten stays forgotten
    assert store.get_data_key("tenant:b") is None
    assert store.swap_data_key("tenant:none", b"x", b"y") is False


def test_rewrap_counts_each_kind_of_key_in_batches(store: EventStore) -> None:
    old, new, lost = os.urandom(32), os.urandom(32), os.urandom(32)
    rotated = MasterKeys((new, old))
    for i in range(5):
        store.put_data_key(f"tenant:old-{i}", MasterKeys((old,)).wrap(f"tenant:old-{i}", b"k" * 32))
    store.put_data_key("tenant:new", rotated.wrap("tenant:new", b"n" * 32))
    store.put_data_key("tenant:lost", MasterKeys((lost,)).wrap("tenant:lost", b"l" * 32))
    store.put_data_key("tenant:damaged", b"\x01" + b"\x00" * 60)
    seen: list[int] = []

    def progress(report: RewrapReport) -> None:
        seen.append(report.seen)

    report = rewrap_data_keys(store, rotated, batch_size=3, progress=progress)

    assert (report.rewrapped, report.current, report.forgotten, report.changing) == (5, 1, 0, 0)
    assert {(u.stream_id, u.key_id) for u in report.unwrappable} == {
        ("tenant:lost", key_id(lost)),
        ("tenant:damaged", "00" * 8),
    }
    assert not report.ok
    assert seen == [3, 6, 8]
    for i in range(5):
        wrapped = store.get_data_key(f"tenant:old-{i}")
        assert wrapped is not None
        assert MasterKeys((new,)).unwrap(f"tenant:old-{i}", wrapped) == b"k" * 32
    again = rewrap_data_keys(store, rotated, batch_size=3)
    assert (again.rewrapped, again.current, len(again.unwrappable)) == (0, 6, 2)


def test_rewrap_on_a_terminal_shows_a_bar_and_a_summary_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    a, _ = new_master_key()
    b, _ = new_master_key()
    with open_store(url) as store:
        store.put_data_key("tenant:x", MasterKeys.parse(a).wrap("tenant:x", os.urandom(32)))
    env = dict(os.environ, LEDGER_DATABASE_URL=url, LEDGER_MASTER_KEY=f"{b},{a}", COLUMNS="120")
    ledger = str(Path(sys.executable).with_name("ledger"))

    primary, secondary = pty.openpty()
    try:
        finished = subprocess.run(
            [ledger, "rewrap"], stdout=secondary, stderr=subprocess.PIPE, env=env, timeout=60
        )
        os.close(secondary)
        shown = _read_all(primary)
    finally:
        os.close(primary)
    assert finished.returncode == 0, finished.stderr
    assert "1/1" in shown  # the bar's count
    assert "1 rewrapped, 0 already current, 0 unwrappable" in shown

    piped = subprocess.run(
        [ledger, "rewrap"], capture_output=True, text=True, env=env, timeout=60, check=True
    )
    assert piped.stdout.splitlines()[0].startswith(
        "rewrap: 0 rewrapped, 1 already current, 0 unwrappable"
    )
    assert "━" not in piped.stdout  # no bar when piped


def _read_all(fd: int) -> str:
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
