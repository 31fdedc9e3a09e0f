"""`ledger installations`, `ledger links`, `ledger migration` against every store."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from app import cli as cli_module
from app.cli import cli
from app.hostsim import make_install_payload
from app.hostsim_forge import ForgeInstallation
from projections.forge_ids import installation_ari
from tests.test_forge_e2e import forge_service

runner = CliRunner()
cli_module.console.width = 200


def invoke(*args: str) -> str:
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


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
        lines = invoke("links").splitlines()
        assert lines[0].split("\t")[:3] == ["kind", "client_key", "installation_id"]
        assert lines[1].split("\t")[:3] == [
            "connect",
            tenant["clientKey"],
            installation.installation_id,
        ]
        assert installation.installation_id in invoke("installations")
        assert lonely.installation_id in invoke("migration")
