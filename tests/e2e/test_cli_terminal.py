"""`ledger` for people, on both stores: every read command rendered in an 80-column
terminal keeps every word of its data whole (no word split across lines), reads with
human headers and times to the second; lists say when there is more; errors are one
line on stderr in one voice."""

from __future__ import annotations

import io
import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from app.cli import output as cli_output
from app.cli.main import cli
from app.ingest.outcome import REFUSAL_REASONS
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation
from eventstore.ids import installation_ari
from tests.e2e.test_forge_e2e import Forge, forge_service

runner = CliRunner()
WIDTH = 80
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MICROSECONDS = re.compile(r"[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]+")


def long_key() -> str:
    return f"{uuid.uuid4()}-{secrets.token_hex(24)}"


def long_url() -> str:
    return f"https://a-site-with-a-rather-long-name-{secrets.token_hex(8)}.atlassian.net"


@pytest.fixture
def scenario(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Tenants with long keys and URLs (one reimported, one linked to Forge), a Forge-only
    installation, a rotation, an upgrade and a refused call."""
    monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
    with forge_service(store_url) as forge:
        yield _populate(forge)


def _populate(forge: Forge) -> dict[str, str]:
    service = forge.service
    linked = ForgeInstallation()
    url = long_url()
    first = make_install_payload(
        client_key=long_key(),
        base_url=url,
        installationId=installation_ari(linked.installation_id),
    )
    service.install(first)
    service.install(make_install_payload(client_key=long_key(), base_url=long_url()))  # silent
    service.install(dict(first, sharedSecret=secrets.token_urlsafe(48)), descriptor_version="2")
    second = service.install(make_install_payload(client_key=long_key(), base_url=url))
    assert forge.send(forge.platform.installed(linked)).status_code == 204
    assert forge.send(forge.platform.installed(ForgeInstallation())).status_code == 204
    forged = service.call(
        "installed", dict(first, sharedSecret="attacker"), alg="HS256", shared_secret="attacker"
    )
    assert service.send(forged).status_code == 401
    return {"key": first["clientKey"], "other": second["clientKey"]}


def on_terminal(monkeypatch: pytest.MonkeyPatch, *args: str, code: int = 0) -> str:
    """``ledger ARGS`` on an 80-column terminal (Rich forced to terminal mode)."""
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=WIDTH, highlight=False)
    with monkeypatch.context() as patch:
        patch.setattr(cli_output, "_stdout", terminal)
        result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == code, (args, result.output)
    return ANSI.sub("", screen.getvalue())


def piped(*args: str) -> list[list[str]]:
    """``ledger ARGS`` piped: the TSV's records (the header left out), fields unescaped."""
    result = runner.invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.stdout.rstrip("\n").split("\n")[1:]
    return [[field.replace("\\t", "\t") for field in line.split("\t")] for line in lines]


def broken_words(text: str, records: list[list[str]]) -> list[str]:
    """Words of the data (as a person sees them: times to the second) that the terminal
    output does not hold whole on one line."""
    lines = text.splitlines()
    missing = []
    for record in records:
        for value in record:
            for word in cli_output.shown(value).split():
                if len(word) >= 4 and not any(word in line for line in lines):
                    missing.append(word)
    return missing


def read_commands(keys: dict[str, str]) -> list[tuple[str, ...]]:
    return [
        ("tenants",),
        ("show", keys["key"]),
        ("history", keys["key"]),
        ("descriptors",),
        ("descriptors", "--stragglers"),
        ("reimports",),
        ("presumed-gone", "--grace-hours", "0"),
        ("rejections",),
        ("installations",),
        ("links",),
        ("migration",),
    ]


def test_every_read_command_keeps_every_word_whole_at_80_columns(
    scenario: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for command in read_commands(scenario):
        text = on_terminal(monkeypatch, *command)
        records = piped(*command)
        if command == ("migration",):  # piped, a column names the list; a title does here
            records = [record[1:] for record in records]
        assert records, command  # the scenario gives every read something to show
        assert broken_words(text, records) == [], command
        for line in text.splitlines():  # wider than the terminal: only a word longer
            # than the line, after at most its label (the terminal shows it on two rows)
            assert len(line) <= WIDTH or len(line) - len(line.split()[-1]) <= 24, line
        assert "…" not in text and not MICROSECONDS.search(text), command
        assert "client_key" not in text and "base_url" not in text, command  # headers read


def test_history_is_compact_and_show_is_a_record(
    scenario: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    history = on_terminal(monkeypatch, "history", scenario["key"])
    events = piped("history", scenario["key"])
    assert len(history.splitlines()) <= 7 * len(events) + 2
    shown = on_terminal(monkeypatch, "show", scenario["key"])
    assert re.search(rf"^Client key +{re.escape(scenario['key'])}$", shown, re.MULTILINE)


def test_lists_say_there_is_more_and_all_pages_through(scenario: dict[str, str]) -> None:
    result = runner.invoke(cli, ["tenants", "--limit", "1"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
    (more,) = result.stderr.splitlines()
    assert more.startswith("more: --after ")
    after = more.split()[2]
    assert after == result.stdout.splitlines()[1].split("\t")[0]
    everything = runner.invoke(cli, ["tenants", "--limit", "1", "--all"])
    assert everything.stderr == "" and len(everything.stdout.splitlines()) == 1 + 3
    assert runner.invoke(cli, ["installations", "--limit", "1"]).stderr.startswith("more: ")
    assert len(piped("installations", "--limit", "1", "--all")) == 2


def test_rejections_count_refusals_and_refuse_an_unknown_reason(
    scenario: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = on_terminal(monkeypatch, "rejections")
    assert "1 refused call(s) in 1 row(s)" in text and "Count: 1" in text
    result = runner.invoke(cli, ["rejections", "--reason", "nosuchreason"])
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: --reason nosuchreason: no such reason")
    quiet = runner.invoke(cli, ["rejections", "--reason", "token_expired"])
    assert quiet.exit_code == 0 and quiet.stderr == ""  # known, none yet: an empty list


@pytest.mark.parametrize(
    ("args", "code", "start"),
    [
        (("show", "KEY", "--as-of", "99999"), 2, "error: --as-of 99999 is past the log's head"),
        (("history", "KEY", "--as-of", "2999-01-01T00:00:00Z"), 2, "error: --as-of 2999"),
        (("rebuild", "nonsense"), 2, "error: unknown projection 'nonsense'"),
        (("tenants", "--state", "gone"), 2, "error: invalid value for '--state': 'gone' is"),
        (("nosuch",), 2, "error: no such command 'nosuch'"),
    ],
)
def test_errors_are_one_line_on_stderr_in_one_voice(
    scenario: dict[str, str], args: tuple[str, ...], code: int, start: str
) -> None:
    args = tuple(scenario["key"] if a == "KEY" else a for a in args)
    result = runner.invoke(cli, list(args))
    assert result.exit_code == code and result.stdout == "", result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(start) and "Value error" not in line, line


def test_help_lists_choices_whole_summaries_and_no_placeholders() -> None:
    summary = runner.invoke(cli, ["--help"]).stdout
    assert "..." not in summary.split("Commands:")[1] and "…" not in summary
    assert "--batch-size N " in runner.invoke(cli, ["rewrap", "--help"]).stdout
    assert "[installed|uninstalled]" in runner.invoke(cli, ["tenants", "--help"]).stdout
    rejections = " ".join(runner.invoke(cli, ["rejections", "--help"]).stdout.split())
    assert all(reason in rejections.replace("- ", "-") for reason in REFUSAL_REASONS)


def test_help_never_breaks_a_word_at_a_hyphen() -> None:
    commands = re.findall(r"^  ([a-z-]+)  ", runner.invoke(cli, ["--help"]).stdout, re.MULTILINE)
    assert len(commands) >= 15
    for command in commands:
        text = runner.invoke(cli, [command, "--help"]).stdout
        assert not re.search(r"[a-z]-\n", text), (command, text)


def test_every_refusal_code_of_the_ingestors_is_a_known_reason() -> None:
    sources = "\n".join(p.read_text() for p in Path("app/ingest").rglob("*.py"))
    made = set(re.findall(r"(?:Refusal\(\s*\d+,|TokenError\(|code=)\s*\"([a-z_]+)\"", sources))
    assert made and made <= REFUSAL_REASONS, made - REFUSAL_REASONS
