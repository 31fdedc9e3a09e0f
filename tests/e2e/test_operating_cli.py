"""SPEC §7 and §12, the CLI as an operator meets it: reads never create or migrate a
store, an auditor's SELECT-only role (made with the README's own GRANTs) runs every
read, and every command says every error in one line, never a traceback."""

from __future__ import annotations

import base64
import os
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from tests.conftest import PostgresDatabases
from tests.harness import running_service

runner = CliRunner()
README = Path(__file__).resolve().parents[2] / "README.md"
TRACEBACK_MARKS = ("Traceback", "╭─", 'File "')
MASTER_KEY = base64.b64encode(os.urandom(32)).decode()
# What each command needs to get as far as its store (and no further than an error).
ARGUMENTS = {
    "show": ["nobody"],
    "history": ["nobody"],
    "forget": ["nobody", "--reason", "test", "--yes"],
    "demo": ["--url", "http://127.0.0.1:1"],
    "backup": ["backup-copy.db"],
    "webhooks": [],
    "licenses": ["check"],
}
# Commands that create the store they are pointed at, by design.
CREATORS = {"migrate", "serve", "demo"}


def commands() -> list[str]:
    """Every command ``ledger --help`` lists."""
    text = runner.invoke(cli, ["--help"]).stdout
    listed = text.split("Commands:", 1)[1]
    names = re.findall(r"^  ([a-z][a-z-]*)\s", listed, flags=re.MULTILINE)
    assert {"tenants", "verify", "digest", "export", "serve", "migrate"} <= set(names)
    return names


def run(args: list[str], env: dict[str, str | None]) -> tuple[int, str, str]:
    result = runner.invoke(cli, args, env=env)
    # Only exits: an exception that left a command is a traceback for a person.
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    for mark in TRACEBACK_MARKS:
        assert mark not in result.stdout + result.stderr, (args, result.stderr)
    return result.exit_code, result.stdout, result.stderr


def one_line(args: list[str], env: dict[str, str | None], code: int, *words: str) -> str:
    """Run; the command must fail with exit ``code`` and one line on stderr holding ``words``."""
    exit_code, _, err = run(args, env)
    lines = err.strip().splitlines()
    assert exit_code == code and len(lines) == 1, (args, exit_code, err)
    for word in words:
        assert word in lines[0], (args, err)
    return lines[0]


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding no store (the embedded default's ./var is relative)."""
    monkeypatch.chdir(tmp_path)
    for name in ("LEDGER_DATABASE_URL", "LEDGER_MASTER_KEY", "LEDGER_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_reads_refuse_a_missing_sqlite_store_and_create_nothing(elsewhere: Path) -> None:
    for name in commands():
        if name in CREATORS:
            continue
        line = one_line([name, *ARGUMENTS.get(name, [])], {}, 1, "no ledger store at")
        assert str(elsewhere / "var" / "ledger.db") in line and "try again" not in line
    one_line(["migrate", "--status"], {}, 1, "no ledger store at")
    assert list(elsewhere.iterdir()) == []  # not even ./var


def test_a_store_without_the_schema_is_refused_not_migrated(elsewhere: Path) -> None:
    (elsewhere / "empty.db").touch()
    env: dict[str, str | None] = {"LEDGER_DATABASE_URL": "sqlite:///empty.db"}
    one_line(["tenants"], env, 1, "holds no ledger schema", "ledger migrate")
    one_line(["verify"], env, 1, "holds no ledger schema")
    with sqlite3.connect(elsewhere / "empty.db") as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)


def test_an_older_schema_is_refused_with_run_ledger_migrate(elsewhere: Path) -> None:
    env: dict[str, str | None] = {"LEDGER_DATABASE_URL": "sqlite:///var/ledger.db"}
    assert run(["migrate"], env)[0] == 0
    with sqlite3.connect(elsewhere / "var" / "ledger.db") as conn:
        latest = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (latest,))
    one_line(["digest"], env, 1, f"at step {latest - 1}", "run `ledger migrate`")
    code, out, _ = run(["migrate", "--status"], env)
    assert code == 0 and f"{latest}\tpending\t\n" in out and "1\tapplied\t" in out


def test_every_command_says_every_error_in_one_line(
    elsewhere: Path, postgres_databases: PostgresDatabases
) -> None:
    missing = re.sub(
        r"/[^/]*$", f"/ledger_missing_{uuid.uuid4().hex[:8]}", postgres_databases.create()
    )
    bad_settings: list[tuple[dict[str, str | None], str]] = [
        ({"LEDGER_DATABASE_URL": "mysql://ledger@db/ledger"}, "LEDGER_DATABASE_URL"),
        ({"LEDGER_MASTER_KEY": "not base64!"}, "LEDGER_MASTER_KEY"),
        ({"LEDGER_MASTER_KEY": base64.b64encode(os.urandom(16)).decode()}, "LEDGER_MASTER_KEY"),
    ]
    for name in commands():
        args = [name, *ARGUMENTS.get(name, [])]
        one_line([name, "--no-such-option"], {}, 2, "--no-such-option", f"ledger {name} --help")
        if name == "demo":
            continue  # its own temporary store and settings: nothing of the operator's to read
        for env, setting in bad_settings:
            one_line(args, env, 2, setting)
        if name == "backup":
            continue  # SQLite only: on PostgreSQL it says to use pg_dump (exit 2)
        db = {"LEDGER_DATABASE_URL": missing, "LEDGER_MASTER_KEY": MASTER_KEY}
        line = one_line(args, db, 1, "does not exist")
        assert "try again" not in line
        down = {"LEDGER_DATABASE_URL": "postgresql://ledger:pw@127.0.0.1:1/ledger"}
        down["LEDGER_MASTER_KEY"] = MASTER_KEY
        line = one_line(args, down, 1, "did not answer", "LEDGER_DATABASE_URL")
        assert "pw" not in line  # never a password


