"""SPEC §12 over real HTTP: trusted proxies, failed authentication (logged, counted,
slowed per address), the console's front door, and `ledger serve`'s start-up line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli.main import cli
from app.cli.startup import startup_line
from app.http.auth_failures import FailureLimiter
from app.http.proxies import forwarded_client
from app.settings import Settings
from eventstore.events import stream_id_for
from tests.harness import ADMIN_TOKEN, RunningService, running_service

CALLER = "203.0.113.7"  # what the proxy says the caller's address is
FORWARDED = {"X-Forwarded-For": f"198.51.100.1, {CALLER}", "X-Forwarded-Proto": "https"}


def _install(service: RunningService, headers: dict[str, str]) -> str:
    payload = service.call("installed", _payload())
    response = service.client.post(
        payload.url_path_with_query, content=payload.body, headers={**payload.headers, **headers}
    )
    assert response.status_code == 204, response.text
    return json.loads(payload.body)["clientKey"]


def _payload() -> dict[str, Any]:
    from app.sim.connect import make_install_payload

    return make_install_payload()


def _refused(service: RunningService, headers: dict[str, str]) -> dict[str, Any]:
    """A lifecycle call with a bad signature; the rejection log's newest row."""
    call = service.call("installed", _payload())
    bad = {**call.headers, "Authorization": "JWT not.a.token", **headers}
    assert (
        service.client.post(call.url_path_with_query, content=call.body, headers=bad).status_code
        == 401
    )
    rows: list[dict[str, Any]] = service.admin("/admin/rejections").json()["rejections"]
    return rows[0]


def _login_cookie(service: RunningService, headers: dict[str, str]) -> str:
    response = service.client.post(
        "/console/login", data={"token": ADMIN_TOKEN}, headers=headers, follow_redirects=False
    )
    assert response.status_code == 303
    return response.headers["set-cookie"]


@pytest.mark.parametrize("trusted", [True, False], ids=["trusted", "untrusted"])
def test_forwarded_headers_count_only_from_a_trusted_proxy(store_url: str, trusted: bool) -> None:
    # The test talks to the service from 127.0.0.1: trusted, or not among the proxies.
    proxies = "127.0.0.1,198.51.100.0/24" if trusted else "10.0.0.0/8"
    with running_service(store_url, trusted_proxies=proxies) as service:
        key = _install(service, FORWARDED)
        (event,) = service.store.read_stream(stream_id_for(key))
        rejection = _refused(service, FORWARDED)
        cookie = _login_cookie(service, FORWARDED)
    expected = CALLER if trusted else "127.0.0.1"
    assert event.metadata.remote_addr == expected
    assert rejection["remote_addr"] == expected
    assert ("secure" in cookie.lower().split("; ")) is trusted


def test_forwarded_for_is_walked_from_the_nearest_hop() -> None:
    from ipaddress import ip_network

    proxies = (ip_network("10.0.0.0/8"),)
    # The caller wrote the leftmost entry; the proxies appended the rest.
    assert forwarded_client(["6.6.6.6, 203.0.113.7, 10.0.0.2"], proxies) == CALLER
    assert forwarded_client(["6.6.6.6", "203.0.113.7"], proxies) == CALLER
    assert forwarded_client(["10.0.0.3, 10.0.0.2"], proxies) == "10.0.0.3"
    assert forwarded_client(["not-an-address"], proxies) is None
    assert forwarded_client([], proxies) is None


