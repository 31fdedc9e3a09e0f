"""The `ledger` command line against every store (LEDGER_DATABASE_URL): what it prints
to a terminal, to a pipe and with --json, its help and its exit codes."""

from __future__ import annotations

import io
import json
import re
import secrets
import time
import uuid
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from app.cli import output as cli_output
from app.cli.main import cli
from app.cli.output import make_console, print_records, tsv_field
from app.sim.connect import make_install_payload
from tests.harness import RunningService

runner = CliRunner()
# Long values a table would be tempted to cut: a 36 + 1 + 64 character clientKey and a
# base URL near the limit of a DNS label.
LONG_HOST = "a-site-with-a-long-name-" + "x" * 36
TENANT_HEADER = "client_key\tbase_url\tstate\tenabled\tdescriptor_version\tlast_seen_at\tversion"




def long_key() -> str:
    return f"{uuid.uuid4()}-{secrets.token_hex(32)}"


def run(*args: str, code: int = 0) -> str:
    """Run ``ledger ARGS`` (stdout is not a terminal here) and return its stdout."""
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def tsv(output: str) -> list[dict[str, str]]:
    header, *lines = output.rstrip("\n").split("\n")
    names = header.split("\t")
    rows = [dict(zip(names, line.split("\t"), strict=True)) for line in lines]
    return rows


def test_piped_reads_are_tsv_with_a_header_and_full_values(service: RunningService) -> None:
    key = long_key()
    url = f"https://{LONG_HOST}.atlassian.net"
    service.install(make_install_payload(client_key=key, base_url=url))

    output = run("tenants")
    assert output.split("\n")[0] == TENANT_HEADER
    (row,) = tsv(output)
    assert row["client_key"] == key and row["base_url"] == url
    assert row["state"] == "installed" and row["enabled"] == "true"
    assert "…" not in output and "│" not in output and "\x1b" not in output

    (shown,) = tsv(run("show", key))
    assert shown["client_key"] == key and shown["version"] == "1"

    (event,) = tsv(run("history", key))
    assert event["type"] == "Installed" and event["position"] == "1"
    assert event["verified_by"].startswith("RS256 kid=hostsim-")
    assert event["call_id"] and event["remote_addr"] == "127.0.0.1"
    assert f"baseUrl={url}" in event["changes"] and "sharedSecret=(sealed)" in event["changes"]


