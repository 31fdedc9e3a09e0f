"""FIT verification, body-against-token checks and delivery identity: pure, plain values."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.forge.body import (
    BodyError,
    check_body,
    claimed_installation,
    delivery_sha256,
    facts_of,
    parse_forge_body,
)
from app.ingest.forge.tokens import (
    LICENSE_KEYS,
    ForgeToken,
    TokenError,
    claimed_identity,
    read_fit,
    verify_fit,
)
from app.sim.forge import ForgeInstallation, ForgePlatform, license_2026
from eventstore import ids

PLATFORM = ForgePlatform()
# Any JSON value (as a token's claims can hold), kept small.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
LICENSE_FIELDS = (
    "active",
    "isActive",
    "type",
    "isEvaluation",
    "trialEndDate",
    "subscriptionEndDate",
    "billingPeriod",
    "capabilitySet",
    "ccpEntitlementId",
    "ccpEntitlementSlug",
    "modes",
    "supportEntitlementNumber",
)
OTHER = ForgePlatform()  # another Forge app, with keys of its own
NOW = 1_800_000_000
LEEWAY = 30


def key_of(platform: ForgePlatform, index: int = 0) -> Any:
    return platform.keys[index][1].public_key()


def token_for(claims: dict[str, Any], **options: Any) -> str:
    return PLATFORM.sign(claims, **options)


def claims(installation: ForgeInstallation | None = None, **changes: Any) -> dict[str, Any]:
    out = PLATFORM.claims(installation or ForgeInstallation(), iat=NOW)
    for name, value in changes.items():
        if value is None:
            out.pop(name, None)
        else:
            out[name] = value
    return out


def verify(token: str, *, app_id: str = PLATFORM.app_id, key: Any = None) -> ForgeToken:
    return verify_fit(
        read_fit(token), key or key_of(PLATFORM), app_id=app_id, now=NOW, leeway=LEEWAY
    )


def refused(token: str, **options: Any) -> str:
    with pytest.raises(TokenError) as raised:
        verify(token, **options)
    return raised.value.code


# ------------------------------------------------------------------ ids


def test_ids_in_both_spellings() -> None:
    u = str(uuid.uuid4())
    assert ids.installation_uuid(u) == u
    assert ids.installation_uuid(u.upper()) == u
    assert ids.installation_uuid(ids.installation_ari(u)) == u
    assert ids.installation_uuid(ids.app_ari(u)) is None  # an app is no installation
    assert ids.installation_uuid_from_ari(u) is None  # the token must use the ARI
    assert ids.app_uuid(ids.app_ari(u)) == u and ids.app_uuid(u) == u
    assert ids.installation_uuid("ari:cloud:ecosystem::installation/not-a-uuid") is None
    assert ids.installation_uuid(42) is None
    assert ids.site_of(f"ari:cloud:confluence::site/{u}") == ("confluence", u)
    assert ids.site_of(f"ari:cloud:jira::workspace/{u}") is None


@given(st.uuids())
def test_every_uuid_round_trips_through_its_ari(value: uuid.UUID) -> None:
    text = str(value)
    assert ids.installation_uuid(ids.installation_ari(text.upper())) == text
    assert ids.app_uuid(ids.app_ari(text)) == text


# ------------------------------------------------------------------ header (rule 3)


def test_a_good_token_gives_its_facts() -> None:
    installation = ForgeInstallation(app_version="2.3.0")
    facts = verify(token_for(claims(installation)))
    assert facts.installation_id == installation.installation_id
    assert facts.app_id == PLATFORM.app_id
    assert facts.app_version == "2.3.0"
    assert facts.environment_type == "PRODUCTION"
    assert facts.cloud_ids == (installation.cloud_id,)
    license = installation.license
    assert license is not None and "isActive" not in license  # the 2026 layout
    assert facts.license == {
        "active": True,
        "type": "commercial",
        "evaluation": False,
        "trial_end": None,
        "subscription_end": "2027-01-01T00:00:00.000Z",
        "billing_period": "ANNUAL",
        "capability_set": "capabilityStandard",
        "entitlement_id": license["ccpEntitlementId"],
        "entitlement_slug": "E-3SH-1A6-33A-AS0",
        "modes": ["USER_ACCESS"],
    }
    assert facts.jti and facts.kid == PLATFORM.kid


# ------------------------------------------------------- app.license (SPEC §10 License)

# Atlassian's License API documents the license record (``/forge/app/v1/license``,
# the fields Forge puts in the token's ``app.license`` since 17 October 2026), example
# verbatim in shape: ``active`` replaced ``isActive``; end dates are date-time text or
# null; ``supportEntitlementNumber`` is not one of the facts the ledger records.
DOCUMENTED_LICENSE: dict[str, Any] = {
    "active": True,
    "type": "commercial",
    "isEvaluation": False,
    "trialEndDate": None,
    "subscriptionEndDate": "2027-01-01T00:00:00.000Z",
    "billingPeriod": "ANNUAL",
    "supportEntitlementNumber": "SEN-12345678",
    "ccpEntitlementId": "ent-abc123",
    "ccpEntitlementSlug": "my-app-commercial",
    "capabilitySet": "capabilityAdvanced",
}


def license_of(license: object) -> dict[str, Any] | None:
    """What a verified token signed by the simulator records for ``license``."""
    installation = ForgeInstallation()
    out = claims(installation)
    out["app"]["license"] = license
    return verify(token_for(out)).license


def test_the_documented_2026_license_is_read_field_by_field() -> None:
    assert license_of(DOCUMENTED_LICENSE) == {
        "active": True,
        "type": "commercial",
        "evaluation": False,
        "trial_end": None,
        "subscription_end": "2027-01-01T00:00:00.000Z",
        "billing_period": "ANNUAL",
        "capability_set": "capabilityAdvanced",
        "entitlement_id": "ent-abc123",
        "entitlement_slug": "my-app-commercial",
        "modes": None,
    }


def test_the_simulator_signs_the_documented_layout() -> None:
    """Documentation wins over our simulator: its license has exactly the documented
    keys (plus ``modes``), ``active`` and no ``isActive``, each of the documented type."""
    license = ForgeInstallation().license
    assert license is not None
    assert set(license) == set(DOCUMENTED_LICENSE) | {"modes"}
    for name, documented in DOCUMENTED_LICENSE.items():
        if documented is not None:
            assert type(license[name]) is type(documented), name
    signed = PLATFORM.claims(ForgeInstallation(), iat=NOW)["app"]["license"]
    assert "isActive" not in signed and signed["active"] is True


@pytest.mark.parametrize(
    ("license", "active"),
    [
        ({"active": False, "isActive": True}, False),  # active wins over isActive
        ({"active": True, "isActive": False}, True),
        ({"isActive": True}, True),  # a token from before 17 October 2026
        ({"isActive": False}, False),
        ({"active": None, "isActive": True}, None),  # active present (null): no fallback
        ({}, None),
    ],
)
def test_is_active_is_read_only_when_active_is_absent(
    license: dict[str, Any], active: bool | None
) -> None:
    facts = license_of(license)
    assert facts is not None and facts["active"] == active


def test_no_license_object_is_no_license_facts() -> None:
    assert license_of(None) is None
    out = claims(ForgeInstallation())
    del out["app"]["license"]
    assert verify(token_for(out)).license is None
    assert license_of("commercial") is None  # not an object: no facts, never refused


def test_odd_license_values_are_recorded_as_their_json_text() -> None:
    facts = license_of(license_2026(odd=True))
    assert facts == {
        "active": True,
        "type": "COMMERCIAL",
        "evaluation": '"NULL"',  # the getAppContext example's value: text, not a bool
        "trial_end": "1989949707000",
        "subscription_end": "1689949707000",  # a number: its JSON text
        "billing_period": None,
        "capability_set": '{"name":"capabilityAdvanced"}',
        "entitlement_id": "NULL",
        "entitlement_slug": "E-3SH-1A6-33A-AS0",
        "modes": '"USER_ACCESS"',
    }
    assert license_of({"active": 1, "modes": ["A", 2]}) == {
        **dict.fromkeys(facts, None),
        "active": "1",
        "modes": '["A",2]',
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(LICENSE_FIELDS), JSON_VALUES, max_size=12))
def test_any_json_in_any_license_field_is_read(license: dict[str, Any]) -> None:
    facts = license_of(license)
    assert facts is not None and set(facts) == set(LICENSE_KEYS)
    for value in facts.values():
        assert value is None or isinstance(value, bool | str | list)


@pytest.mark.parametrize("alg", ["HS256", "none", "RS512", "ES256"])
def test_only_rs256(alg: str) -> None:
    with pytest.raises(TokenError) as raised:
        read_fit(token_for(claims(), alg=alg))
    assert raised.value.code == "unsupported_alg"


@pytest.mark.parametrize("kid", ["", "x" * 257, "caf\u00e9", "tab\there", "nl\n"])
def test_kid_must_be_printable_ascii_up_to_256(kid: str) -> None:
    with pytest.raises(TokenError) as raised:
        read_fit(token_for(claims(), kid=kid))
    assert raised.value.code == "invalid_kid"


@pytest.mark.parametrize("kid", ["a", "x" * 256, "../../etc/passwd", "key id with spaces", "%2e"])
def test_any_printable_kid_is_only_a_lookup_key(kid: str) -> None:
    assert read_fit(token_for(claims(), kid=kid)).kid == kid


@pytest.mark.parametrize("token", ["", "a.b", "a.b.c.d", "!!!.x.y", "e30.e30.AA="])
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenError) as raised:
        read_fit(token)
    assert raised.value.code == "malformed_token"


# ------------------------------------------------------------------ claims (rule 4)


def test_signature_by_another_key() -> None:
    assert refused(token_for(claims()), key=key_of(OTHER)) == "bad_signature"
    assert refused(token_for(claims()), key=key_of(PLATFORM, 1)) == "bad_signature"


def test_a_token_of_another_forge_app_fails() -> None:
    # Correctly signed by Forge, but for another app: the mistake a review found.
    theirs = OTHER.claims(ForgeInstallation(), iat=NOW)
    assert refused(PLATFORM.sign(theirs)) == "aud_mismatch"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"iss": "someone-else"}, "iss_mismatch"),
        ({"iss": None}, "iss_mismatch"),
        ({"aud": None}, "aud_mismatch"),
        ({"aud": [PLATFORM.app_ari]}, "aud_mismatch"),
        ({"aud": PLATFORM.app_id}, "aud_mismatch"),  # the ARI, not the bare id
        ({"exp": None}, "missing_claim"),
        ({"exp": "soon"}, "invalid_claim"),
        ({"exp": True}, "invalid_claim"),
        ({"exp": NOW - LEEWAY}, "token_expired"),
        ({"nbf": NOW + LEEWAY + 1}, "token_not_yet_valid"),
        ({"iat": NOW + LEEWAY + 1}, "token_not_yet_valid"),
        ({"nbf": "later"}, "invalid_claim"),
        ({"app": None}, "missing_claim"),
        ({"app": "x"}, "missing_claim"),
    ],
)
def test_claim_rules(change: dict[str, Any], code: str) -> None:
    assert refused(token_for(claims(**change))) == code


def test_time_rules_allow_the_leeway() -> None:
    assert verify(token_for(claims(exp=NOW - LEEWAY + 1, nbf=NOW + LEEWAY, iat=NOW + LEEWAY)))
    assert verify(token_for(claims(nbf=None, iat=None)))


def test_the_app_id_in_the_token_must_be_its_audience() -> None:
    body = claims()
    body["app"]["id"] = OTHER.app_ari
    assert refused(token_for(body)) == "app_mismatch"
    body["app"]["id"] = PLATFORM.app_id  # the bare UUID of the same app: the same app
    assert verify(token_for(body)).app_id == PLATFORM.app_id


@pytest.mark.parametrize(
    "value", [None, "", "not-an-ari", str(uuid.uuid4()), f"ari:cloud:ecosystem::app/{uuid.uuid4()}"]
)
def test_the_installation_must_be_an_installation_ari(value: Any) -> None:
    body = claims()
    body["app"]["installationId"] = value
    assert refused(token_for(body)) == "invalid_installation"


def test_the_configured_app_may_be_an_ari() -> None:
    assert verify(token_for(claims()), app_id=PLATFORM.app_id.upper())


def test_claimed_identity_reads_an_unverified_token() -> None:
    installation = ForgeInstallation()
    token = OTHER.sign(OTHER.claims(installation, iat=NOW))
    assert claimed_identity(token) == (installation.installation_id, installation.cloud_id)
    assert claimed_identity("garbage") == (None, None)
    assert claimed_identity(None) == (None, None)


# ------------------------------------------------------------------ body (rules 1, 5)


def body_of(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_body_rules() -> None:
    assert parse_forge_body(b"{}", "application/json; charset=utf-8").fields == {}
    for raw, ctype, code in [
        (b"{}", "text/plain", "unsupported_media_type"),
        (b"{", "application/json", "malformed_json"),
        (b"[]", "application/json", "not_an_object"),
        (b" " * (64 * 1024 + 1), "application/json", "body_too_large"),
        (body_of({"payload": {"retryContext": 3}}), "application/json", "invalid_field"),
    ]:
        with pytest.raises(BodyError) as raised:
            parse_forge_body(raw, ctype)
        assert raised.value.code == code
        assert raised.value.status == (413 if code == "body_too_large" else 400)


def test_a_retry_envelope_is_unwrapped() -> None:
    retry = {"retryCount": 2, "retryReason": "TIMEOUT"}
    inside = parse_forge_body(
        body_of({"payload": {"id": "x", "retryContext": retry}}), "application/json"
    )
    beside = parse_forge_body(
        body_of({"payload": {"id": "x"}, "retryContext": retry}), "application/json"
    )
    assert inside.fields == beside.fields == {"id": "x"}
    assert inside.retry_context == beside.retry_context == retry
    # "payload" beside other fields is an ordinary field, not an envelope.
    plain = parse_forge_body(body_of({"payload": {"a": 1}, "id": "x"}), "application/json")
    assert plain.retry_context is None and "payload" in plain.fields


def sample() -> tuple[ForgeInstallation, ForgeToken, dict[str, Any]]:
    installation = ForgeInstallation()
    token = verify(token_for(claims(installation)))
    return installation, token, PLATFORM.installed(installation).payload


def test_installed_body_must_name_the_tokens_installation() -> None:
    installation, token, body = sample()
    assert check_body("installed", body, token) is None
    assert (
        check_body("installed", {**body, "id": installation.installation_id.upper()}, token) is None
    )
    assert check_body("upgraded", {k: v for k, v in body.items() if k != "id"}, token)
    assert check_body("installed", {**body, "id": str(uuid.uuid4())}, token)
    assert check_body("installed", {**body, "app": {"id": OTHER.app_ari}}, token)
    assert check_body("installed", {**body, "app": {"name": "no id: fine"}}, token) is None
    other_site = f"ari:cloud:jira::site/{uuid.uuid4()}"
    assert check_body("installed", {**body, "context": other_site}, token)


def test_pre_uninstall_body() -> None:
    installation, token, _ = sample()
    body = PLATFORM.pre_uninstall(installation).payload
    assert check_body("pre-uninstall", body, token) is None
    assert check_body("pre-uninstall", {**body, "id": str(uuid.uuid4())}, token)
    assert check_body("pre-uninstall", {**body, "context": {"cloudId": str(uuid.uuid4())}}, token)
    facts = facts_of("pre-uninstall", body, token)
    assert facts.cloud_id == installation.cloud_id and facts.site_ari is None


def test_a_site_is_checked_only_when_the_token_lists_contexts() -> None:
    installation = ForgeInstallation()
    plain = claims(installation)
    del plain["app"]["installation"]
    token = verify(token_for(plain))
    body = PLATFORM.installed(installation).payload
    assert (
        check_body("installed", {**body, "context": f"ari:cloud:jira::site/{uuid.uuid4()}"}, token)
        is None
    )


# ------------------------------------------------------------------ delivery (rule 6)


def test_a_retry_is_the_same_delivery_and_a_new_fact_is_not() -> None:
    installation, token, body = sample()
    again = verify(PLATFORM.sign({**claims(installation), "jti": "another"}))
    first = delivery_sha256("installed", body, token)
    assert delivery_sha256("installed", body, again) == first
    # The body naming the installation by its bare UUID is the same delivery.
    bare = {
        **body,
        "id": installation.installation_id,
        "app": {**body["app"], "id": PLATFORM.app_id},
    }
    assert delivery_sha256("installed", bare, token) == first
    assert delivery_sha256("upgraded", body, token) != first
    installation.license = license_2026(active=False)
    assert delivery_sha256("installed", body, verify(token_for(claims(installation)))) != first
    installation.license = None
    installation.app_version = "9.0.0"
    assert delivery_sha256("installed", body, verify(token_for(claims(installation)))) != first


def test_a_new_context_token_is_the_same_pre_uninstall() -> None:
    installation, token, _ = sample()
    one = PLATFORM.pre_uninstall(installation).payload
    two = PLATFORM.pre_uninstall(installation).payload
    assert one["contextToken"] != two["contextToken"]
    assert delivery_sha256("pre-uninstall", one, token) == delivery_sha256(
        "pre-uninstall", two, token
    )


def test_claimed_installation_of_a_refused_body() -> None:
    u, cloud = str(uuid.uuid4()), str(uuid.uuid4())
    assert claimed_installation(
        body_of({"id": ids.installation_ari(u), "context": f"ari:cloud:jira::site/{cloud}"})
    ) == (u, cloud)
    assert claimed_installation(body_of({"payload": {"context": {"cloudId": cloud}}})) == (
        None,
        cloud,
    )
    assert claimed_installation(b"not json") == (None, None)


def test_the_forge_settings() -> None:
    from pydantic import ValidationError

    from app.settings import Settings

    u = str(uuid.uuid4())
    assert Settings(forge_app_id=ids.app_ari(u)).forge_app_uuid == u
    assert Settings(forge_app_id=u.upper()).forge_app_uuid == u
    assert Settings(forge_app_id="  ").forge_app_uuid is None
    assert Settings().forge_app_uuid is None
    with pytest.raises(ValidationError):
        Settings(forge_app_id=ids.installation_ari(u))
    assert Settings(forge_jwks_urls="https://a/j.json, ,https://b/j.json").forge_jwks_url_list == (
        "https://a/j.json",
        "https://b/j.json",
    )


SIGNED = {"installation": ForgeInstallation()}


@given(
    st.sampled_from(["aud", "iss", "app.id", "app.installationId"]),
    st.one_of(st.text(max_size=80), st.integers(), st.none(), st.uuids().map(str)),
)
def test_no_other_value_of_an_identity_claim_verifies(name: str, value: Any) -> None:
    """Whatever else an attacker puts in aud, iss, app.id or app.installationId fails."""
    body = claims(SIGNED["installation"])
    good = {
        "aud": body["aud"],
        "iss": body["iss"],
        "app.id": body["app"]["id"],
        "app.installationId": body["app"]["installationId"],
    }[name]
    if ids.app_uuid(value) == ids.app_uuid(good) and name in ("app.id",):
        return  # the same app in its other spelling
    if value == good:
        return
    if name.startswith("app."):
        body["app"][name[4:]] = value
    else:
        body[name] = value
    with pytest.raises(TokenError):
        verify(token_for(body))
