"""Integrity evidence on every store: verify, digests, verifiable exports, tenant proofs.

Each attack (tamper with one event, drop one, reorder two, rewrite history with a
recomputed chain) is made in the database (guards disabled, as a superuser could)
and in an export file; each must be found at the right position, by `ledger verify`
and, for exports, by the standalone `tools/verify_export.py` run with the system
python3, which must agree with `ledger verify --export`.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from eventstore import open_store
from eventstore.chain import GENESIS, link, link_input, row_digest
from eventstore.crypto import seal_secret, secret_ad
from eventstore.events import (
    BaseUrlChanged,
    Disabled,
    Enabled,
    Installed,
    Metadata,
    Uninstalled,
    stream_id_for,
)
from eventstore.export import full_line, opaque_line
from eventstore.values import NewEvent, RawEvent

ROOT = Path(__file__).resolve().parents[2]
STANDALONE = ROOT / "tools" / "verify_export.py"
runner = CliRunner()


@dataclass(frozen=True)
class Tenant:
    key: str
    base_url: str
    secret: str
    data_key: bytes  # the raw data key: must never reach an export
    wrapped: bytes  # what the store keeps for it: must never reach an export either


TENANTS = [
    Tenant(
        f"client-{name}",
        f"https://{name}-site.atlassian.net",
        f"plain-secret-of-{name}-" + "x" * 20,
        os.urandom(32),
        os.urandom(60),
    )
    for name in ("alpha", "bravo", "charlie")
]


def _meta(n: int) -> Metadata:
    return Metadata(call_id=f"call-{n}", descriptor_version="1", alg="HS256", iat=n)


def _installed(tenant: Tenant) -> NewEvent:
    stream = stream_id_for(tenant.key)
    sealed = seal_secret(tenant.data_key, tenant.secret, secret_ad(stream, 1))
    data = Installed(
        key="tenant-ledger",
        client_key=tenant.key,
        base_url=tenant.base_url,
        shared_secret=sealed,
        details={"productType": "jira"},
    )
    return NewEvent(data, _meta(0))


# (tenant index, event) in log order: 9 events, the tenants interleaved.
def _script() -> list[tuple[int, NewEvent]]:
    a, b, c = TENANTS
    return [
        (0, _installed(a)),
        (1, _installed(b)),
        (
            0,
            NewEvent(BaseUrlChanged(from_=a.base_url, to="https://alpha2.atlassian.net"), _meta(1)),
        ),
        (2, _installed(c)),
        (1, NewEvent(Disabled(), _meta(2))),
        (0, NewEvent(Enabled(), _meta(3))),
        (2, NewEvent(Disabled(), _meta(4))),
        (1, NewEvent(Enabled(), _meta(5))),
        (0, NewEvent(Uninstalled(), _meta(6))),
    ]


EVENTS = len(_script())


def build_log(url: str) -> None:
    versions = [0, 0, 0]
    with open_store(url) as store:
        for index, event in _script():
            tenant = TENANTS[index]
            wrapped = tenant.wrapped if versions[index] == 0 else None
            store.append(stream_id_for(tenant.key), [event], versions[index], data_key=wrapped)
            versions[index] += 1


@pytest.fixture
def log_url(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    build_log(store_url)
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    return store_url


def ledger(*args: str) -> tuple[int, str]:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout


def ledger_json(*args: str) -> tuple[int, dict[str, Any]]:
    code, out = ledger(*args)
    return code, json.loads(out)


def standalone(*files: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        ["/usr/bin/python3", str(STANDALONE), *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, json.loads(done.stdout)


# -- the database, as a superuser who disables the guards


class Superuser:
    """Raw access to a test database with the append-only guards out of the way."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")

    def run(self, statement: str, *params: Any) -> None:
        if self.sqlite:
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"))
            triggers = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'events'"
            ).fetchall()
            for (name,) in triggers:
                conn.execute(f'DROP TRIGGER "{name}"')
            conn.execute(statement, params)
            conn.commit()
            conn.close()
        else:
            with psycopg.connect(self.url, autocommit=True) as pg:
                pg.execute("ALTER TABLE events DISABLE TRIGGER ALL")
                pg.execute(statement.replace("?", "%s"), params)  # type: ignore[arg-type]

    def set_hash(self, position: int, hex_hash: str) -> None:
        if self.sqlite:
            self.run("UPDATE events SET hash = ? WHERE position = ?", hex_hash, position)
        else:
            self.run(
                "UPDATE events SET hash = decode(?, 'hex') WHERE position = ?", hex_hash, position
            )
            self.run(
                "UPDATE ledger_head SET hash = decode(?, 'hex') WHERE position = ?",
                hex_hash,
                position,
            )

    def rows(self) -> list[RawEvent]:
        with open_store(self.url) as store:
            return list(store.read_raw())