def test_every_read_takes_json_in_the_admin_api_shape(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    service.install(dict(payload, baseUrl="https://renamed.atlassian.net"), descriptor_version="2")
    first = service.stream(key)[0].position

    page = json.loads(run("tenants", "--json"))
    assert page == service.admin("/admin/tenants").json()
    assert json.loads(run("show", key, "--json")) == service.admin(f"/admin/tenants/{key}").json()
    assert (
        json.loads(run("show", key, "--as-of", str(first), "--json"))["base_url"]
        == (payload["baseUrl"])
    )
    events = json.loads(run("history", key, "--json"))
    assert events == service.admin(f"/admin/tenants/{key}/events").json()
    assert [e["type"] for e in events["events"]] == [
        "Installed",
        "BaseUrlChanged",
        "DescriptorUpgraded",
    ]
    assert len(json.loads(run("history", key, "--as-of", str(first), "--json"))["events"]) == 1
    descriptors = json.loads(run("descriptors", "--json"))
    assert descriptors == service.admin("/admin/descriptors").json()
    assert descriptors["latest"] == "2" and descriptors["stragglers"] == []
    assert json.loads(run("reimports", "--json")) == {"links": []}
    assert json.loads(run("presumed-gone", "--json")) == {"tenants": [], "next": None}
    assert json.loads(run("rejections", "--json")) == service.admin("/admin/rejections").json()


def test_history_names_the_evidence_of_each_event(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    assert service.send(service.call("enabled", payload, alg="HS256")).status_code == 204
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(40))
    service.install(rotated)
    call = service.call("disabled", rotated, alg="HS256", shared_secret=rotated["sharedSecret"])
    assert service.send(call).status_code == 204

    output = run("history", key)
    rows = tsv(output)
    assert [r["type"] for r in rows] == ["Installed", "Enabled", "SecretRotated", "Disabled"]
    assert [r["verified_by"].split(" ")[0] for r in rows] == ["RS256", "HS256", "RS256", "HS256"]
    # Each HS256 call names the secret it was checked against: the one stored before it.
    assert rows[1]["verified_by"] == "HS256 shared secret of v1"
    assert rows[3]["verified_by"] == "HS256 shared secret of v3"
    assert rows[2]["changes"] == "sharedSecret=(sealed)"
    assert len({r["call_id"] for r in rows}) == 4
    for secret in (payload["sharedSecret"], rotated["sharedSecret"]):
        assert secret not in output


def test_descriptors_reimports_and_presumed_gone(service: RunningService) -> None:
    silent = service.install()  # on version 1, and never heard of again
    moved = service.install(descriptor_version="2")
    reimported = service.install(make_install_payload(base_url=moved["baseUrl"]))

    versions = tsv(run("descriptors"))
    assert [(v["version"], v["tenants"], v["latest"]) for v in versions] == [
        ("1", "2", "false"),
        ("2", "1", "true"),
    ]
    stragglers = {r["client_key"] for r in tsv(run("descriptors", "--stragglers"))}
    assert stragglers == {silent["clientKey"], reimported["clientKey"]}
    (link,) = tsv(run("reimports"))
    assert link["previous_client_key"] == moved["clientKey"]
    assert link["client_key"] == reimported["clientKey"] and link["kind"] == "reimport"

    # Presumed gone: silent since version 2 was first seen more than the grace ago.
    grace = "0.0001"  # hours: 0.36 s
    gone: list[dict[str, str]] = []
    for _ in range(50):
        gone = tsv(run("presumed-gone", "--grace-hours", grace))
        if gone:
            break
        time.sleep(0.1)
    assert {r["client_key"] for r in gone} == {silent["clientKey"]}
    assert [r["presumed"] for r in gone] == ["silent"]
    same = tsv(run("tenants", "--presumed-gone", "--grace-hours", grace))
    assert [r["client_key"] for r in same] == [r["client_key"] for r in gone]
    assert tsv(run("presumed-gone")) == []  # the default grace is 24 h


def test_rejections_filter_by_reason_time_and_client_key(service: RunningService) -> None:
    payload = service.install()
    forged = service.call(
        "installed", dict(payload, sharedSecret="attacker"), alg="HS256", shared_secret="attacker"
    )
    assert service.send(forged).status_code == 401
    stranger = make_install_payload()
    assert service.send(service.call("enabled", stranger, alg="HS256")).status_code == 204

    everything = tsv(run("rejections"))
    assert {r["reason"] for r in everything} == {"bad_signature", "unknown_tenant"}
    (bad,) = tsv(run("rejections", "--reason", "bad_signature"))
    assert bad["client_key"] == payload["clientKey"] and bad["status"] == "401"
    assert len(bad["token_sha256"]) == 64
    (unknown,) = tsv(run("rejections", "--client-key", stranger["clientKey"]))
    assert unknown["reason"] == "unknown_tenant"
    assert len(tsv(run("rejections", "--since", "1h"))) == 2
    assert tsv(run("rejections", "--since", "2999-01-01T00:00:00Z")) == []
    assert len(tsv(run("rejections", "--limit", "1"))) == 1
    by_api = service.admin("/admin/rejections", reason="unknown_tenant").json()["rejections"]
    assert [r["client_key"] for r in by_api] == [stranger["clientKey"]]
    assert service.admin("/admin/rejections", since="soon").status_code == 400


def test_exit_codes(service: RunningService) -> None:
    payload = service.install()
    run("show", "nobody", code=1)
    run("history", "nobody", code=1)
    run("show", payload["clientKey"], "--as-of", "1999-01-01T00:00:00Z", code=1)
    run("show", payload["clientKey"], "--as-of", "yesterday", code=2)
    run("rejections", "--since", "a while", code=2)
    for since in ("99999999999999999999d", "99999999d", "٣d"):  # beyond year 1; not ASCII
        run("rejections", "--since", since, code=2)
    run("tenants", "--state", "gone", code=2)
    run("tenants", "--no-such-option", code=2)
    run("rebuild", "nonsense", code=2)
    result = runner.invoke(cli, ["show", "nobody"])
    assert "no such clientKey" in result.stderr and result.stdout == ""


def test_an_unreachable_store_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/none")
    result = runner.invoke(cli, ["show", "nobody"])
    assert result.exit_code == 1 and result.stdout == ""
    assert "the store is unavailable" in result.stderr and "Traceback" not in result.stderr


def test_a_narrow_terminal_keeps_long_values_whole(
    service: RunningService, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = long_key()
    service.install(make_install_payload(client_key=key))
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=60, no_color=True)
    monkeypatch.setattr(cli_output, "_stdout", terminal)
    run("tenants")
    output = screen.getvalue()
    assert "…" not in output and "\t" not in output
    assert key in output.splitlines()[3]  # whole, on a line of its own, under its label
    assert "Client key:" in output and "client_key" not in output  # a person's words


@pytest.mark.parametrize("width", [40, 60, 80, 110, 320])
def test_terminal_tables_fit_the_width_and_keep_every_value_whole(width: int) -> None:
    record = {
        "at": "2026-12-02T16:09:47.279983Z",
        "status": 401,
        "reason": "bad_signature",
        "client_key": long_key(),
        "base_url": f"https://{LONG_HOST}.atlassian.net",
        "token_sha256": secrets.token_hex(32),
    }
    screen = io.StringIO()
    print_records(
        [record, record],
        list(record),
        console=Console(file=screen, force_terminal=True, width=width, no_color=True),
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", screen.getvalue())  # bold is allowed
    lines = text.splitlines()
    for value in (*record.values(), "2026-12-02 16:09:47Z"):
        if value != record["at"] and len(str(value)) > 8:  # shown to the second; not "401"
            assert sum(line.count(str(value)) for line in lines) == 2, (width, value)
    # A line is longer than the terminal only when it holds one word longer than it.
    assert all(len(line) <= width or len(line.split()[-1]) > width - 2 for line in lines)
    if width >= 320:  # room enough for a table
        assert "┏" in text and "Token SHA-256" in text


def test_tsv_keeps_one_record_a_line_and_colour_obeys_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tsv_field("a\tb\nc\\d") == "a\\tb\\nc\\\\d"
    assert [tsv_field(v) for v in (None, True, 3, {"a": 1})] == ["", "true", "3", '{"a":1}']
    out = io.StringIO()
    print_records([{"k": "x\ty"}], ("k",), console=Console(file=out))
    assert out.getvalue() == "k\nx\\ty\n"

    monkeypatch.setenv("NO_COLOR", "1")
    screen = io.StringIO()
    console = make_console()
    console.file = screen
    console.force_terminal = True  # type: ignore[misc]
    console.print("[red]red[/red]")
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", screen.getvalue())
    monkeypatch.delenv("NO_COLOR")
    assert not make_console().no_color


READ_COMMANDS = (
    "tenants",
    "show",
    "history",
    "descriptors",
    "reimports",
    "presumed-gone",
    "rejections",
)


def test_help_explains_every_command_and_option() -> None:
    output = run("--help")
    for command in (*READ_COMMANDS, "serve", "migrate", "rebuild", "verify", "export", "demo"):
        assert command in output
    assert "Exit codes" in output
    for command in READ_COMMANDS:
        text = run(command, "--help")
        assert "<bool>" not in text and "Examples:" in text and f"ledger {command}" in text
        block = text.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
        lines = [*block.splitlines(), ""]
        options = [i for i, line in enumerate(lines) if line.startswith("  --")]
        assert len(options) >= 2 and "--json" in text
        for i in options:
            # Words beside every option, or on the next line when its name is long.
            beside = re.split(r"\s{2,}", lines[i].strip(), maxsplit=1)
            assert len(beside) == 2 or lines[i + 1].startswith(" " * 12), lines[i]


def _commands() -> dict[str, Any]:
    import typer.main

    return dict(typer.main.get_group(cli).commands)


# Typer's type placeholders: <bool>, <str>, <int>, <list[str]>, <int range>, <a|b>…
PLACEHOLDER = re.compile(r"<[a-z][\w\[\]|, .-]*>")


def test_every_command_has_a_purpose_an_example_and_no_type_placeholders() -> None:
    commands = _commands()
    listed = run("--help")
    assert not PLACEHOLDER.search(listed)
    for name in ("rewrap", "digest", "installations", "links", "migration", "presumed-gone"):
        assert name in commands
    for name, command in commands.items():
        purpose = (command.help or "").strip().split("\n\n")[0]
        assert purpose and "\n" not in purpose, (name, purpose)  # a one-line purpose
        assert re.search(rf"^  {re.escape(name)}\s+\S", listed, re.M), name  # listed, with words
        text = run(name, "--help")
        assert not PLACEHOLDER.search(text), (name, PLACEHOLDER.findall(text))
        assert " ".join(purpose.split()[:4]) in " ".join(text.split())
        assert "Examples:" in text and f"    ledger {name}" in text, name


def test_export_is_json_lines_without_secrets(service: RunningService) -> None:
    payload = service.install()
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(40))
    service.install(rotated)
    output = run("export")
    lines = [json.loads(line) for line in output.splitlines()]
    assert [e["type"] for e in lines] == ["Installed", "SecretRotated"]
    assert all(e["data"]["sharedSecret"] == "[redacted]" for e in lines)
    for secret in (payload["sharedSecret"], rotated["sharedSecret"]):
        assert secret not in output
    assert [
        json.loads(line)["position"] for line in run("export", "--after", "1").splitlines()
    ] == [2]


def test_rebuild_and_verify(service: RunningService) -> None:
    service.install()
    verified = json.loads(run("verify", "--json"))
    assert verified["ok"] is True and verified["events"] == 1
    rebuilt = json.loads(run("rebuild", "--json"))
    assert rebuilt["events"] == 1 and rebuilt["projections"] == [
        "tenants",
        "descriptors",
        "base_urls",
        "reimports",
        "installations",
        "links",
    ]
    assert "no such" not in run("rebuild", "reimports")


def test_forget_makes_secrets_unreadable_and_the_log_still_verifies(
    service: RunningService,
) -> None:
    payload = service.install()
    assert service.send(service.call("enabled", payload, alg="HS256")).status_code == 204
    run("forget", payload["clientKey"], "--reason", "test", "--yes")
    # The shared secret can no longer be read, so HS256 calls cannot be verified.
    response = service.send(service.call("disabled", payload, alg="HS256"))
    assert response.status_code == 401
    assert json.loads(run("verify", "--json"))["ok"] is True
    assert "already forgotten" in run("forget", payload["clientKey"], "--reason", "x", "--yes")


def test_verify_exits_non_zero_on_a_broken_chain(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    import psycopg

    from eventstore import open_store
    from eventstore.events import Enabled, Metadata
    from eventstore.values import NewEvent

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
