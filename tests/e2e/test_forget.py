"""`ledger forget` (SPEC §5): the data key is destroyed for good, in the store's files too,
and a TenantForgotten event says so in every view, on every store.

The files are read as bytes: the SQLite database and its ``-wal``, PostgreSQL's table
pages (``pageinspect``'s ``get_raw_page``, as the test server's superuser).
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli import keys as cli_keys
from app.cli.forget import AlreadyForgotten, Forgotten, NeverHeld, forget_tenant
from app.cli.main import cli
from app.sim.connect import make_install_payload
from eventstore import open_store
from eventstore.data_keys import KeyCopiesRemain
from eventstore.events import Enabled, Metadata, TenantForgotten, stream_id_for
from eventstore.sqlite import sqlite_path
from eventstore.store import EventStore
from eventstore.testing.synthetic import installed_data
from eventstore.values import NewEvent
from projections import tenants as tenants_fold
from tests.conftest import PostgresDatabases
from tests.harness import ADMIN_TOKEN, RunningService

runner = CliRunner()
WRAPPED_LENGTH = 69  # format byte, key id, nonce, 32-byte key, tag (eventstore.crypto)




def ledger(*args: str, code: int = 0) -> tuple[str, str]:
    """Run ``ledger ARGS`` (stdin and stdout are not a terminal); its stdout and stderr."""
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout, result.stderr


# ------------------------------------------------------------ the bytes in the files


def _stored_bytes(store: EventStore, url: str) -> list[bytes]:
    """Every byte the store keeps the data-key table in, as it is on disk now."""
    if url.startswith("sqlite"):
        path = Path(sqlite_path(url))
        wal = path.with_name(path.name + "-wal")
        return [p.read_bytes() for p in (path, wal) if p.exists()]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
        toast = conn.execute(
            "SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'data_keys'::regclass"
        ).fetchone()
        relations = ["data_keys", *([toast[0]] if toast and toast[0] != "-" else [])]
        pages: list[bytes] = []
        for relation in relations:
            (blocks,) = conn.execute(
                "SELECT pg_relation_size(%s::regclass) / current_setting('block_size')::int",
                [relation],
            ).fetchone() or (0,)
            for block in range(int(blocks)):
                row = conn.execute("SELECT get_raw_page(%s, %s)", [relation, block]).fetchone()
                pages.append(bytes(row[0]) if row else b"")
        return pages


def _holds(store: EventStore, url: str, value: bytes) -> bool:
    return any(value in chunk for chunk in _stored_bytes(store, url))


def test_a_destroyed_key_leaves_no_copy_in_the_store_files(store_url: str) -> None:
    with open_store(store_url) as store:
        for n in range(40):  # neighbours on the same pages, kept intact
            store.put_data_key(f"tenant:n{n}", os.urandom(WRAPPED_LENGTH))
        kept = {f"tenant:n{n}": store.get_data_key(f"tenant:n{n}") for n in range(40)}
        first, rewrapped = os.urandom(WRAPPED_LENGTH), os.urandom(WRAPPED_LENGTH)
        store.put_data_key("tenant:victim", first)
        # A rewrap replaces it: on PostgreSQL the first value lives on as a dead tuple.
        assert store.swap_data_key("tenant:victim", first, rewrapped)
        assert _holds(store, store_url, rewrapped)  # the test sees what it looks for

        assert store.destroy_data_key("tenant:victim") is True

        assert store.get_data_key("tenant:victim") is None
        for value in (first, rewrapped):
            assert not _holds(store, store_url, value)
        assert {s: store.get_data_key(s) for s in kept} == kept
        assert store.destroy_data_key("tenant:victim") is False  # scrubs again, harmlessly


# ------------------------------------------------------------ forget_tenant


def test_forget_tenant_destroys_appends_once_and_refuses_the_unknown(store: EventStore) -> None:
    stream = stream_id_for("ck")
    installed = installed_data("ck", "https://ck.atlassian.net")
    store.append(stream, [NewEvent(installed, Metadata())], 0, data_key=b"w" * 69)
    store.append(stream, [NewEvent(Enabled(), Metadata())], 1)

    assert forget_tenant(store, "never-seen", "typo", "alice", "box") == NeverHeld()

    outcome = forget_tenant(store, "ck", "erasure request 17", "alice", "box")
    assert isinstance(outcome, Forgotten) and outcome.had_key
    assert store.get_data_key(stream) is None
    event = store.read_stream(stream)[-1]
    assert (event.type, event.version, event.data) == (
        "TenantForgotten",
        3,
        TenantForgotten(reason="erasure request 17"),
    )
    assert (event.metadata.operator, event.metadata.host) == ("alice", "box")
    row = tenants_fold.fold(store.read_stream(stream))
    assert row is not None and row.forgotten_at == event.recorded_at
    assert row.forgotten_by == "alice@box" and row.state == "installed"

    again = forget_tenant(store, "ck", "again", "bob", "other")
    assert isinstance(again, AlreadyForgotten) and again.row.forgotten_by == "alice@box"
    assert len(store.read_stream(stream)) == 3
    assert store.verify().ok


# ------------------------------------------------------------ the command, end to end


def test_forget_end_to_end(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    assert service.send(service.call("enabled", payload, alg="HS256")).status_code == 204
    assert service.store.get_data_key(stream_id_for(key)) is not None

    out, err = ledger("forget", key, "--reason", "customer asked: ticket 4711", "--yes")
    assert "forgotten" in out and "data key destroyed" in out and not err
    assert service.store.get_data_key(stream_id_for(key)) is None

    event = service.stream(key)[-1]
    assert event.type == "TenantForgotten"
    assert event.data == TenantForgotten(reason="customer asked: ticket 4711")
    assert event.metadata.operator == getpass.getuser()
    assert event.metadata.host == socket.gethostname()
    by = f"{getpass.getuser()}@{socket.gethostname()}"

    # HS256 calls can no longer be verified: 401, never a 500.
    refused = service.send(service.call("disabled", payload, alg="HS256"))
    assert refused.status_code == 401 and refused.json()["error"] == "no_shared_secret"

    # Every view shows it.
    tenant = service.admin(f"/admin/tenants/{key}").json()
    assert tenant["forgotten_by"] == by and tenant["forgotten_at"].endswith("Z")
    assert tenant["state"] == "installed"
    (shown,) = [
        e for e in service.admin(f"/admin/tenants/{key}/events").json()["events"]
        if e["type"] == "TenantForgotten"
    ]  # fmt: skip
    assert shown["data"] == {"reason": "customer asked: ticket 4711"}
    assert shown["metadata"]["operator"] == getpass.getuser()
    assert json.loads(ledger("show", key, "--json")[0])["forgotten_by"] == by
    history = ledger("history", key)[0]
    assert "TenantForgotten" in history and "ticket 4711" in history and by in history
    listed = json.loads(ledger("tenants", "--json")[0])["tenants"]
    assert [t["forgotten_by"] for t in listed] == [by]
    client = service.client
    client.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console"})
    page = client.get(f"/console/tenants/{key}")
    assert page.status_code == 200 and "Forgotten" in page.text and by in page.text
    assert "TenantForgotten" in page.text and "ticket 4711" in page.text

    # The chain still verifies; the export never holds a secret.
    assert json.loads(ledger("verify", "--json")[0])["ok"] is True
    export = ledger("export")[0]
    assert "TenantForgotten" in export and payload["sharedSecret"] not in export
    assert payload["sharedSecret"] not in service.logs.getvalue()

    # Twice: nothing more is appended, and it says so.
    versions = len(service.stream(key))
    out, _ = ledger("forget", key, "--reason", "again", "--yes")
    assert "already forgotten" in out and by in out
    assert len(service.stream(key)) == versions


def test_a_signed_reinstall_starts_a_forgotten_tenant_afresh(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    ledger("forget", key, "--reason", "site deleted", "--yes")
    # An old secret does not buy the tenancy back.
    stale = service.send(service.call("installed", payload, alg="HS256"))
    assert stale.status_code == 401 and stale.json()["error"] == "first_install_not_signed"

    fresh = make_install_payload(client_key=key, base_url=payload["baseUrl"])
    service.install(fresh)
    assert [e.type for e in service.stream(key)][-2:] == ["TenantForgotten", "Installed"]
    tenant = service.admin(f"/admin/tenants/{key}").json()
    assert tenant["forgotten_at"] is None and tenant["forgotten_by"] is None
    assert service.store.get_data_key(stream_id_for(key)) is not None
    # The new secret verifies HS256 calls again (with a new data key).
    assert service.send(service.call("disabled", fresh, alg="HS256")).status_code == 204


def test_forget_refuses_without_a_reason_a_confirmation_or_a_tenant(
    service: RunningService,
) -> None:
    payload = service.install()
    key = payload["clientKey"]
    _, err = ledger("forget", key, "--reason", "x", code=2)  # no terminal, no --yes
    assert "--yes" in err and len(err.strip().splitlines()) == 1
    ledger("forget", key, "--reason", "  ", "--yes", code=2)
    ledger("forget", key, "--yes", code=2)  # --reason is required
    assert service.store.get_data_key(stream_id_for(key)) is not None
    assert [e.type for e in service.stream(key)] == ["Installed"]

    _, err = ledger("forget", "never-held", "--reason", "typo", "--yes", code=1)
    assert "never held" in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_forget_asks_on_a_terminal(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = service.install()
    key = payload["clientKey"]
    # CliRunner's stdin is never a terminal: the one question the command asks it is
    # answered as a person's terminal would.
    monkeypatch.setattr(cli_keys, "at_a_terminal", lambda: True)
    result = runner.invoke(cli, ["forget", key, "--reason", "r"], input="n\n")
    assert result.exit_code == 1 and "Destroy the data key" in result.output
    assert service.store.get_data_key(stream_id_for(key)) is not None
    result = runner.invoke(cli, ["forget", key, "--reason", "r"], input="y\n")
    assert result.exit_code == 0, result.output
    assert service.store.get_data_key(stream_id_for(key)) is None


@contextmanager
def _holding_on(url: str) -> Iterator[None]:
    """Another connection that keeps the scrub from finishing: on SQLite a reader on an
    old snapshot (the WAL cannot be emptied under it), on PostgreSQL a lock on the table
    (it cannot be rewritten under it)."""
    if url.startswith("sqlite"):
        reader = sqlite3.connect(sqlite_path(url), isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM data_keys").fetchone()
            yield
        finally:
            reader.close()
        return
    with psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE data_keys IN ACCESS SHARE MODE")
        yield


def test_a_scrub_that_cannot_finish_is_said_and_finished_by_forgetting_again(
    store_url: str,
) -> None:
    with open_store(store_url, busy_timeout=0.2) as store:
        stream = stream_id_for("ck")
        wrapped = os.urandom(WRAPPED_LENGTH)
        installed = installed_data("ck", "https://ck.atlassian.net")
        store.append(stream, [NewEvent(installed, Metadata())], 0, data_key=wrapped)
        with _holding_on(store_url):
            first = forget_tenant(store, "ck", "erasure", "alice", "box")
        # Recorded all the same: the key's row is gone, only the files lag behind.
        assert isinstance(first, Forgotten) and first.had_key and first.copies_remain
        assert store.get_data_key(stream) is None
        assert _holds(store, store_url, wrapped)

        # Run again, as the CLI says; a busy machine may need another go (the rewrite
        # waits at most 3 s for its lock, e.g. behind autovacuum).
        for _ in range(5):
            again = forget_tenant(store, "ck", "erasure", "alice", "box")
            assert isinstance(again, AlreadyForgotten)
            if again.copies_remain is None:
                break
        assert again.copies_remain is None
        assert not _holds(store, store_url, wrapped)
        assert [e.type for e in store.read_stream(stream)] == ["Installed", "TenantForgotten"]


def test_a_role_that_cannot_rewrite_the_table_is_told_so(
    postgres_databases: PostgresDatabases,
) -> None:
    """PostgreSQL only warns (and rewrites nothing) when the role does not own the table."""
    url = postgres_databases.create()
    open_store(url).close()  # the schema, owned by the test's superuser
    role = f"ledger_forget_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(
            f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"'
        )
        try:
            parts = urlsplit(url)
            as_role = parts._replace(
                netloc=f"{role}@{parts.hostname}:{parts.port or 5432}"
            ).geturl()
            with open_store(as_role, migrate=False) as store:
                wrapped = os.urandom(WRAPPED_LENGTH)
                store.put_data_key("tenant:a", wrapped)
                with pytest.raises(KeyCopiesRemain, match="owner") as raised:
                    store.destroy_data_key("tenant:a")
                assert raised.value.destroyed and store.get_data_key("tenant:a") is None
                assert _holds(store, url, wrapped)
        finally:
            admin.execute(f'DROP OWNED BY "{role}"')
            admin.execute(f'DROP ROLE "{role}"')