def tamper(db: Superuser) -> int:
    db.run("UPDATE events SET data = replace(data, 'alpha2', 'evil') WHERE position = 3")
    return 3


def drop(db: Superuser) -> int:
    db.run("DELETE FROM events WHERE position = 4")
    return 4


def reorder(db: Superuser) -> int:
    for old, new in ((3, -1), (5, 3), (-1, 5)):
        db.run("UPDATE events SET position = ? WHERE position = ?", new, old)
    return 3


def rewrite(db: Superuser) -> int:
    """Rewrite position 3 and recompute the chain from there: plain verify still passes."""
    tamper(db)
    previous = GENESIS
    for row in db.rows():
        previous = link(previous, row.position, link_input(row))
        if row.position >= 3:
            db.set_hash(row.position, previous.hex())
    return EVENTS  # found where the digest (taken at the head before) no longer matches


ATTACKS: dict[str, Callable[[Superuser], int]] = {
    "tamper": tamper,
    "drop": drop,
    "reorder": reorder,
    "rewrite": rewrite,
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_on_the_database_are_found(log_url: str, tmp_path: Path, attack: str) -> None:
    digest_file = tmp_path / "digest.json"
    code, out = ledger("digest")
    assert code == 0
    digest_file.write_text(out)
    code, report = ledger_json("verify", "--digest", str(digest_file))
    assert code == 0 and report["ok"] and report["digests"] == [str(digest_file)]

    position = ATTACKS[attack](Superuser(log_url))

    code, report = ledger_json("verify", "--digest", str(digest_file))
    assert code == 1 and report["ok"] is False
    assert report["first_bad_position"] == position, report
    assert report["events"] == position - 1
    plain_code, plain = ledger_json("verify")
    if attack == "rewrite":  # a recomputed chain passes verify; only the digest tells
        assert plain_code == 0 and plain["ok"] and plain["events"] == EVENTS
        assert str(digest_file) in report["reason"]
    else:
        assert plain_code == 1 and plain["first_bad_position"] == position
    if attack == "drop":
        assert "position 4 missing" in plain["reason"]
        assert ledger("export", "--verifiable", "--after", "4")[0] == 1
    # An export of the damaged log shows the same damage to both offline verifiers.
    export = export_file(tmp_path, "damaged.jsonl", "--verifiable")
    code, offline = both_verifiers(export, digest_file)
    assert code == 1 and offline["first_bad_position"] == position


def test_losing_the_last_events_is_found(log_url: str, tmp_path: Path) -> None:
    digest_file = tmp_path / "digest.json"
    digest_file.write_text(ledger("digest")[1])
    Superuser(log_url).run("DELETE FROM events WHERE position > ?", EVENTS - 2)
    code, report = ledger_json("verify", "--digest", str(digest_file))
    assert code == 1 and report["first_bad_position"] == EVENTS - 1
    assert f"position {EVENTS} is beyond the log's end at {EVENTS - 2}" in report["reason"]
    code, plain = ledger_json("verify")
    if log_url.startswith("postgresql"):  # the stored head still says where the log ended
        assert code == 1 and plain["first_bad_position"] == EVENTS - 1
        assert plain["reason"] == f"log ends at {EVENTS - 2} but the stored head says {EVENTS}"
    else:  # SQLite's head is its last row: only a digest can tell
        assert code == 0


def test_digest_shape_and_usage_errors(log_url: str, tmp_path: Path) -> None:
    code, digest = ledger_json("digest")
    assert code == 0 and set(digest) == {"position", "head", "recorded_at", "store"}
    assert digest["position"] == EVENTS and len(digest["head"]) == 64
    assert digest["recorded_at"].endswith("Z")
    assert digest["store"]["kind"] in ("sqlite", "postgresql")
    assert "postgres@" not in json.dumps(digest)  # no user name (nor a password)

    several = tmp_path / "digests.jsonl"
    several.write_text(
        json.dumps(dict(digest, position=1, head="0" * 64)) + "\n" + json.dumps(digest) + "\n"
    )
    code, report = ledger_json("verify", "--digest", str(several))
    assert code == 1 and report["first_bad_position"] == 1 and f"{several}:1" in report["reason"]

    assert ledger("verify", "--digest", str(tmp_path / "absent.json"))[0] == 2
    (tmp_path / "bad.json").write_text("{}")
    assert ledger("verify", "--digest", str(tmp_path / "bad.json"))[0] == 2
    assert ledger("verify", str(several))[0] == 2
    assert ledger("export", "--proof")[0] == 2
    assert ledger("export", "--tenant", "client-alpha")[0] == 2
    assert ledger("export", "--tenant", "nobody", "--proof")[0] == 1


# -- export files


def export_file(tmp_path: Path, name: str, *args: str) -> Path:
    code, out = ledger("export", *args)
    assert code == 0
    path = tmp_path / name
    path.write_text(out)
    return path


def edit_lines(path: Path, change: Callable[[list[dict[str, Any]]], None]) -> Path:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    change(lines)
    edited = path.with_name("edited-" + path.name)
    edited.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return edited


def _row(line: dict[str, Any]) -> RawEvent:
    return RawEvent(
        line["position"],
        line["stream_id"],
        line["version"],
        line["type"],
        line["schema_version"],
        line["data"].encode(),
        line["metadata"].encode(),
        line["recorded_at"],
        line["hash"],
        chain_version=line["chain"],
    )


def tamper_line(lines: list[dict[str, Any]]) -> None:
    lines[3]["data"] = lines[3]["data"].replace("alpha2", "evil")


def rewrite_lines(lines: list[dict[str, Any]]) -> None:
    tamper_line(lines)
    previous = GENESIS
    for line in lines[1:]:
        previous = link(previous, line["position"], link_input(_row(line)))
        line["hash"] = previous.hex()
    lines[0]["head"] = previous.hex()


FILE_ATTACKS: dict[str, tuple[Callable[[list[dict[str, Any]]], None], int]] = {
    "tamper": (tamper_line, 3),
    "drop": (lambda lines: lines.pop(4), 4),
    "drop the last": (lambda lines: lines.pop(), EVENTS),
    "reorder": (lambda lines: lines.__setitem__(slice(3, 6), [lines[5], lines[4], lines[3]]), 3),
    "rewrite": (rewrite_lines, EVENTS),
}


def both_verifiers(export: Path, *digests: Path) -> tuple[int, dict[str, Any]]:
    """`ledger verify --export` and the standalone verifier must agree."""
    args = ["verify", "--export", str(export)] + [a for d in digests for a in ("--digest", str(d))]
    code, report = ledger_json(*args)
    alone_code, alone = standalone(export, *digests)
    assert (alone_code, alone["ok"], alone["first_bad_position"]) == (
        code,
        report["ok"],
        report["first_bad_position"],
    ), (report, alone)
    assert alone["events"] == report["events"] and alone["head"] == report["head"]
    return code, report


def test_attacks_on_an_export_are_found_by_both_verifiers(log_url: str, tmp_path: Path) -> None:
    export = export_file(tmp_path, "log.jsonl", "--verifiable")
    digest_file = tmp_path / "digest.json"
    digest_file.write_text(ledger("digest")[1])
    code, report = both_verifiers(export, digest_file)
    assert code == 0 and report["events"] == EVENTS and report["kind"] == "full"
    for name, (change, position) in FILE_ATTACKS.items():
        edited = edit_lines(export, change)
        code, report = both_verifiers(edited, digest_file)
        assert code == 1 and report["first_bad_position"] == position, (name, report)
        plain_code, _ = both_verifiers(edited)
        assert plain_code == (0 if name == "rewrite" else 1), name


def test_a_verifiable_export_after_a_position(log_url: str, tmp_path: Path) -> None:
    with open_store(log_url) as store:
        at_four = next(iter(store.read_raw(3, 1))).hash
    digest_file = tmp_path / "d.json"
    digest_file.write_text(json.dumps({"position": 4, "head": at_four}))
    export = export_file(tmp_path, "tail.jsonl", "--verifiable", "--after", "4")
    code, report = both_verifiers(export, digest_file)
    assert code == 0 and report["events"] == EVENTS - 4
    early = tmp_path / "early.json"
    early.write_text(json.dumps({"position": 2, "head": at_four}))
    assert both_verifiers(export, early)[1]["first_bad_position"] == 2


def test_exports_hold_no_secret_and_no_data_key(log_url: str, tmp_path: Path) -> None:
    verifiable = export_file(tmp_path, "log.jsonl", "--verifiable").read_text()
    text = verifiable + export_file(tmp_path, "plain.jsonl").read_text()
    for tenant in TENANTS:
        assert tenant.secret not in text
        for key in (tenant.data_key, tenant.wrapped):
            assert key.hex() not in text and base64.b64encode(key).decode() not in text
    # The sealed secrets are there, as ciphertext.
    assert sum('"ct"' in json.loads(line).get("data", "") for line in verifiable.splitlines()) == 3


# -- tenant proofs


def _secret_texts(tenant: Tenant, lines: Iterator[str]) -> list[str]:
    """What would betray a tenant: its key, URL, plaintext and sealed secret."""
    sealed = [
        json.loads(json.loads(line)["data"])["sharedSecret"]["ct"]
        for line in lines
        if f'"{tenant.key}"' in json.loads(line).get("data", "")
    ]
    return [tenant.key, tenant.base_url, tenant.secret, *sealed]


def test_a_tenant_proof_shows_its_events_and_nothing_else(log_url: str, tmp_path: Path) -> None:
    full_text = export_file(tmp_path, "log.jsonl", "--verifiable").read_text()
    proof = export_file(tmp_path, "proof.jsonl", "--tenant", "client-alpha", "--proof")
    code, report = both_verifiers(proof)
    assert code == 0 and report["kind"] == "proof"
    assert report["stream_id"] == "tenant:client-alpha"
    assert report["stream_events"] == 4 and report["complete_from"] == 1
    text = proof.read_text()
    assert "client-alpha" in text and TENANTS[0].secret not in text
    for other in TENANTS[1:]:
        for secret_text in _secret_texts(other, iter(full_text.splitlines()[1:])):
            assert secret_text not in text, secret_text
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines[1:]:
        if "stream_id" not in line:
            assert set(line) == {"position", "chain", "stream_sha256", "rest_sha256", "hash"}

    # One of the tenant's events left out: the chain breaks where it was.
    alpha_third = next(i for i, line in enumerate(lines) if line.get("version") == 3)
    removed = edit_lines(proof, lambda ls: ls.pop(alpha_third))
    code, report = both_verifiers(removed)
    assert code == 1 and report["first_bad_position"] == lines[alpha_third]["position"]

    # Or shown as an opaque row (honestly hashed): the verifier sees it is the tenant's.
    def hide(ls: list[dict[str, Any]]) -> None:
        ls[alpha_third] = opaque_line(_row(ls[alpha_third]))

    code, report = both_verifiers(edit_lines(proof, hide))
    assert code == 1 and report["first_bad_position"] == lines[alpha_third]["position"]
    assert "not shown" in report["reason"]


def test_old_chain_version_rows_still_verify(
    store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A row hashed before chain version 2 (inserted as an old ledger wrote it) keeps
    verifying; new rows chain onto it; a proof says from where it is complete."""
    data, metadata = '{"from":null,"to":"7"}', '{"call_id":"legacy"}'
    stamp = "2024-01-02T03:04:05.000006Z"
    digest = row_digest(
        "tenant:old", 1, "DescriptorUpgraded", 1, stamp, data.encode(), metadata.encode()
    )
    chained = link(GENESIS, 1, digest).hex()
    db = Superuser(store_url)
    with open_store(store_url):
        pass  # migrated
    columns = (
        "position, stream_id, version, type, schema_version, data, metadata, recorded_at, hash"
    )
    if db.sqlite:
        db.run(
            f"INSERT INTO events ({columns}) VALUES (1, 'tenant:old', 1, 'DescriptorUpgraded', 1, ?, ?, ?, ?)",
            data,
            metadata,
            stamp,
            chained,
        )
    else:
        db.run(
            f"INSERT INTO events ({columns}) VALUES (1, 'tenant:old', 1, 'DescriptorUpgraded', 1, ?, ?, ?, decode(?, 'hex'))",
            data,
            metadata,
            stamp,
            chained,
        )
        db.run("UPDATE ledger_head SET position = 1, hash = decode(?, 'hex')", chained)
    build_log(store_url)
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    assert [r.chain_version for r in db.rows()] == [1] + [2] * EVENTS
    code, report = ledger_json("verify")
    assert code == 0 and report["events"] == EVENTS + 1
    export = export_file(tmp_path, "log.jsonl", "--verifiable")
    assert both_verifiers(export)[1]["ok"]
    proof = export_file(tmp_path, "proof.jsonl", "--tenant", "client-bravo", "--proof")
    code, report = both_verifiers(proof)
    assert code == 0 and report["complete_from"] == 2 and report["stream_events"] == 3
    assert json.loads(proof.read_text().splitlines()[1])["digest"] == digest.hex()
    tampered = edit_lines(export, lambda ls: ls[1].__setitem__("data", data.replace("7", "8")))
    assert both_verifiers(tampered)[1]["first_bad_position"] == 1


def test_full_line_round_trips_the_stored_bytes(log_url: str) -> None:
    with open_store(log_url) as store:
        rows = list(store.read_raw())
    assert len(rows) == EVENTS
    for row in rows:
        assert link_input(_row(full_line(row))) == link_input(row)


def _chain_rows(count: int) -> list[tuple[Any, ...]]:
    from eventstore.testing.synthetic import RandomLog, chain_rows

    rows = chain_rows(RandomLog(seed=5).events(count))
    return [
        (r.position, r.stream_id, r.version, r.type, r.schema_version, r.recorded_at, r.data,
         r.metadata, r.hash, r.chain_version)
        for r in rows
    ]  # fmt: skip


@pytest.mark.parametrize(
    "damage",
    ["none", "tamper", "drop", "swap", "old_version", "unknown_version", "checkpoint", "short"],
)
def test_verify_s_own_loop_judges_every_row_as_the_link_walk_does(damage: str) -> None:
    """verify_store's fast loop (verify_rows) hands anything unusual to verify_links: the
    reports must be the same, position, count and reason."""
    from eventstore.chain import ChainCheck, column_links, verify_links, verify_rows
    from eventstore.values import Head

    rows = _chain_rows(60)
    head = Head(rows[-1][0], rows[-1][8])
    points: dict[int, tuple[str, str]] = {}
    if damage == "tamper":
        rows[20] = (*rows[20][:6], rows[20][6] + b" ", *rows[20][7:])
    elif damage == "drop":
        del rows[30]
    elif damage == "swap":
        rows[10], rows[11] = rows[11], rows[10]
    elif damage == "old_version":
        rows[40] = (*rows[40][:9], 1)
    elif damage == "unknown_version":
        rows[5] = (*rows[5][:9], 9)
    elif damage == "checkpoint":
        points = {25: ("d.json", rows[25][8]), 50: ("e.json", "00" * 32)}
    elif damage == "short":
        rows = rows[:45]
    check = ChainCheck(stored_head=head, checkpoints=points)
    assert verify_rows(rows, check) == verify_links(column_links(rows), check)
