"""The backup and restore procedure of the README ("Backup and restore"), run as written.

On each store: back up while the service takes calls (SQLite: `ledger backup`;
PostgreSQL: `pg_dump`), take more calls, save `ledger digest` elsewhere (off the
machine), restore the older copy, and `ledger verify --digest` must fail naming the
first acknowledged event the copy lacks. Verified against a backup taken after the
digest, the same check passes. `ledger backup`'s refusals are checked too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from eventstore import open_store
from tests.conftest import IN_CI, PostgresDatabases
from tests.harness import running_service

runner = CliRunner()


def _ledger(url: str, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(cli, list(args), env={"LEDGER_DATABASE_URL": url})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        problem = f"{name} is not installed (PostgreSQL's client tools)"
        if IN_CI:
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return found


def _back_up(url: str, file: Path) -> None:
    """The README's backup step for the store at ``url``."""
    if url.startswith("sqlite"):
        code, out, err = _ledger(url, "backup", str(file))
        assert code == 0, err
        assert json.loads(out)["backup"] == str(file)
    else:
        subprocess.run([_pg_tool("pg_dump"), "--format=custom", f"--file={file}", url], check=True)


def _restore(url: str, file: Path, databases: PostgresDatabases | None) -> str:
    """The README's restore step: the store's URL afterwards."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            stale.unlink(missing_ok=True)  # the service is stopped: its WAL goes too
        shutil.copyfile(file, path)
        return url
    assert databases is not None
    fresh = databases.create()  # restore into a new, empty database
    subprocess.run(
        [_pg_tool("pg_restore"), "--no-owner", "--exit-on-error", f"--dbname={fresh}", str(file)],
        check=True,
    )
    return fresh


def test_a_restored_backup_names_the_acknowledged_events_it_lost(
    store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    databases = (
        None if store_url.startswith("sqlite") else request.getfixturevalue("postgres_databases")
    )
    older, newer = tmp_path / "older.backup", tmp_path / "newer.backup"
    digests = tmp_path / "elsewhere" / "digests.jsonl"  # off the machine, in real life
    digests.parent.mkdir()
    with running_service(store_url) as service:
        for _ in range(3):
            service.install()
        _back_up(store_url, older)  # while the service runs
        backed_up = service.store.head().position
        for _ in range(2):
            service.install()  # acknowledged (204) after the backup
        code, out, err = _ledger(store_url, "digest")
        assert code == 0, err
        digests.write_text(out)
        _back_up(store_url, newer)
    assert json.loads(out)["position"] > backed_up

    restored = _restore(store_url, older, databases)
    code, out, _ = _ledger(restored, "verify", "--digest", str(digests))
    report = json.loads(out)
    assert code == 1, out
    assert report["ok"] is False
    assert report["first_bad_position"] == backed_up + 1, report
    assert f"from position {backed_up + 1} on are missing" in report["reason"], report

    restored = _restore(store_url, newer, databases)  # taken after the digest: nothing lost
    code, out, _ = _ledger(restored, "verify", "--digest", str(digests))
    assert (code, json.loads(out)["ok"]) == (0, True), out


def test_backup_refuses_to_overwrite_and_points_postgresql_to_pg_dump(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    target = tmp_path / "copy.db"
    code, _, err = _ledger(url, "backup", str(target))
    assert code == 1 and "no ledger store at" in err  # a mistyped store is not backed up as empty
    assert not Path(url.removeprefix("sqlite:///")).exists()

    open_store(url).close()
    target.write_text("an older backup")
    code, _, err = _ledger(url, "backup", str(target))
    assert code == 2 and "--force" in err
    assert target.read_text() == "an older backup"
    code, out, err = _ledger(url, "backup", str(target), "--force")
    assert code == 0, err
    assert json.loads(out)["position"] == 0
    assert os.stat(target).st_mode & 0o077 == 0  # the copy is the owner's only
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]

    code, _, err = _ledger("postgresql://auditor@127.0.0.1/ledger", "backup", str(target))
    assert code == 2 and "pg_dump" in err


def test_a_backup_is_one_consistent_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_service(url) as service:
        service.install()
        code, _, err = _ledger(url, "backup", str(tmp_path / "copy.db"))
        assert code == 0, err
        source_head = service.store.head()
    assert not (tmp_path / "copy.db-wal").exists()
    with open_store(f"sqlite:///{tmp_path / 'copy.db'}", migrate=False) as copy:
        assert copy.head() == source_head
        assert copy.verify().ok
