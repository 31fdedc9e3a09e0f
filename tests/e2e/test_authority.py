"""The tenant authority (SPEC §11) over real HTTP on both stores: service tokens, verify,
sign, Forge verify, the rejection log, metrics, and that a secret never leaves."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from app.authority.follower import STALE_AFTER
from app.authority.shell import Authority, AuthRequest
from app.cli.forget import forget_tenant
from app.ingest.connect.tokens import query_string_hash, verify_shared_secret_token
from app.settings import Settings
from app.sim.connect import make_install_payload
from app.sim.forge import ForgeInstallation, ForgePlatform, JwksServer
from eventstore.crypto import KeyRing
from eventstore.store import EventStore
from tests.harness import ADMIN_TOKEN, RunningService, running_service

SERVICE_TOKEN = "svc-token-for-tests-0123456789abcdef"
OTHER_TOKEN = "other-svc-token-for-tests-0123456789"


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def forge(jwks: JwksServer) -> ForgePlatform:
    return ForgePlatform(jwks=jwks)


@pytest.fixture
def service(store_url: str, jwks: JwksServer, forge: ForgePlatform) -> Iterator[RunningService]:
    with running_service(
        store_url,
        service_tokens=f"app={SERVICE_TOKEN},worker={OTHER_TOKEN}",
        forge_app_id=forge.app_ari,
        forge_jwks_urls=jwks.url,
    ) as running:
        yield running


def auth(
    service: RunningService, route: str, body: Any, token: str = SERVICE_TOKEN
) -> httpx.Response:
    return service.client.post(
        f"/auth/{route}", json=body, headers={"Authorization": f"Bearer {token}"}
    )


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the authority did not see the change"
        time.sleep(0.02)


def page_url(
    service: RunningService, payload: dict[str, Any], path: str = "/panel", **options: Any
) -> str:
    query = [("lic", "active"), ("xdm_e", payload["baseUrl"])]
    token = service.host.page_token(
        payload["clientKey"], payload["sharedSecret"], path=path, query=query, **options
    )
    return f"{path}?lic=active&xdm_e={payload['baseUrl']}&jwt={token}"


def installed(service: RunningService, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    payload = service.install(payload)
    eventually(lambda: auth(service, "connect/sign", sign_body(payload)).status_code == 200)
    return payload


def sign_body(
    payload: dict[str, Any], url: str = "/rest/api/3/myself", **extra: Any
) -> dict[str, Any]:
    return {"client_key": payload["clientKey"], "method": "GET", "url": url, **extra}


# --- service tokens ------------------------------------------------------------------


def test_closed_without_service_tokens(store_url: str) -> None:
    with running_service(store_url) as service:
        for route in ("connect/verify", "connect/sign", "forge/verify"):
            response = auth(service, route, {})
            assert response.status_code == 401
            assert response.json()["error"] == "service_api_closed"


def test_tokens_open_only_their_own_routes(service: RunningService) -> None:
    admin = auth(service, "connect/sign", sign_body(make_install_payload()), token=ADMIN_TOKEN)
    assert admin.status_code == 401 and admin.json()["error"] == "bad_service_token"
    assert auth(service, "connect/sign", {}, token=SERVICE_TOKEN[:-1]).status_code == 401
    missing = service.client.post("/auth/connect/sign", json={})
    assert missing.status_code == 401 and missing.json()["error"] == "missing_token"
    as_admin = service.client.get(
        "/admin/tenants", headers={"Authorization": f"Bearer {SERVICE_TOKEN}"}
    )
    assert as_admin.status_code == 401
    assert SERVICE_TOKEN not in service.logs.getvalue()
    assert "failed authentication: service_token" in service.logs.getvalue()


def test_calls_counted_per_service(service: RunningService) -> None:
    auth(service, "connect/sign", sign_body(make_install_payload()))
    auth(service, "connect/sign", sign_body(make_install_payload()), token=OTHER_TOKEN)
    auth(service, "connect/sign", {}, token="nope")
    metrics = service.client.get("/metrics").text
    assert (
        'ledger_service_calls_total{endpoint="auth/connect/sign",outcome="unknown_tenant",service="app",status="404"} 1.0'
        in metrics
    )
    assert 'service="worker"' in metrics
    assert (
        'ledger_service_auth_failures_total{endpoint="auth/connect/sign",reason="bad_service_token"} 1.0'
        in metrics
    )


# --- verify ---------------------------------------------------------------------------


def test_page_load_verified(service: RunningService) -> None:
    payload = installed(service)
    account = "557058:0a1b2c3d"
    response = auth(
        service,
        "connect/verify",
        {"method": "GET", "url": page_url(service, payload, account_id=account)},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["client_key"] == payload["clientKey"]
    assert body["account_id"] == account and body["license"] == "active"
    assert (
        body["tenant"]["state"] == "installed" and body["tenant"]["base_url"] == payload["baseUrl"]
    )
    assert body["expires_at"].endswith("Z")
    assert payload["sharedSecret"] not in response.text


def test_token_in_authorization_and_absolute_url(service: RunningService) -> None:
    payload = installed(service)
    token = service.host.page_token(
        payload["clientKey"], payload["sharedSecret"], path="/p", query=[("a", "b c")]
    )
    for url in ("/p?a=b%20c", f"{service.url}/p?a=b%20c"):
        answer = auth(
            service,
            "connect/verify",
            {"method": "GET", "url": url, "authorization": f"JWT {token}"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["account_id"] is None and answer.json()["license"] is None


def test_context_tokens(service: RunningService) -> None:
    payload = installed(service)
    token = service.host.page_token(
        payload["clientKey"], payload["sharedSecret"], context=True, account_id="u1"
    )
    ok = auth(service, "connect/verify", {"authorization": f"JWT {token}", "context": True})
    assert ok.status_code == 200 and ok.json()["account_id"] == "u1"
    as_page = auth(
        service, "connect/verify", {"method": "GET", "url": "/", "authorization": f"JWT {token}"}
    )
    assert as_page.json()["error"] == "bad_qsh"
    page = service.host.page_token(payload["clientKey"], payload["sharedSecret"], path="/")
    as_context = auth(service, "connect/verify", {"authorization": f"JWT {page}", "context": True})
    assert as_context.json()["error"] == "bad_qsh"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"path": "/other"}, "bad_qsh"),
        ({"iat": int(time.time()) - 3600, "exp_in": 60}, "expired"),
        ({"alg": "RS256"}, "unsupported_alg"),
        ({"secret": "not-the-secret-0123456789abcdef0123"}, "bad_signature"),
        ({"client_key": "never-installed"}, "unknown_tenant"),
    ],
)
def test_refusals(service: RunningService, change: dict[str, Any], code: str) -> None:
    payload = installed(service)
    change = dict(change)  # the parameters are shared by both stores' runs
    secret = change.pop("secret", payload["sharedSecret"])
    client_key = change.pop("client_key", payload["clientKey"])
    path = change.pop("path", "/panel")
    token = service.host.page_token(client_key, secret, path=path, **change)
    response = auth(service, "connect/verify", {"method": "GET", "url": f"/panel?jwt={token}"})
    assert response.status_code == 401, response.text
    assert response.json()["error"] == code
    assert token not in response.text and payload["sharedSecret"] not in response.text
    rejections = service.admin("/admin/rejections").json()["rejections"]
    assert any(r["path"] == "/auth/connect/verify" and r["reason"] == code for r in rejections)
    assert token not in str(rejections)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"method": "BREW", "url": "/"},
        {"method": "GET", "url": 5},
        {"method": "GET", "url": "/x", "context": "yes"},
        {"method": "GET", "url": "/x", "authorization": 1},
        {"method": "GET", "url": "https://elsewhere.example/x?jwt=a.b.c"},
        {"method": "GET", "url": "/x y"},
    ],
)
def test_bad_verify_bodies(service: RunningService, body: Any) -> None:
    response = auth(service, "connect/verify", body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error", "detail"}


def test_uninstall_rotation_and_forget_reach_verify(service: RunningService) -> None:
    payload = installed(service)

    def verify_with(secret: str) -> str:
        url = page_url(service, {**payload, "sharedSecret": secret})
        response = auth(service, "connect/verify", {"method": "GET", "url": url})
        return "ok" if response.status_code == 200 else response.json()["error"]

    old = payload["sharedSecret"]
    rotated = {**payload, "sharedSecret": "rotated-secret-" + "x" * 40}
    service.send(service.call("installed", rotated))
    eventually(lambda: verify_with(old) == "bad_signature")
    assert verify_with(rotated["sharedSecret"]) == "ok"

    forget_tenant(service.store, payload["clientKey"], "test", "tester", "here")
    eventually(lambda: verify_with(rotated["sharedSecret"]) == "no_shared_secret")

    again = {**payload, "sharedSecret": "after-forget-" + "y" * 40}
    service.install(again)
    eventually(lambda: verify_with(again["sharedSecret"]) == "ok")
    service.send(service.call("uninstalled", again, alg="HS256"))
    eventually(lambda: verify_with(again["sharedSecret"]) == "tenant_uninstalled")


# --- sign -----------------------------------------------------------------------------


def test_sign(service: RunningService) -> None:
    payload = installed(service)
    response = auth(
        service,
        "connect/sign",
        sign_body(payload, "/rest/api/3/search?jql=a%20b&x=1", expires_in=60),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["url"] == payload["baseUrl"] + "/rest/api/3/search?jql=a%20b&x=1"
    scheme, token = body["authorization"].split(" ")
    assert scheme == "JWT"
    qsh = query_string_hash("GET", "/rest/api/3/search", [("jql", "a b"), ("x", "1")])
    verified = verify_shared_secret_token(
        token, payload["sharedSecret"], client_key=service.settings.app_key, qsh=qsh,
        now=int(time.time()), leeway=0,
    )  # fmt: skip
    assert verified.exp - verified.iat == 60
    assert payload["sharedSecret"] not in response.text


def test_sign_under_a_base_path(service: RunningService) -> None:
    payload = installed(
        service, make_install_payload(base_url="https://wiki-site.atlassian.net/wiki")
    )
    relative = auth(service, "connect/sign", sign_body(payload, "/rest/api/space"))
    absolute = auth(
        service,
        "connect/sign",
        sign_body(payload, "https://wiki-site.atlassian.net/wiki/rest/api/space"),
    )
    assert (
        relative.json()["url"]
        == absolute.json()["url"]
        == "https://wiki-site.atlassian.net/wiki/rest/api/space"
    )
    outside = auth(
        service,
        "connect/sign",
        sign_body(payload, "https://wiki-site.atlassian.net/rest/api/3/myself"),
    )
    assert outside.status_code == 400 and outside.json()["error"] == "foreign_url"


FOREIGN = [
    "https://evil.example/rest/api/3/myself",
    "//evil.example/rest/api/3/myself",
    "https://{host}@evil.example/x",
    "https://evil.example@{host}/x",
    "https://{host}:8443/x",
    "http://{host}/x",
    "https://{host}.evil.example/x",
    "https://{host}./x",
    "/%2F%2Fevil.example/x",
    "/rest/..%2F..%2Fx",
    "/rest/%2e%2e/x",
    "/rest/../../x",
    "/rest/%5Cevil",
    "https://xn--sit-1na.atlassian.net/x",
    "https://{lookalike}/x",  # the tenant's host with a Cyrillic i
    "ftp://{host}/x",
    "javascript:alert(1)",
]
INVALID = ["/x y", "/x\\y", "/x#frag", "", "/x?q=%ff", "/caf\u00e9", "x" * 9000]


@pytest.mark.parametrize("url", FOREIGN + INVALID)
def test_sign_refuses_other_hosts_and_tricky_urls(service: RunningService, url: str) -> None:
    payload = installed(service)
    url_id = url
    host = payload["baseUrl"].removeprefix("https://")
    lookalike = host.replace("i", "\u0456", 1)
    url = url.replace("{host}", host).replace("{lookalike}", lookalike)
    response = auth(service, "connect/sign", sign_body(payload, url))
    assert response.status_code == 400, response.text
    assert response.json()["error"] == ("foreign_url" if url_id in FOREIGN else "invalid_url")
    assert "authorization" not in response.json()


def test_sign_tenant_states(service: RunningService) -> None:
    unknown = auth(service, "connect/sign", sign_body(make_install_payload()))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_tenant"
    payload = installed(service)
    for expires_in in (29, 601, "60", True, 1.5):
        bad = auth(service, "connect/sign", sign_body(payload, expires_in=expires_in))
        assert bad.status_code == 400, expires_in
    forget_tenant(service.store, payload["clientKey"], "test", "tester", "here")
    eventually(lambda: auth(service, "connect/sign", sign_body(payload)).status_code == 409)
    assert auth(service, "connect/sign", sign_body(payload)).json()["error"] == "no_shared_secret"
    service.install(payload)
    service.send(service.call("uninstalled", payload, alg="HS256"))
    eventually(
        lambda: (
            auth(service, "connect/sign", sign_body(payload)).json().get("error")
            == "tenant_uninstalled"
        )
    )


# --- Forge ----------------------------------------------------------------------------


def test_forge_verify(service: RunningService, forge: ForgePlatform) -> None:
    installation = ForgeInstallation()
    claims = forge.claims(installation) | {"principal": "557058:forge-user"}
    token = forge.sign(claims)
    response = auth(service, "forge/verify", {"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["installation_id"] == installation.installation_id
    assert body["installation_ari"].endswith(installation.installation_id)
    assert body["principal"] == "557058:forge-user" and body["client_keys"] == []

    payload = installed(service, make_install_payload(installationId=installation.installation_id))
    eventually(
        lambda: (
            auth(service, "forge/verify", {"authorization": f"Bearer {token}"}).json()[
                "client_keys"
            ]
            == [payload["clientKey"]]
        )
    )
    other_app = "ari:cloud:ecosystem::app/00000000-0000-4000-8000-000000000001"
    other = forge.sign(forge.claims(installation) | {"aud": other_app})
    refused = auth(service, "forge/verify", {"authorization": f"Bearer {other}"})
    assert refused.status_code == 401 and refused.json()["error"] == "aud_mismatch"
    assert (
        auth(service, "forge/verify", {"authorization": token}).json()["error"] == "missing_token"
    )


def test_forge_not_configured(store_url: str) -> None:
    with running_service(store_url, service_tokens=f"app={SERVICE_TOKEN}") as service:
        response = auth(service, "forge/verify", {"authorization": "Bearer a.b.c"})
        assert response.status_code == 401 and response.json()["error"] == "forge_not_configured"


def test_a_stolen_service_token_never_reveals_a_secret(service: RunningService) -> None:
    payload = installed(service)
    secret = payload["sharedSecret"]
    answers = [
        auth(service, "connect/sign", sign_body(payload)).text,
        auth(service, "connect/verify", {"method": "GET", "url": page_url(service, payload)}).text,
        auth(service, "connect/verify", {"method": "GET", "url": "/x?jwt=a.b.c"}).text,
        service.client.get("/openapi.json").text,
        service.client.get("/metrics").text,
    ]
    assert not any(secret in answer for answer in answers)
    assert secret not in service.logs.getvalue()


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "app=short-token",
        "no-equals-sign-" + "t" * 40,
        "bad name=" + "t" * 40,
        f"a={SERVICE_TOKEN},b={SERVICE_TOKEN}",
        f"a={SERVICE_TOKEN},a={OTHER_TOKEN}",
        f"a={'t' * 20} {'t' * 20}",
    ],
)
def test_a_bad_service_token_setting_names_the_setting_never_the_token(value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(service_tokens=value)
    message = str(refused.value)
    assert "LEDGER_SERVICE_TOKENS" in message
    secret = value.partition("=")[2] or value
    assert secret not in message and SERVICE_TOKEN not in message


def test_the_admin_token_is_never_a_service_token() -> None:
    with pytest.raises(ValidationError, match="LEDGER_SERVICE_TOKENS must not hold"):
        Settings(admin_token=SERVICE_TOKEN, service_tokens=f"app={SERVICE_TOKEN}")
    assert Settings(service_tokens=f" app = {SERVICE_TOKEN} ,").service_token_map == {
        SERVICE_TOKEN: "app"
    }


@pytest.mark.parametrize("value", ["ledger", "//ledger", "/led ger", "/ledger?x", "/a%2fb"])
def test_a_bad_root_path_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="LEDGER_ROOT_PATH"):
        Settings(root_path=value)
    assert Settings(root_path="/ledger/").root_path == "/ledger"


def test_a_view_that_cannot_follow_the_log_refuses(store: EventStore) -> None:
    """Fail closed: a process that cannot read the log may be missing a rotation or a
    forget, so after STALE_AFTER it answers 503 rather than verify or sign with its view."""
    settings = Settings(master_key=base64.b64encode(os.urandom(32)).decode())
    authority = Authority(settings, store, KeyRing(store, settings.master_keys()), forge=None)  # type: ignore[arg-type]  # no Forge call here
    authority.follower.load()
    body = json.dumps({"client_key": "nobody", "method": "GET", "url": "/x"}).encode()
    request = AuthRequest("connect/sign", "/auth/connect/sign", body, "application/json", None)
    assert asyncio.run(authority.handle(request)).code == "unknown_tenant"
    assert authority.directory.refreshed_at is not None
    authority.directory.refreshed_at -= STALE_AFTER + 1
    answer = asyncio.run(authority.handle(request))
    assert (answer.status, answer.code, answer.retry_after) == (503, "authority_stale", 5)


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"[" * 30_000 + b"]" * 30_000, "application/json", 400),
        (b'{"method": "GET", "url": "/\xff"}', "application/json", 400),
        (b'{"method": "GET", "url": "/\\ud800"}', "application/json", 400),
        (b'{"client_key": "\\ud800", "method": "GET", "url": "/x"}', "application/json", 400),
        (b'{"method": "GET", "url": "/x"}', "text/plain", 400),
        (b'{"url": "' + b"a" * 70_000 + b'"}', "application/json", 413),
        (
            b'{"expires_in": 1e400, "client_key": "k", "method": "GET", "url": "/"}',
            "application/json",
            400,
        ),
        (b"", "application/json", 400),
    ],
)
def test_odd_bodies_are_refused_never_a_500(
    service: RunningService, content: bytes, content_type: str, status: int
) -> None:
    route = "connect/sign" if b"client_key" in content else "connect/verify"
    response = service.client.post(
        f"/auth/{route}",
        content=content,
        headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": content_type},
    )
    assert response.status_code == status, response.text
    assert set(response.json()) == {"error", "detail"}
