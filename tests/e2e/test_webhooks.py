"""Webhooks (SPEC §11), the parts with no ledger around them: the settings' rules,
messages built from plain events and facts, and the HTTP edge against real servers."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook

from app.outbound.config import new_secret, secret_key, url_label
from app.outbound.messages import Facts, message_type, messages_for
from app.outbound.sender import Sender
from app.settings import Settings
from app.sim.server import BackgroundServer, QuietHandler
from eventstore.events import Metadata, Uninstalled
from eventstore.values import RecordedEvent


def _settings(**values: str) -> Settings:
    return Settings(database_url="sqlite:///unused.db", **values)


@pytest.mark.parametrize(
    ("urls", "named"),
    [
        ("ftp://example.com/hook", "LEDGER_WEBHOOK_URLS (URL 0) must be https://"),
        ("http://app.example.com/hook", "http:// is allowed only for LEDGER_DEV_HOSTS"),
        ("https://a.example.com/h,https://a.example.com/h", "names one URL twice"),
        ("https://a.example.com/h#x", "must not carry a #fragment"),
    ],
)
def test_a_bad_webhook_url_names_the_setting(urls: str, named: str) -> None:
    with pytest.raises(ValidationError) as raised:
        _settings(webhook_urls=urls, webhook_secret=new_secret())
    assert named in str(raised.value)


def test_the_secret_is_required_and_must_be_a_whsec() -> None:
    with pytest.raises(ValidationError, match="LEDGER_WEBHOOK_SECRET is required"):
        _settings(webhook_urls="https://app.example.com/hook")
    with pytest.raises(ValidationError, match="LEDGER_WEBHOOK_SECRET must be whsec_"):
        _settings(webhook_urls="https://app.example.com/hook", webhook_secret="hunter2")
    short = "whsec_" + base64.b64encode(b"x" * 8).decode()
    assert secret_key(short) is None
    fine = _settings(webhook_urls="http://127.0.0.1:9/h, https://b.example.com/h", webhook_secret=new_secret())
    assert fine.webhook_url_list == ("http://127.0.0.1:9/h", "https://b.example.com/h")


def test_a_url_label_never_shows_credentials() -> None:
    label = url_label("https://user:pa55@app.example.com:8443/hooks?token=abc#f")
    assert label == "https://app.example.com:8443/hooks?…"


def _event(position: int, event_type: str = "Uninstalled") -> RecordedEvent:
    return RecordedEvent(
        position, "tenant:k1", 3, event_type, 1, Uninstalled(),
        Metadata(call_id="c-1"), datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC), "00",
    )


def test_one_event_and_its_facts_make_messages_in_order() -> None:
    facts = Facts(
        subject={"client_key": "k1", "state": "uninstalled"},
        reimport={"client_key": "k1", "kind": "reimport"},
        links=[{"kind": "connect"}],
    )
    found = messages_for(_event(42), {"position": 42, "type": "Uninstalled"}, facts)
    assert [(m.id, m.type) for m in found] == [
        ("evt_42", "tenant.uninstalled"),
        ("evt_42_1", "tenant.reimport_detected"),
        ("evt_42_2", "installation.linked"),
    ]
    body = json.loads(found[0].body)
    assert set(body) == {"type", "timestamp", "data"}
    assert body["timestamp"] == "2026-01-02T03:04:05.600000Z"
    assert body["data"] == {
        "position": 42, "stream_id": "tenant:k1", "version": 3, "call_id": "c-1",
        "event": {"position": 42, "type": "Uninstalled"},
        "tenant": {"client_key": "k1", "state": "uninstalled"},
    }
    assert json.loads(found[1].body)["data"]["link"] == {"client_key": "k1", "kind": "reimport"}


def test_every_type_has_a_wire_name() -> None:
    assert message_type("ForgeUninstalling", "installation:x") == "installation.uninstalling"
    assert message_type("SiteRefused", "tenant:x") == "tenant.site_refused"
    assert message_type("SomethingNew", "tenant:x") == "tenant.something_new"


class _Handler(QuietHandler):
    def do_POST(self) -> None:
        owner = self.server.owner
        length = int(self.headers.get("Content-Length", "0"))
        owner.seen.append((dict(self.headers), self.rfile.read(length)))
        if owner.mode == "redirect":
            self.send_response(307)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif owner.mode == "slow":
            owner._wake.wait(5)
            self._answer(204, b"", "text/plain")
        elif owner.mode == "huge":
            self._answer(200, b"x" * (4 * 1024 * 1024), "text/plain")
        else:
            self._answer(204, b"", "text/plain")


class _Target(BackgroundServer):
    handler = _Handler

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.seen: list[tuple[dict[str, str], bytes]] = []

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"


def test_the_sender_signs_as_standard_webhooks_and_counts_only_a_timely_2xx() -> None:
    secret = new_secret()
    message = messages_for(_event(7), {"position": 7}, Facts())[0]
    with _Target("ok") as target:
        assert Sender(target.url, secret).send(message).ok
        headers, body = target.seen[0]
        assert Webhook(secret).verify(body, headers)["type"] == "tenant.uninstalled"
        assert headers["webhook-id"] == "evt_7"
    with _Target("redirect") as target:
        attempt = Sender(target.url, secret).send(message)
        assert (attempt.ok, attempt.error, len(target.seen)) == (False, "HTTP 307", 1)
    with _Target("huge") as target:
        assert Sender(target.url, secret).send(message).ok  # read no more than needed
    with _Target("slow") as target:
        attempt = Sender(target.url, secret, timeout=0.3).send(message)
        assert (attempt.ok, attempt.error) == (False, "timed out")


def test_ledger_webhooks_secret_prints_a_new_whsec(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    printed = [CliRunner().invoke(cli, ["webhooks", "secret"]) for _ in range(2)]
    assert all(p.exit_code == 0 for p in printed)
    secrets_ = [p.output.strip() for p in printed]
    assert secrets_[0] != secrets_[1]
    assert all(secret_key(s) is not None and len(secret_key(s) or b"") == 32 for s in secrets_)


def test_a_bad_webhook_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    from typer.testing import CliRunner

    from app.cli.main import cli

    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{tmp_path}/ledger.db")
    monkeypatch.setenv("LEDGER_WEBHOOK_URLS", "http://user:pw@app.example.com/hook")
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", new_secret())
    result = CliRunner().invoke(cli, ["webhooks"])
    assert result.exit_code == 2
    assert "LEDGER_WEBHOOK_URLS" in result.output and "Traceback" not in result.output
    assert "pw" not in result.output
    monkeypatch.setenv("LEDGER_WEBHOOK_URLS", "https://app.example.com/hook")
    other = CliRunner().invoke(cli, ["webhooks", "replay", "https://other.example.com/", "--from", "1"])
    assert other.exit_code == 2 and "not one of LEDGER_WEBHOOK_URLS" in other.output


def test_serve_with_a_bad_webhook_url_stops_with_one_line(tmp_path: object) -> None:
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "from app.cli.main import main; main()", "serve"],
        env={
            **os.environ,
            "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
            "LEDGER_WEBHOOK_URLS": "https://app.example.com/hook",
            "LEDGER_WEBHOOK_SECRET": "whsec_not-base64!",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "LEDGER_WEBHOOK_SECRET" in lines[0], done.stderr
    assert "not-base64" not in done.stderr
