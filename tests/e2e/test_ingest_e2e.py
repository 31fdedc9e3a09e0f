"""End to end over real HTTP: every rule and status code of SPEC §4, on every store.

After every refused call the tenant's stream is unchanged; each refusal leaves a
rejection-log row with its reason code.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.sim.connect import SimulatedHost, make_install_payload
from eventstore import open_store
from eventstore.events import Installed, SecretRotated, stream_id_for
from tests.harness import ADMIN_TOKEN, RunningService, refused, running_service


def installed_with_events(service: RunningService) -> tuple[dict[str, Any], int]:
    payload = service.install()
    return payload, len(service.stream(payload["clientKey"]))


# ------------------------------------------------------------------ happy paths


def test_descriptor_names_the_lifecycle_urls(service: RunningService) -> None:
    body = service.client.get("/atlassian-connect.json").json()
    assert body["baseUrl"] == service.settings.app_base_url
    assert body["key"] == "tenant-ledger"
    assert body["apiMigrations"]["signed-install"] is True
    assert body["lifecycle"] == {
        "installed": "/installed?v=1",
        "uninstalled": "/uninstalled?v=1",
        "enabled": "/enabled?v=1",
        "disabled": "/disabled?v=1",
    }


def test_a_tenants_life(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    secret = payload["sharedSecret"]
    # enabled, signed HS256 with the tenant's secret, as hosts do
    assert service.send(service.call("enabled", payload, alg="HS256")).status_code == 204
    # rotation: a later install (RS256) with a new secret
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(32))
    assert service.send(service.call("installed", rotated)).status_code == 204
    # the old secret no longer verifies HS256 calls
    stale = service.send(service.call("disabled", payload, alg="HS256", shared_secret=secret))
    refused(service, stale, 401, "bad_signature")
    # rename and upgrade in one call
    moved = dict(
        rotated, baseUrl="https://renamed.atlassian.net", displayUrl="https://renamed.atlassian.net"
    )
    assert service.send(service.call("installed", moved, descriptor_version="2")).status_code == 204
    # a call that changes nothing
    assert service.send(service.call("installed", moved, descriptor_version="2")).status_code == 204
    assert (
        service.send(
            service.call("disabled", moved, alg="HS256", descriptor_version="2")
        ).status_code
        == 204
    )
    assert (
        service.send(service.call("uninstalled", moved, descriptor_version="2")).status_code == 204
    )
    # a disabled racing in after uninstalled does not bring the tenant back
    assert (
        service.send(
            service.call("disabled", moved, alg="HS256", descriptor_version="2")
        ).status_code
        == 204
    )

    types = [e.type for e in service.stream(key)]
    assert types == [
        "Installed",
        "Enabled",
        "SecretRotated",
        "BaseUrlChanged",
        "DescriptorUpgraded",
        "DetailsChanged",
        "InstallConfirmed",
        "Disabled",
        "Uninstalled",
        "Disabled",
    ]
    events = service.stream(key)
    assert [e.version for e in events] == list(range(1, 11))
    # one call's events share one call_id
    assert events[3].metadata.call_id == events[4].metadata.call_id == events[5].metadata.call_id
    assert events[0].metadata.alg == "RS256" and events[1].metadata.alg == "HS256"
    tenant = service.admin(f"/admin/tenants/{key}").json()
    assert tenant["state"] == "uninstalled" and tenant["enabled"] is False
    assert tenant["base_url"] == "https://renamed.atlassian.net"
    assert tenant["descriptor_version"] == "2"
    assert "sharedSecret" not in json.dumps(tenant)


def test_reinstall_after_uninstall_is_a_new_installed(service: RunningService) -> None:
    payload = service.install()
    assert service.send(service.call("uninstalled", payload)).status_code == 204
    assert service.send(service.call("installed", payload)).status_code == 204
    assert [e.type for e in service.stream(payload["clientKey"])] == [
        "Installed",
        "Uninstalled",
        "Installed",
    ]


def test_secrets_are_encrypted_and_bound_to_their_event(service: RunningService) -> None:
    payload = service.install()
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(32))
    service.install(rotated)
    first, second = service.stream(payload["clientKey"])
    assert isinstance(first.data, Installed) and isinstance(second.data, SecretRotated)
    assert first.data.shared_secret is not None
    assert first.data.shared_secret.ad.endswith("#1") and second.data.shared_secret.ad.endswith(
        "#2"
    )
    raw = b"".join(r.data for r in service.store.read_raw())
    assert (
        payload["sharedSecret"].encode() not in raw and rotated["sharedSecret"].encode() not in raw
    )


# ------------------------------------------------------------------ rule 1: the body


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b"[1, 2]", "application/json", 400, "not_an_object"),
        (b'{"key": "tenant-ledger"}', "application/json", 400, "missing_field"),
        (b"{}", "text/plain", 400, "unsupported_media_type"),
        (b"x" * 100_000, "application/json", 413, "body_too_large"),
    ],
)
def test_malformed_bodies(
    service: RunningService, body: bytes, content_type: str, status: int, code: str
) -> None:
    call = service.call("installed", make_install_payload())
    response = service.client.post(
        call.url_path_with_query,
        content=body,
        headers=dict(call.headers, **{"Content-Type": content_type}),
    )
    refused(service, response, status, code)


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"clientKey": None}, 400, "missing_field"),
        ({"baseUrl": "http://evil.atlassian.net"}, 400, "insecure_base_url"),
        ({"baseUrl": "https://evil.example.com"}, 400, "host_not_allowed"),
        ({"baseUrl": "not a url"}, 400, "invalid_base_url"),
        ({"key": "another-app"}, 401, "wrong_app_key"),
        ({"clientKey": "k" * 300}, 400, "field_too_long"),
        ({"sharedSecret": None}, 400, "missing_field"),
    ],
)
def test_payload_rules(
    service: RunningService, change: dict[str, Any], status: int, code: str
) -> None:
    payload = make_install_payload()
    for name, value in change.items():
        if value is None:
            payload.pop(name)
        else:
            payload[name] = value
    refused(service, service.send(service.call("installed", payload)), status, code)
    assert service.store.head().position == 0


def test_http_base_url_is_allowed_for_dev_hosts(service: RunningService) -> None:
    payload = service.install(make_install_payload(base_url="http://localhost:2990/jira"))
    assert service.stream(payload["clientKey"])[0].type == "Installed"


# ------------------------------------------------------------------ rule 2-4: the token


def test_missing_and_malformed_tokens(service: RunningService) -> None:
    payload = make_install_payload()
    call = service.call("installed", payload, headers_override={"Authorization": None})
    refused(service, service.send(call), 401, "missing_token")
    call = service.call("installed", payload, headers_override={"Authorization": "JWT not.a.token"})
    refused(service, service.send(call), 401, "malformed_token")
    call = service.call("installed", payload, headers_override={"Authorization": "Bearer abc"})
    refused(service, service.send(call), 401, "missing_token")


def test_token_in_the_query_string_is_accepted(service: RunningService) -> None:
    payload = make_install_payload()
    call = service.call("installed", payload)
    response = service.client.post(
        call.url_path_with_query,
        params={"v": "1", "jwt": call.token},
        content=call.body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 204
    assert call.token not in service.logs.getvalue()


def test_forged_rs256_unknown_kid(service: RunningService) -> None:
    stranger = SimulatedHost()  # its key is on no key server
    call = stranger.lifecycle_call(
        "installed", make_install_payload(), app_base_url=service.settings.app_base_url
    )
    refused(service, service.send(call), 401, "unknown_kid")


def test_forged_rs256_known_kid_other_key(service: RunningService) -> None:
    forger = SimulatedHost(kid=service.host.kid, private_key=rsa.generate_private_key(65537, 2048))
    payload, before = installed_with_events(service)
    takeover = dict(payload, sharedSecret="attacker-secret")
    call = forger.lifecycle_call("installed", takeover, app_base_url=service.settings.app_base_url)
    refused(service, service.send(call), 401, "bad_signature")
    assert len(service.stream(payload["clientKey"])) == before


def test_attacker_install_for_someone_elses_client_key(service: RunningService) -> None:
    payload, before = installed_with_events(service)
    # Signed HS256 with the attacker's own secret: not what the ledger trusts.
    attack = dict(payload, sharedSecret="mine-now")
    call = service.call("installed", attack, alg="HS256", shared_secret="mine-now")
    refused(service, service.send(call), 401, "bad_signature")
    assert len(service.stream(payload["clientKey"])) == before


def test_first_install_by_hs256_is_refused(service: RunningService) -> None:
    payload = make_install_payload()
    refused(
        service,
        service.send(service.call("installed", payload, alg="HS256")),
        401,
        "first_install_not_signed",
    )
    assert service.stream(payload["clientKey"]) == []


def test_alg_none_is_refused(service: RunningService) -> None:
    payload, before = installed_with_events(service)
    response = service.send(service.call("installed", payload, alg="none"))
    assert response.status_code == 401
    assert len(service.stream(payload["clientKey"])) == before


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"iss": "someone-else"}, "iss_mismatch"),
        ({"aud": ["https://other-app.example.com"]}, "aud_mismatch"),
        ({"qsh": "0" * 64}, "qsh_mismatch"),
        ({"exp": 1_000_000}, "token_expired"),
        ({"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}, "token_not_yet_valid"),
    ],
)
def test_claim_rules(service: RunningService, claims: dict[str, Any], code: str) -> None:
    payload, before = installed_with_events(service)
    changed = dict(payload, sharedSecret="x" * 40)
    refused(
        service, service.send(service.call("installed", changed, claims_override=claims)), 401, code
    )
    assert len(service.stream(payload["clientKey"])) == before


def test_qsh_of_another_path(service: RunningService) -> None:
    payload, before = installed_with_events(service)
    call = service.call("uninstalled", payload)
    # a valid uninstalled token replayed against /installed
    response = service.client.post(
        "/installed?v=1",
        content=call.body,
        headers=call.headers,
    )
    refused(service, response, 401, "qsh_mismatch")
    assert len(service.stream(payload["clientKey"])) == before


def test_aud_trailing_slash_is_ignored(service: RunningService) -> None:
    payload = make_install_payload()
    call = service.call(
        "installed", payload, claims_override={"aud": service.settings.app_base_url + "/"}
    )
    assert service.send(call).status_code == 204


def test_hs256_guesses_are_refused(service: RunningService) -> None:
    payload, before = installed_with_events(service)
    for guess in ("", "secret", payload["clientKey"], "tenant-ledger"):
        if not guess:
            continue
        call = service.call("disabled", payload, alg="HS256", shared_secret=guess)
        refused(service, service.send(call), 401, "bad_signature")
    assert len(service.stream(payload["clientKey"])) == before


@pytest.mark.parametrize("kid", ["a/b", "..", ".", "%2e%2e", "../../etc/passwd", "k" * 129])
def test_dangerous_kids_never_reach_the_key_server(service: RunningService, kid: str) -> None:
    service.key_server.reset_counts()
    host = SimulatedHost(kid=kid, private_key=service.host.private_key)
    call = host.lifecycle_call(
        "installed", make_install_payload(), app_base_url=service.settings.app_base_url
    )
    refused(service, service.send(call), 401, "invalid_kid")
    assert sum(service.key_server.requests.values()) == 0


def test_key_server_down_then_up(service: RunningService) -> None:
    fresh = SimulatedHost(key_server=service.key_server)  # a kid the service has not cached
    payload = make_install_payload()
    service.key_server.down = True
    call = fresh.lifecycle_call("installed", payload, app_base_url=service.settings.app_base_url)
    response = service.send(call)
    refused(service, response, 503, "key_server_unavailable")
    assert int(response.headers["Retry-After"]) > 0
    assert service.stream(payload["clientKey"]) == []
    service.key_server.down = False
    assert service.send(call).status_code == 204  # the host retries the same call
    assert len(service.stream(payload["clientKey"])) == 1


# ------------------------------------------------------------------ rules 5-7


def test_same_token_twice_is_idempotent(service: RunningService) -> None:
    payload = make_install_payload()
    call = service.call("installed", payload)
    assert service.send(call).status_code == 204
    assert service.send(call).status_code == 204
    assert len(service.stream(payload["clientKey"])) == 1
    later = service.call("enabled", payload, alg="HS256")
    assert service.send(later).status_code == 204
    assert service.send(call).status_code == 204  # still a repeat, not a stale call
    assert len(service.stream(payload["clientKey"])) == 2


def test_stale_replay_after_rotation_cannot_roll_the_secret_back(service: RunningService) -> None:
    payload = make_install_payload()
    old_call = service.call(
        "installed", payload, iat=int(time.time()) - 60
    )  # captured, never delivered
    service.install(payload)
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(32))
    service.install(rotated)
    before = len(service.stream(payload["clientKey"]))
    refused(service, service.send(old_call), 409, "stale_call")
    assert len(service.stream(payload["clientKey"])) == before
    # the rotated secret is still the one that verifies
    assert service.send(service.call("enabled", rotated, alg="HS256")).status_code == 204


@pytest.mark.parametrize("event", ["uninstalled", "enabled", "disabled"])
def test_calls_for_an_unknown_tenant_store_nothing(service: RunningService, event: str) -> None:
    payload = make_install_payload()
    response = service.send(service.call(event, payload))
    assert response.status_code == 204
    assert service.store.head().position == 0
    assert service.store.list_rejections(1)[0].reason == "unknown_tenant"


def test_twelve_concurrent_rotations(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    calls = [
        service.call("installed", dict(payload, sharedSecret=secrets.token_urlsafe(32)))
        for _ in range(12)
    ]
    statuses: list[int] = []
    barrier = threading.Barrier(12)

    def send(call: Any) -> None:
        import httpx

        with httpx.Client(base_url=service.url, timeout=30) as client:
            barrier.wait()
            statuses.append(
                client.post(
                    call.url_path_with_query, content=call.body, headers=call.headers
                ).status_code
            )

    threads = [threading.Thread(target=send, args=(c,)) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(statuses) <= {204, 409}
    events = service.stream(key)
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    rotations = [e for e in events if e.type == "SecretRotated"]
    assert len(rotations) == statuses.count(204)
    # exactly one current secret: the last rotation's, and it verifies HS256 calls
    winner = next(
        c
        for c in calls
        if c.token
        and rotations
        and json.loads(c.body)["sharedSecret"]
        and service.send(service.call("enabled", json.loads(c.body), alg="HS256")).status_code
        == 204
    )
    assert winner is not None
    others = [c for c in calls if c is not winner]
    for other in others:
        response = service.send(service.call("disabled", json.loads(other.body), alg="HS256"))
        assert response.status_code == 401


# ------------------------------------------------------------------ rule 8 and the rest


def test_store_unavailable_answers_503_and_stores_nothing(postgres_databases: Any) -> None:
    """The database goes away for real (connections refused), then comes back."""
    import psycopg

    url = postgres_databases.create()
    name = url.rsplit("/", 1)[1]
    with running_service(url) as service:
        payload = service.install()
        fresh = make_install_payload()
        with psycopg.connect(postgres_databases.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
            )
            try:
                response = service.send(service.call("installed", fresh))
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "store_unavailable"
                assert int(response.headers["Retry-After"]) > 0
                assert service.client.get("/readyz").status_code == 503
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        # back: the pool reconnects (with back-off), the host's retry goes through,
        # and nothing was half-stored
        deadline = time.monotonic() + 30
        while service.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not become ready again"
            time.sleep(0.2)
        assert service.send(service.call("installed", fresh)).status_code == 204
        with open_store(url) as check:
            assert [e.type for e in check.read_stream(stream_id_for(fresh["clientKey"]))] == [
                "Installed"
            ]
            assert len(check.read_stream(stream_id_for(payload["clientKey"]))) == 1
            assert check.verify().ok


def test_no_secret_or_token_reaches_logs_or_admin_answers(service: RunningService) -> None:
    payload = service.install()
    rotated = dict(payload, sharedSecret=secrets.token_urlsafe(32))
    rotate_call = service.call("installed", rotated)
    assert service.send(rotate_call).status_code == 204
    enable_call = service.call("enabled", rotated, alg="HS256")
    assert service.send(enable_call).status_code == 204
    bad = service.call(
        "installed", dict(payload, sharedSecret="attacker"), alg="HS256", shared_secret="attacker"
    )
    service.send(bad)
    key = payload["clientKey"]
    answers = "".join(
        service.admin(path).text
        for path in (
            f"/admin/tenants/{key}",
            f"/admin/tenants/{key}/events",
            "/admin/events",
            "/admin/rejections",
            "/admin/verify",
        )
    )
    logs = service.logs.getvalue()
    assert "lifecycle call" in logs and key in logs  # the logs are captured at all
    metrics = service.client.get("/metrics").text
    for haystack in (answers, logs, metrics):
        for needle in (
            payload["sharedSecret"],
            rotated["sharedSecret"],
            "attacker",
            rotate_call.token,
            enable_call.token,
            bad.token,
            ADMIN_TOKEN,
        ):
            assert needle not in haystack


def test_admin_api_requires_the_token(service: RunningService) -> None:
    assert service.client.get("/admin/verify").status_code == 401
    assert (
        service.client.get("/admin/verify", headers={"Authorization": "Bearer wrong"}).status_code
        == 401
    )
    assert service.admin("/admin/verify").json()["ok"] is True


def test_admin_is_closed_while_no_token_is_configured(store_url: str) -> None:
    with running_service(store_url, admin_token=None) as running:
        for header in ("Bearer", "Bearer x", "Bearer None"):
            response = running.client.get("/admin/verify", headers={"Authorization": header})
            assert response.status_code == 401


def test_admin_tenant_as_of_and_events(service: RunningService) -> None:
    payload = service.install()
    key = payload["clientKey"]
    first_position = service.stream(key)[0].position
    service.install(dict(payload, baseUrl="https://moved.atlassian.net"))
    now = service.admin(f"/admin/tenants/{key}").json()
    then = service.admin(f"/admin/tenants/{key}", as_of=str(first_position)).json()
    assert now["base_url"] == "https://moved.atlassian.net"
    assert then["base_url"] == payload["baseUrl"]
    recorded = service.stream(key)[0].recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert service.admin(f"/admin/tenants/{key}", as_of=recorded).json()["version"] == 1
    assert service.admin("/admin/tenants/nobody").status_code == 404
    events = service.admin(f"/admin/tenants/{key}/events").json()["events"]
    assert [e["type"] for e in events] == ["Installed", "BaseUrlChanged"]
    assert events[0]["data"]["sharedSecret"] == "[redacted]"
    assert set(events[0]) >= {
        "position",
        "stream_id",
        "version",
        "type",
        "data",
        "metadata",
        "recorded_at",
        "hash",
    }
    page = service.admin("/admin/events", after=0, limit=1).json()
    assert len(page["events"]) == 1 and page["next"] == 1


def test_health_ready_metrics(service: RunningService) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    assert service.client.get("/readyz").status_code == 200
    service.install()
    text = service.client.get("/metrics").text
    assert 'ledger_calls_total{endpoint="installed",outcome="accepted",status="204"} 1' in text
    assert "ledger_call_duration_seconds_bucket" in text


def test_reinstall_after_uninstall_by_hs256_is_refused(service: RunningService) -> None:
    """An old secret must not buy a new tenancy: a reinstall is signed like a first install."""
    payload = service.install()
    assert service.send(service.call("uninstalled", payload)).status_code == 204
    before = len(service.stream(payload["clientKey"]))
    takeover = dict(payload, sharedSecret="new-owner-secret")
    call = service.call("installed", takeover, alg="HS256", shared_secret=payload["sharedSecret"])
    refused(service, service.send(call), 401, "first_install_not_signed")
    assert len(service.stream(payload["clientKey"])) == before


@pytest.mark.parametrize("level", ["info", "debug"])
def test_an_accepted_call_is_logged_at_debug_a_refused_one_at_info(level: str) -> None:
    """A line per accepted call costs the hot path; the ledger records those calls."""
    import io
    import logging

    from app.ingest.outcome import Outcome, log_outcome
    from app.logs import configure_logging

    out = io.StringIO()
    configure_logging(level, stream=out)
    log = logging.getLogger("ledger.test")
    log_outcome(log, "lifecycle call", "client_key", "installed", Outcome(204, "accepted", "a1"), 0)
    log_outcome(log, "lifecycle call", "client_key", "installed", Outcome(401, "bad_sig", "r1"), 0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    shown = [(line["call_id"], line["level"]) for line in lines]
    accepted = [("a1", "debug")] if level == "debug" else []
    assert shown == [*accepted, ("r1", "info")]
    configure_logging()