def test_no_master_key_on_postgresql_stops_serve_before_anything_is_created(
    elsewhere: Path, postgres_databases: PostgresDatabases
) -> None:
    url = postgres_databases.create()
    one_line(["serve"], {"LEDGER_DATABASE_URL": url}, 2, "LEDGER_MASTER_KEY must be set")
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT to_regclass('schema_migrations')").fetchone()
    assert found == (None,)


# -- roles: the README's GRANTs, run as they are written


def readme_sql(marker: str) -> list[str]:
    text = README.read_text()
    block = text.split(f"<!-- {marker}", 1)[1].split("```sql", 1)[1].split("```", 1)[0]
    without_comments = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    return [s.strip() for s in without_comments.split(";") if s.strip()]


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port or 5432}").geturl()


@pytest.fixture
def roles(postgres_databases: PostgresDatabases) -> Iterator[tuple[str, dict[str, str]]]:
    """A database set up as the README says, with this test's own role names (roles
    are the cluster's): {"migrate": url, "serve": url, "auditor": url}."""
    url = postgres_databases.create()
    suffix = uuid.uuid4().hex[:8]
    names = {job: f"ledger_{job}_{suffix}" for job in ("migrate", "serve", "auditor")}

    def ours(statement: str) -> str:
        for job, name in names.items():
            statement = re.sub(rf"\bledger_{job}\b", name, statement)
        return statement

    cluster = readme_sql("roles-cluster")
    assert any(s.startswith("CREATE DATABASE") for s in cluster)
    with psycopg.connect(url, autocommit=True) as admin:
        for statement in cluster:
            if not statement.startswith("CREATE DATABASE"):  # the fixture made ours
                admin.execute(ours(statement))
        try:
            for statement in readme_sql("roles-database"):
                admin.execute(ours(statement))
            yield url, {job: as_role(url, name) for job, name in names.items()}
        finally:
            for name in names.values():
                admin.execute(f'DROP OWNED BY "{name}"')
                admin.execute(f'DROP ROLE "{name}"')


def test_an_auditor_runs_every_read_with_select_only(
    roles: tuple[str, dict[str, str]], elsewhere: Path
) -> None:
    _, url = roles
    migrate = {"LEDGER_DATABASE_URL": url["migrate"]}
    auditor: dict[str, str | None] = {"LEDGER_DATABASE_URL": url["auditor"]}
    # Before `ledger migrate`, the auditor is told to run it.
    one_line(["tenants"], auditor, 1, "holds no ledger schema", "ledger migrate")
    assert run(["migrate"], migrate)[0] == 0
    one_line(["migrate"], auditor, 1, "may not do this")
    with running_service(url["migrate"]) as service:
        payload = service.install()
    key = payload["clientKey"]
    # Folded by a role that may write; the auditor reads what it folded.
    assert key in run(["tenants"], migrate)[1]
    reads = [
        ["tenants"], ["show", key], ["history", key], ["descriptors"], ["reimports"],
        ["presumed-gone"], ["rejections"], ["installations"], ["links"], ["migration"],
        ["verify"], ["digest"], ["export"], ["export", "--verifiable"],
        ["export", "--tenant", key, "--proof"], ["migrate", "--status"], ["webhooks"], ["erasure-due"],
    ]  # fmt: skip
    listed = {name for name in commands() if name not in {"serve", "demo"}}
    # backup copies an SQLite file (on PostgreSQL: pg_dump); the others write.
    assert listed - {r[0] for r in reads} == {"rebuild", "forget", "rewrap", "backup", "licenses"}
    for args in reads:
        code, _, err = run(args, auditor)
        assert code == 0, (args, err)
    assert key in run(["tenants"], auditor)[1]
    # What writes is refused, in one line, and changes nothing.
    one_line(["rebuild"], auditor, 1, "may not do this")
    one_line(["forget", key, "--reason", "x", "--yes"], auditor, 1, "may not do this")
    assert run(["verify"], auditor)[0] == 0
    # A log the read models have not caught up with: the auditor folds nothing, and says so.
    with running_service(url["migrate"], run_projections=False) as service:
        later = service.install()["clientKey"]
    code, out, err = run(["tenants"], auditor)
    assert code == 0 and later not in out and "1 events behind the log" in err


def test_the_serve_role_runs_the_service_without_ddl(
    roles: tuple[str, dict[str, str]], elsewhere: Path
) -> None:
    _, url = roles
    assert run(["migrate"], {"LEDGER_DATABASE_URL": url["migrate"]})[0] == 0
    from app.bootstrap import service_store
    from app.settings import Settings
    from projections.backends import storage_for

    settings = Settings(database_url=url["serve"], master_key=MASTER_KEY, migrate_on_start=False)
    with service_store(settings) as store:
        storage_for(store).ensure_ready()  # nothing to do: no DDL attempted
        assert store.schema_status().pending == ()


def test_the_version_is_the_package_metadata_and_the_changelog_has_it() -> None:
    import tomllib
    from importlib.metadata import version

    code, out, _ = run(["--version"], {})
    assert code == 0 and out == f"ledger {version('tenant-ledger')}\n"
    root = README.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]
    changelog = (root / "CHANGELOG.md").read_text()
    assert f"## [{declared}] - " in changelog and "## [Unreleased]" in changelog
