"""`ledger demo` on a throw-away service: every section it promises is printed, and
none is empty (the read models are read only once they caught up with the log)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from app.cli.demo.connect import run_demo
from app.serve.embedded import bound_socket
from eventstore.clock import simulated_clock, system_now, utcnow
from tests.harness import ADMIN_TOKEN, running_service

SECTIONS = (
    "calls sent by the simulated host",
    "tenants",
    "history of",
    "base URL history",
    "reimport links",
    "descriptor adoption",
    "stragglers",
    "presumed gone",
    "rejections",
    "verify",
    "digest",
    "a tenant moves to Forge",
    "Forge installations",
    "identity links",
    "migration report",
    "console",
)


def sections(text: str) -> dict[str, list[str]]:
    """``## title`` → the lines below it (a header line, then one record a line)."""
    found: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith("## "):
            current = found.setdefault(line[3:], [])
        else:
            current.append(line)
    return found


def rows(found: dict[str, list[str]], prefix: str) -> list[dict[str, str]]:
    (title,) = [t for t in found if t.startswith(prefix)]
    header, *lines = found[title]
    return [dict(zip(header.split("\t"), line.split("\t"), strict=True)) for line in lines]


def test_the_demo_prints_every_read_model_non_empty_and_returns_off_a_terminal() -> None:
    out = io.StringIO()
    run_demo(Console(file=out, width=200), url=None, key_port=0)  # returns: not a terminal
    found = sections(out.getvalue())
    for prefix in SECTIONS:
        titles = [t for t in found if t.startswith(prefix)]
        assert len(titles) == 1, prefix
        assert [line for line in found[titles[0]] if line.strip()][1:] or prefix == "console", (
            prefix
        )

    calls = rows(found, "calls sent")
    assert [c["answer"] for c in calls].count("204") == len(calls) - 1
    # Weeks of simulated days, not one instant: the charts have shape.
    assert len({c["date"] for c in calls}) >= 10
    first_seen = [v["first_seen_at"][:10] for v in rows(found, "descriptor adoption")]
    assert len(set(first_seen)) == 2
    assert calls[-1]["answer"] == "401 bad_signature"  # the forged install
    tenants = {t["client_key"]: t for t in rows(found, "tenants")}
    assert len(tenants) == 7
    history = rows(found, "history of")
    assert {"Installed", "SecretRotated", "BaseUrlChanged", "DescriptorUpgraded"} <= {
        e["type"] for e in history
    }
    assert all(e["verified_by"] and e["call_id"] for e in history)
    assert "https://acme-corp.atlassian.net" in {r["base_url"] for r in rows(found, "base URL")}
    (link,) = rows(found, "reimport links")
    assert link["kind"] == "reimport" and link["previous_client_key"] in tenants
    assert {v["version"] for v in rows(found, "descriptor adoption")} == {"1", "2"}
    gone = {g["presumed"]: g for g in rows(found, "presumed gone")}
    assert set(gone) == {"silent", "uninstalling"}  # initech; umbrella leaving Forge
    assert tenants[gone["silent"]["client_key"]]["base_url"] == "https://initech.atlassian.net"
    assert (
        tenants[gone["uninstalling"]["client_key"]]["base_url"] == "https://umbrella.atlassian.net"
    )
    assert rows(found, "stragglers")[0]["client_key"] == gone["silent"]["client_key"]
    assert rows(found, "rejections")[0]["reason"] == "bad_signature"
    (verified,) = rows(found, "verify")
    (digest,) = rows(found, "digest")
    assert verified["ok"] == "true" and digest["head"] == verified["head"]
    assert digest["position"] == verified["events"] and '"kind":"sqlite"' in digest["store"]
    forge_calls = rows(found, "a tenant moves to Forge")
    assert {c["answer"] for c in forge_calls} == {"204"} and len(forge_calls) == 14
    installations = rows(found, "Forge installations")
    states = sorted(i["state"] for i in installations)
    assert states == ["installed"] * 4 + ["uninstalling"]
    assert {link["kind"] for link in rows(found, "identity links")} == {"connect", "reinstall"}
    report = rows(found, "migration report")
    assert {r["list"] for r in report} == {"connect_only", "forge_only"}
    # Piped, the service is gone when the demo returns: it says so, and names no dead URL.
    (console_line,) = [line for line in found["console"] if line.strip()]
    assert "stopped" in console_line and "http://" not in console_line
    assert "http://" not in out.getvalue().rstrip().splitlines()[-1]


def test_with_url_the_demo_says_what_it_skipped_and_why(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with bound_socket() as probe:  # a free port for the demo's key server
        key_port = probe.getsockname()[1]
    keys_url = f"http://127.0.0.1:{key_port}"
    with running_service(store_url, install_keys_url=keys_url) as service:
        monkeypatch.setenv("LEDGER_ADMIN_TOKEN", ADMIN_TOKEN)
        monkeypatch.setenv("LEDGER_DATABASE_URL", store_url)
        out = io.StringIO()
        run_demo(Console(file=out, width=200), url=service.url, key_port=key_port)
    text = out.getvalue()
    skipped = [line for line in text.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and "JWKS" in skipped[0], text
    assert "the service's own clock stamps every event" in text
    found = sections(text)
    calls = rows(found, "calls sent")
    assert calls[-1]["answer"] == "401 bad_signature" and "umbrella" not in str(calls)
    assert not any(title.startswith("a tenant moves to Forge") for title in found)


def test_the_simulated_clock_lasts_only_while_it_is_held() -> None:
    then = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with simulated_clock(lambda: then):
        assert utcnow() == then
    assert utcnow() - system_now() < timedelta(seconds=5)
    with pytest.raises(RuntimeError), simulated_clock(lambda: then):
        raise RuntimeError("a failing demo step")
    assert utcnow() != then
