"""The `ledger` command line against every store (LEDGER_DATABASE_URL)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from app import cli as cli_module
from app.cli import cli
from tests.harness import RunningService, running_service

runner = CliRunner()
cli_module.console.width = 200  # tables are not cut to a narrow test terminal


@pytest.fixture
def service(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunningService]:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with running_service(store_url) as running:
        yield running


def invoke(*args: str) -> str:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_read_commands(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    service.install(dict(payload, baseUrl="https://renamed.atlassian.net"), descriptor_version="2")

    tenants = json.loads(invoke("tenants", "--json"))["tenants"]
    assert [t["client_key"] for t in tenants] == [key]
    assert tenants[0]["base_url"] == "https://renamed.atlassian.net"
    assert "renamed.atlassian.net" in invoke("tenants")

    shown = json.loads(invoke("show", key, "--json"))
    assert shown["descriptor_version"] == "2"
    first = service.stream(key)[0].position
    assert (
        json.loads(invoke("show", key, "--as-of", str(first), "--json"))["base_url"]
        == payload["baseUrl"]
    )

    history = json.loads(invoke("history", key, "--json"))["events"]
    assert [e["type"] for e in history] == ["Installed", "BaseUrlChanged", "DescriptorUpgraded"]
    table = invoke("history", key)
    assert "RS256" in table and "BaseUrlChanged" in table

    verified = json.loads(runner.invoke(cli, ["verify", "--json"]).output)
    assert verified["ok"] is True and verified["events"] == 3

    rebuilt = json.loads(invoke("rebuild", "--json"))
    assert rebuilt["events"] == 3 and rebuilt["projections"] == [
        "tenants",
        "descriptors",
        "base_urls",
        "reimports",
        "installations",
        "links",
    ]
    assert "no such" not in invoke("rebuild", "reimports")

    unknown = runner.invoke(cli, ["show", "nobody"])
    assert unknown.exit_code == 1
    bad = runner.invoke(cli, ["rebuild", "nonsense"])
    assert bad.exit_code == 2


def test_export_is_json_lines_without_secrets(service: RunningService) -> None:
    payload = service.install()
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(40))
    service.install(rotated)
    output = invoke("export")
    lines = [json.loads(line) for line in output.splitlines()]
    assert [e["type"] for e in lines] == ["Installed", "SecretRotated"]
    assert all(e["data"]["sharedSecret"] == "[redacted]" for e in lines)
    for secret in (payload["sharedSecret"], rotated["sharedSecret"]):
        assert secret not in output
    assert [
        json.loads(line)["position"] for line in invoke("export", "--after", "1").splitlines()
    ] == [2]


def test_forget_makes_secrets_unreadable_and_the_log_still_verifies(
    service: RunningService,
) -> None:
    payload = service.install()
    assert service.send(service.call("enabled", payload, alg="HS256")).status_code == 204
    invoke("forget", payload["clientKey"], "--yes")
    # The shared secret can no longer be read, so HS256 calls cannot be verified.
    response = service.send(service.call("disabled", payload, alg="HS256"))
    assert response.status_code == 401
    assert json.loads(runner.invoke(cli, ["verify", "--json"]).output)["ok"] is True
    assert "no data key" in invoke("forget", payload["clientKey"], "--yes")


def test_verify_exits_non_zero_on_a_broken_chain(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import psycopg

    from eventstore.events import Enabled, Metadata
    from eventstore.store import NewEvent, open_store

    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with open_store(store_url) as store:
        for i in range(3):
            store.append(f"tenant:{i}", [NewEvent(Enabled(), Metadata())], 0)
    if store_url.startswith("sqlite"):
        conn = sqlite3.connect(store_url.removeprefix("sqlite:///"))
        conn.execute("DROP TRIGGER events_no_update")
        conn.execute("UPDATE events SET stream_id = 'tenant:x' WHERE position = 2")
        conn.commit()
        conn.close()
    else:
        with psycopg.connect(store_url, autocommit=True) as pg:
            pg.execute("ALTER TABLE events DISABLE TRIGGER events_no_update_or_delete")
            pg.execute("UPDATE events SET stream_id = 'tenant:x' WHERE position = 2")
    result = runner.invoke(cli, ["verify"])
    assert result.exit_code == 1
    assert "position 2" in result.output


def test_help_explains_every_command() -> None:
    output = invoke("--help")
    for command in (
        "serve",
        "migrate",
        "tenants",
        "show",
        "history",
        "rebuild",
        "verify",
        "export",
        "forget",
        "demo",
    ):
        assert command in output


def test_demo_drives_a_throw_away_service_through_a_tenants_life() -> None:
    from rich.console import Console

    from app.demo import run_demo

    console = Console(record=True, width=200)
    run_demo(console, url=None, key_port=0)
    text = console.export_text()
    # Every genuine call accepted: 10 in the Connect story, 9 in the move to Forge.
    assert text.count("│ 204") == 10 + 9
    assert "uninstalling" in text and "reinstall" in text  # the Forge read models
    assert "401 bad_signature" in text  # the forged install refused
    assert "reimport" in text and "uninstalled" in text
    assert "acme-corp.atlassian.net" in text
