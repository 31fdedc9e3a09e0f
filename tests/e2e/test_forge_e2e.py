"""Forge lifecycle calls over real HTTP (uvicorn), real RSA keys from the simulated
JWKS, both stores: one case per rule and status code of SPEC §10."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from app.sim.forge import ForgeCall, ForgeInstallation, ForgePlatform, JwksServer
from eventstore import open_store
from eventstore.events import installation_stream_id
from eventstore.ids import installation_ari
from eventstore.values import RecordedEvent
from tests.harness import RunningService, running_service


@dataclass
class Forge:
    service: RunningService
    platform: ForgePlatform
    jwks: JwksServer

    def send(self, call: ForgeCall, **headers: str) -> httpx.Response:
        return self.service.client.post(
            call.path, content=call.body, headers={**call.headers, **headers}
        )

    def events(self, installation: ForgeInstallation) -> list[RecordedEvent]:
        return self.service.store.read_stream(installation_stream_id(installation.installation_id))

    def rejections(self) -> list[dict[str, Any]]:
        answer = self.service.admin("/admin/rejections", limit=1000)
        assert answer.status_code == 200
        rows: list[dict[str, Any]] = answer.json()["rejections"]
        return rows


@contextmanager
def forge_service(store_url: str, *, configured: bool = True) -> Iterator[Forge]:
    with JwksServer() as jwks:
        platform = ForgePlatform(jwks=jwks)
        options: dict[str, Any] = {"forge_jwks_urls": jwks.url}
        if configured:
            options["forge_app_id"] = platform.app_ari
        with running_service(store_url, **options) as service:
            yield Forge(service, platform, jwks)


def types(events: list[RecordedEvent]) -> list[str]:
    return [e.type for e in events]


def refusal(response: httpx.Response) -> tuple[int, str]:
    assert response.headers.get("location") is None  # never a redirect
    return response.status_code, response.json()["error"]


def test_rule_0_unconfigured_refuses_everything_first(store_url: str) -> None:
    with forge_service(store_url, configured=False) as forge:
        installation = ForgeInstallation()
        good = forge.platform.installed(installation)
        for response in (
            forge.send(good),
            forge.service.client.post("/forge/upgraded", content=b"not json"),
            forge.service.client.post("/forge/pre-uninstall", content=b"x" * 70_000),
        ):
            assert refusal(response) == (401, "forge_not_configured")
        assert forge.events(installation) == []
        reasons = [r["reason"] for r in forge.rejections()]
        assert reasons == ["forge_not_configured"] * 3


def test_every_refusal_in_order(store_url: str) -> None:
    with forge_service(store_url) as forge:
        platform = forge.platform
        installation = ForgeInstallation()
        good = platform.installed(installation)
        now_claims = platform.claims(installation)

        def with_claims(**changes: Any) -> ForgeCall:
            return platform.installed(installation, claims={**now_claims, **changes})

        other_app = ForgePlatform(jwks=forge.jwks)  # its keys are in the same JWKS
        cases: list[tuple[httpx.Response, tuple[int, str]]] = [
            # rule 1: the body decides first, with or without a token
            (forge.send(good, **{"Content-Type": "text/plain"}), (400, "unsupported_media_type")),
            (
                forge.service.client.post(
                    "/forge/installed",
                    content=b"[1]",
                    headers={"Content-Type": "application/json"},
                ),
                (400, "not_an_object"),
            ),
            (
                forge.service.client.post(
                    "/forge/installed",
                    content=b'{"x": "' + b"a" * 70_000 + b'"}',
                    headers=good.headers,
                ),
                (413, "body_too_large"),
            ),
            # rule 2
            (forge.send(good, Authorization=""), (401, "missing_token")),
            (forge.send(good, Authorization="JWT " + good.token), (401, "missing_token")),
            (forge.send(good, Authorization="Bearer not.a.token"), (401, "malformed_token")),
            # rule 3
            (forge.send(platform.installed(installation, alg="none")), (401, "unsupported_alg")),
            (forge.send(platform.installed(installation, alg="HS256")), (401, "unsupported_alg")),
            (forge.send(platform.installed(installation, kid="no-such-key")), (401, "unknown_kid")),
            # rule 4
            (
                forge.send(other_app.installed(installation)),
                (401, "aud_mismatch"),
            ),  # a FIT of another Forge app, validly signed
            (forge.send(with_claims(exp=now_claims["iat"] - 120)), (401, "token_expired")),
            (forge.send(with_claims(nbf=now_claims["iat"] + 600)), (401, "token_not_yet_valid")),
            (forge.send(with_claims(iss="someone")), (401, "iss_mismatch")),
        ]
        # rule 5: a body naming another installation or another site
        stranger = platform.installed(installation)
        other_body = {**stranger.payload, "id": installation_ari(str(uuid.uuid4()))}
        cases.append(
            (
                forge.send(platform.call("installed", installation, other_body)),
                (401, "body_token_mismatch"),
            )
        )
        other_site = {**stranger.payload, "context": f"ari:cloud:jira::site/{uuid.uuid4()}"}
        cases.append(
            (
                forge.send(platform.call("installed", installation, other_site)),
                (401, "body_token_mismatch"),
            )
        )
        pre = platform.pre_uninstall(installation)
        foreign = {**pre.payload, "context": {"cloudId": str(uuid.uuid4()), "moduleKey": "m"}}
        cases.append(
            (
                forge.send(platform.call("pre-uninstall", installation, foreign)),
                (401, "body_token_mismatch"),
            )
        )
        for response, expected in cases:
            assert refusal(response) == expected, response.text
        assert forge.events(installation) == []

        rejections = forge.rejections()
        # Identical refusals within a window are one row with a count.
        counted = sorted(r["reason"] for r in rejections for _ in range(r["count"]))
        assert counted == sorted(e[1] for _, e in cases)
        by_reason = {r["reason"]: r for r in rejections}
        # The installation and cloudId the token (or body) claims stand in for
        # clientKey and baseUrl; the token only as its SHA-256.
        for reason in ("token_expired", "body_token_mismatch", "aud_mismatch", "unknown_kid"):
            assert by_reason[reason]["client_key"] == installation.installation_id, reason
            assert by_reason[reason]["base_url"] == installation.cloud_id, reason
            assert len(by_reason[reason]["token_sha256"]) == 64

        # And after all that, the real call is accepted (a trailing slash is no redirect).
        response = forge.service.client.post(
            good.path + "/", content=good.body, headers=good.headers
        )
        assert response.status_code == 204
        assert types(forge.events(installation)) == ["ForgeInstalled"]


def test_a_tenant_life_on_forge(store_url: str) -> None:
    with forge_service(store_url) as forge:
        platform = forge.platform
        installation = ForgeInstallation(app_version="1.0.0")
        first = platform.installed(installation)
        assert forge.send(first).status_code == 204
        # Forge retries with a new token and an envelope: the same delivery, one event.
        for count in (1, 2, 3, 4):
            assert forge.send(platform.retry(first, count)).status_code == 204
        assert forge.send(first).status_code == 204  # the very same request again
        assert types(forge.events(installation)) == ["ForgeInstalled"]
        installed = forge.events(installation)[0]
        assert installed.data.installation_id == installation.installation_id  # type: ignore[union-attr]
        assert installed.data.cloud_id == installation.cloud_id  # type: ignore[union-attr]
        assert installed.data.product == "jira"  # type: ignore[union-attr]
        assert installed.metadata.jti == first.claims["jti"]
        assert installed.metadata.trace_id == first.headers["x-b3-traceid"]

        # A major upgrade whose first attempt was lost: the retry lands first.
        installation.app_version = "2.0.0"
        upgrade = platform.upgraded(installation)
        assert forge.send(platform.retry(upgrade, 1, "TIMEOUT")).status_code == 204
        assert forge.send(upgrade).status_code == 204
        events = forge.events(installation)
        assert types(events) == ["ForgeInstalled", "ForgeUpgraded"]
        assert events[-1].metadata.retry_count == 1
        assert events[-1].metadata.retry_reason == "TIMEOUT"

        # The same body, but the token's license changed: recorded.
        installation.license = {"isActive": False, "type": "commercial", "isEvaluation": False}
        assert forge.send(platform.upgraded(installation)).status_code == 204
        assert types(forge.events(installation))[-1] == "ForgeLicenseChanged"

        # Key rotation: tokens signed by the other published key verify.
        platform.rotate()
        assert forge.send(platform.installed(installation)).status_code == 204
        assert types(forge.events(installation))[-1] == "ForgeInstallConfirmed"

        pre = platform.pre_uninstall(installation)
        assert forge.send(pre).status_code == 204
        assert forge.send(platform.retry(pre)).status_code == 204
        events = forge.events(installation)
        assert types(events)[-1] == "ForgeUninstalling"
        assert types(events).count("ForgeUninstalling") == 1
        assert events[-1].metadata.context_token_sha256 is not None
        assert len({e.metadata.call_id for e in events}) == len(events)

        metrics = forge.service.client.get("/metrics").text
        assert 'endpoint="forge/installed",outcome="accepted",status="204"' in metrics
        assert 'endpoint="forge/installed",outcome="duplicate",status="204"' in metrics
        assert 'endpoint="forge/pre-uninstall",outcome="accepted",status="204"' in metrics


def test_pre_uninstall_of_an_installation_never_seen(store_url: str) -> None:
    with forge_service(store_url) as forge:
        installation = ForgeInstallation()
        assert forge.send(forge.platform.pre_uninstall(installation)).status_code == 204
        events = forge.events(installation)
        assert types(events) == ["ForgeInstalled", "ForgeUninstalling"]
        assert events[0].data.cloud_id == installation.cloud_id  # type: ignore[union-attr]
        assert events[0].metadata.call_id == events[1].metadata.call_id


def test_a_jwks_outage_is_503_with_retry_after(store_url: str) -> None:
    with forge_service(store_url) as forge:
        forge.jwks.set_mode("error")
        installation = ForgeInstallation()
        response = forge.send(forge.platform.installed(installation))
        assert refusal(response) == (503, "jwks_unavailable")
        assert int(response.headers["Retry-After"]) > 0
        assert forge.events(installation) == []
        assert forge.rejections()[0]["reason"] == "jwks_unavailable"


def test_no_token_or_secret_reaches_a_log_an_answer_or_an_export(store_url: str) -> None:
    with forge_service(store_url) as forge:
        platform = forge.platform
        installation = ForgeInstallation()
        calls = [
            platform.installed(installation),
            platform.installed(installation, kid="unknown"),  # refused
            platform.upgraded(installation, alg="HS256"),  # refused
            platform.pre_uninstall(installation),
        ]
        calls.append(platform.retry(calls[-1]))
        for call in calls:
            forge.send(call)
        secrets_sent: list[str] = []
        for call in calls:
            secrets_sent.append(call.token)
            secrets_sent.append(call.headers["x-forge-oauth-system"])
            secrets_sent.extend(call.token.split("."))  # no part of one either
            if "contextToken" in call.payload:
                secrets_sent.append(call.payload["contextToken"])
        service = forge.service
        seen = [
            service.logs.getvalue(),
            service.admin("/admin/events", limit=1000).text,
            service.admin("/admin/rejections").text,
            json.dumps([e.as_dict() for e in service.store.read_all()]),
        ]
        for text in seen:
            for secret in secrets_sent:
                assert secret not in text
        assert "body_token_mismatch" not in seen[2]  # sanity: the refusals were others
        assert "unknown_kid" in seen[2] and "unsupported_alg" in seen[2]


def test_store_unavailable_is_503_and_nothing_half_stored(postgres_databases: Any) -> None:
    """Rule 7: the database refuses connections; the retry after it returns is stored once."""
    import time

    import psycopg

    url = postgres_databases.create()
    name = url.rsplit("/", 1)[1]
    with forge_service(url) as forge:
        installation = ForgeInstallation()
        call = forge.platform.pre_uninstall(installation)  # two events in one call
        with psycopg.connect(postgres_databases.admin_url, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name]
            )
            try:
                response = forge.send(call)
                assert refusal(response) == (503, "store_unavailable")
                assert int(response.headers["Retry-After"]) > 0
            finally:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        deadline = time.monotonic() + 30
        while forge.service.client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the service did not become ready again"
            time.sleep(0.2)
        assert forge.send(forge.platform.retry(call)).status_code == 204
        with open_store(url) as check:  # the harness's own connections were terminated
            stream = check.read_stream(installation_stream_id(installation.installation_id))
        assert types(stream) == ["ForgeInstalled", "ForgeUninstalling"]


def test_hostile_bodies_and_headers_never_get_a_500_or_a_redirect(store_url: str) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=10,
    )
    with forge_service(store_url) as forge:
        installation = ForgeInstallation()
        good = forge.platform.installed(installation)

        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        @given(
            route=st.sampled_from(["installed", "upgraded", "pre-uninstall"]),
            body=st.one_of(
                st.binary(max_size=200),
                json_values.map(lambda v: json.dumps(v).encode()),
                st.just(json.dumps({"payload": {"retryContext": "x"}}).encode()),
            ),
            authorization=st.one_of(
                st.just(good.headers["Authorization"]),
                # What an HTTP client can send: no leading or trailing whitespace.
                st.text(
                    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60
                ).map(str.strip),
            ),
        )
        def probe(route: str, body: bytes, authorization: str) -> None:
            response = forge.service.client.post(
                f"/forge/{route}",
                content=body,
                headers={"Content-Type": "application/json", "Authorization": authorization},
            )
            assert response.status_code in (204, 400, 401, 413), response.text
            if response.status_code != 204:
                assert set(response.json()) == {"error", "detail"}

        probe()
        assert all(e.type.startswith("Forge") for e in forge.service.store.read_all())