def test_failed_authentication_is_logged_counted_and_slowed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    wrong = "wrong-token-0123456789"
    with running_service(url, auth_failures_per_minute=3, trusted_proxies="127.0.0.1") as service:
        answers = [
            service.client.get("/admin/tenants", headers={"Authorization": f"Bearer {wrong}"})
            for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [401, 401, 401, 429]
        assert int(answers[-1].headers["Retry-After"]) >= 1
        assert service.admin("/admin/tenants").status_code == 200  # the right token is not slowed
        # Another address (through the trusted proxy) has its own count.
        other = {"Authorization": f"Bearer {wrong}", "X-Forwarded-For": CALLER}
        assert service.client.get("/admin/tenants", headers=other).status_code == 401
        login = service.client.post("/console/login", data={"token": wrong})
        assert login.status_code == 429 and "Too many failed logins" in login.text
        metrics = service.client.get("/metrics").text
        logs = service.logs.getvalue()
    assert 'ledger_auth_failures_total{credential="admin_token"} 5.0' in metrics
    assert 'ledger_auth_failures_total{credential="console_login"} 1.0' in metrics
    lines = [json.loads(line) for line in logs.splitlines() if "failed authentication" in line]
    assert len(lines) == 6 and all(line["level"] == "warning" for line in lines)
    assert {(line["remote_addr"], line["path"], line["credential"]) for line in lines} == {
        ("127.0.0.1", "/admin/tenants", "admin_token"),
        (CALLER, "/admin/tenants", "admin_token"),
        ("127.0.0.1", "/console/login", "console_login"),
    }
    assert wrong not in logs


def test_the_limiter_forgets_after_its_window_and_stays_bounded() -> None:
    now = [0.0]
    limiter = FailureLimiter(2, window_seconds=60, max_addresses=100, clock=lambda: now[0])
    assert [limiter.record("a") for _ in range(3)] == [None, None, 60]
    now[0] = 59.5
    assert limiter.record("a") == 1
    now[0] = 60.0
    assert limiter.record("a") is None  # a new window
    for n in range(10_000):  # a flood of addresses
        limiter.record(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(limiter) == 100


def test_the_login_page_says_closed_before_anyone_types(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with running_service(url, admin_token=None) as service:
        page = service.client.get("/console/login")
        front = service.client.get("/", follow_redirects=False)
        followed = service.client.get("/", follow_redirects=True)
    assert page.status_code == 200 and "The console is closed" in page.text
    assert front.status_code in (302, 303, 307) and front.headers["location"] == "/console"
    assert followed.url.path.startswith("/console")


def test_the_start_up_line_names_what_is_open_and_never_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LEDGER_SERVICE_TOKENS", raising=False)
    monkeypatch.setenv("LEDGER_WEBHOOK_URLS", "https://app.example/hooks")
    monkeypatch.setenv("LEDGER_WEBHOOK_SECRET", "whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3")
    closed = Settings(database_url="postgresql://ledger:s3cret@db.internal:5433/ledger")
    line = startup_line(closed, "0.0.0.0", 8000)  # noqa: S104  (a host shown, nothing bound)
    assert "http://0.0.0.0:8000" in line and "postgresql://db.internal:5433/ledger" in line
    assert "s3cret" not in line and "ledger:" not in line.split("store", 1)[1]
    assert "admin API and console closed" in line and "Forge not configured" in line
    assert "service API not configured" in line and "webhooks configured" in line
    opened = Settings(
        admin_token="t" * 32,
        forge_app_id="ari:cloud:ecosystem::app/" + "0" * 8 + "-0000-4000-8000-" + "0" * 12,
    )
    line = startup_line(opened, "127.0.0.1", 8000)
    assert "admin API and console open" in line and "Forge configured" in line
    assert "\n" not in line


def test_serve_prints_its_line_and_a_wrong_setting_stops_it(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "LEDGER_TRUSTED_PROXIES": "10.0.0.0/33",
    }
    program = "from app.cli.main import main; main()"
    wrong = subprocess.run(
        [sys.executable, "-c", program, "serve", "--port", "1"],
        env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
    assert "LEDGER_TRUSTED_PROXIES" in wrong.stderr and "Traceback" not in wrong.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_migrate_on_start_false_refuses_an_older_schema(tmp_path: Path) -> None:
    import sqlite3

    from app.bootstrap import service_store
    from eventstore import open_store
    from eventstore.errors import SchemaMismatch

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    open_store(url).close()
    with sqlite3.connect(tmp_path / "ledger.db") as conn:
        conn.execute(
            "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM schema_migrations)"
        )
    with pytest.raises(SchemaMismatch, match="run `ledger migrate`"):
        service_store(Settings(database_url=url, migrate_on_start=False))
    result = CliRunner().invoke(
        cli, ["serve"], env={"LEDGER_DATABASE_URL": url, "LEDGER_MIGRATE_ON_START": "false"}
    )
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "run `ledger migrate`" in result.stderr


def test_serve_prints_one_start_up_line(tmp_path: Path) -> None:
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        **os.environ,
        "LEDGER_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.db'}",
        "LEDGER_RUN_PROJECTIONS": "false",
    }
    env.pop("LEDGER_ADMIN_TOKEN", None)
    program = "from app.cli.main import main; main()"
    serve = subprocess.Popen(
        [sys.executable, "-c", program, "serve", "--port", str(port)],
        env=env, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        assert serve.stderr is not None
        line = serve.stderr.readline()
    finally:
        serve.terminate()
        serve.wait(timeout=30)
    assert f"serving http://127.0.0.1:{port}" in line, line
    assert "admin API and console closed (LEDGER_ADMIN_TOKEN not set)" in line
