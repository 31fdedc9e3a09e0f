"""`ledger installations`, `ledger links`, `ledger migration` against every store."""

from __future__ import annotations

import io
import json
import re
import time

import pytest
from rich.console import Console
from typer.testing import CliRunner

from app.cli import main as cli_module
from app.cli import output as cli_output
from app.cli.main import cli
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation
from eventstore.ids import installation_ari
from tests.e2e.test_forge_e2e import forge_service

runner = CliRunner()
cli_module.console.width = 200


def invoke(*args: str, code: int = 0) -> str:
    """``ledger ARGS``'s stdout (not a terminal here: the piped form)."""
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


def tsv(output: str) -> list[dict[str, str]]:
    header, *lines = output.rstrip("\n").split("\n")
    names = header.split("\t")
    return [dict(zip(names, line.split("\t"), strict=True)) for line in lines]


def test_forge_read_commands(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with forge_service(store_url) as forge:
        installation = ForgeInstallation()
        tenant = forge.service.install(
            make_install_payload(installationId=installation_ari(installation.installation_id))
        )
        assert forge.send(forge.platform.installed(installation)).status_code == 204
        lonely = ForgeInstallation()
        assert forge.send(forge.platform.pre_uninstall(lonely)).status_code == 204

        shown = json.loads(invoke("installations", "--json"))["installations"]
        assert {r["installation_id"]: r["client_key"] for r in shown} == {
            installation.installation_id: tenant["clientKey"],
            lonely.installation_id: None,
        }
        leaving = json.loads(invoke("installations", "--state", "uninstalling", "--json"))
        assert [r["installation_id"] for r in leaving["installations"]] == [lonely.installation_id]

        (link,) = json.loads(invoke("links", "--json"))["links"]
        assert (link["kind"], link["client_key"]) == ("connect", tenant["clientKey"])

        report = json.loads(invoke("migration", "--json"))
        assert report["linked"] == 1 and report["connect_only"] == []
        assert [r["installation_id"] for r in report["forge_only"]] == [lonely.installation_id]

        # Piped (the test runner is no terminal): tab-separated full values, a header first.
        (piped_link,) = tsv(invoke("links"))
        assert piped_link["kind"] == "connect" and piped_link["client_key"] == tenant["clientKey"]
        assert piped_link["installation_id"] == installation.installation_id
        assert (
            piped_link["evidence"] == f"{link['evidence']['stream']}@{link['evidence']['position']}"
        )
        assert (
            tsv(invoke("links", "--installation-id", installation_ari(lonely.installation_id)))
            == []
        )
        assert tsv(invoke("links", "--client-key", tenant["clientKey"])) == [piped_link]
        piped = tsv(invoke("installations"))
        assert [(r["installation_id"], r["client_key"], r["state"]) for r in piped] == sorted(
            [
                (installation.installation_id, tenant["clientKey"], "installed"),
                (lonely.installation_id, "", "uninstalling"),
            ]
        )
        first = tsv(invoke("installations", "--limit", "1"))
        rest = tsv(invoke("installations", "--after", first[0]["installation_id"]))
        assert first + rest == piped
        assert tsv(invoke("migration")) == [
            {
                "list": "forge_only",
                "client_key": "",
                "base_url": "",
                "installation_id": lonely.installation_id,
                "cloud_id": lonely.cloud_id,
                "state": "uninstalling",
            }
        ]
        invoke("installations", "--after", "not-an-installation", code=2)
        invoke("links", "--kind", "other", code=2)


def test_one_installation_of_a_sites_jira_and_confluence(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with forge_service(store_url) as forge:
        site = ForgeInstallation()
        assert forge.send(forge.platform.installed(site)).status_code == 204
        ari = installation_ari(site.installation_id)
        jira = forge.service.install(make_install_payload(installationId=ari))
        confluence = forge.service.install(
            make_install_payload(productType="confluence", installationId=ari)
        )
        both = [jira["clientKey"], confluence["clientKey"]]
        (shown,) = json.loads(invoke("installations", "--json"))["installations"]
        assert (shown["client_keys"], shown["client_key"]) == (both, confluence["clientKey"])
        (piped,) = tsv(invoke("installations"))
        assert json.loads(piped["client_keys"]) == both
        assert piped["client_key"] == confluence["clientKey"]
        assert [r["client_key"] for r in tsv(invoke("links"))] == both
        report = json.loads(invoke("migration", "--json"))
        assert (report["linked"], report["connect_only"], report["forge_only"]) == (2, [], [])


def test_presumed_gone_names_both_reasons(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One data path: the CLI, ``/admin/presumed-gone`` and ``/admin/tenants?presumed_gone``
    all list a tenant whose Forge installation sent pre-uninstall."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with forge_service(store_url) as forge:
        silent = forge.service.install()
        leaving = ForgeInstallation()
        tenant = forge.service.install(  # on version 2, first seen now: not silent
            make_install_payload(installationId=installation_ari(leaving.installation_id)),
            descriptor_version="2",
        )
        assert forge.send(forge.platform.installed(leaving)).status_code == 204
        assert forge.send(forge.platform.pre_uninstall(leaving)).status_code == 204
        grace = "0.0001"  # hours: 0.36 s
        rows: list[dict[str, str]] = []
        for _ in range(50):
            rows = tsv(invoke("presumed-gone", "--grace-hours", grace))
            if len(rows) == 2:
                break
            time.sleep(0.1)
        reasons = {r["client_key"]: r["presumed"] for r in rows}
        assert reasons == {silent["clientKey"]: "silent", tenant["clientKey"]: "uninstalling"}
        assert [r["client_key"] for r in rows] == sorted(reasons)
        assert {r["client_key"] for r in tsv(invoke("presumed-gone"))} == {tenant["clientKey"]}

        answer = json.loads(invoke("presumed-gone", "--json", "--grace-hours", grace))
        api = forge.service.admin("/admin/presumed-gone", grace_hours=grace).json()
        assert [(t["client_key"], t["presumed"]) for t in api["tenants"]] == [
            (t["client_key"], t["presumed"]) for t in answer["tenants"]
        ]
        page = forge.service.admin("/admin/tenants", presumed_gone="true", grace_hours=grace)
        assert [t["client_key"] for t in page.json()["tenants"]] == sorted(reasons)
        assert "presumed" not in page.json()["tenants"][0]  # tenant objects, as before
        one = json.loads(invoke("presumed-gone", "--json", "--limit", "1", "--grace-hours", grace))
        assert len(one["tenants"]) == 1 and one["next"] == one["tenants"][0]["client_key"]
        after = json.loads(
            invoke("presumed-gone", "--json", "--after", one["next"], "--grace-hours", grace)
        )
        assert [t["client_key"] for t in one["tenants"] + after["tenants"]] == sorted(reasons)


def test_terminal_tables_keep_identifiers_whole_and_obey_no_color(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    monkeypatch.setenv("NO_COLOR", "1")
    with forge_service(store_url) as forge:
        installation = ForgeInstallation()
        assert forge.send(forge.platform.installed(installation)).status_code == 204
        screen = io.StringIO()
        terminal = Console(file=screen, force_terminal=True, width=50)
        monkeypatch.setattr(cli_output, "_stdout", terminal)
        invoke("installations")
        output = screen.getvalue()
    assert "…" not in output and "\t" not in output
    assert not re.search(r"\x1b\[[0-9;]*3[0-9]m", output)  # no colour under NO_COLOR
    assert installation.installation_id in output  # whole, never folded or cut


@pytest.mark.parametrize("command", ["installations", "links", "migration"])
def test_help_has_examples_and_no_type_placeholders(command: str) -> None:
    text = invoke(command, "--help")
    assert not re.search(r"<(bool|str|int|list\[\w+\]|[\w-]+\|[\w|-]+)>", text), text
    assert "Examples:" in text and f"ledger {command} " in text and "--json" in text
