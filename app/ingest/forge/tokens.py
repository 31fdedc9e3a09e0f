"""Verification of Forge Invocation Tokens (SPEC §10 rules 2-4). Pure: no I/O, no clock.

The algorithm is pinned here (RS256), never read from the token as a choice; the
``kid`` is only a key into the fetched JWKS documents (see ``app.ingest.forge.keys``), never
part of a URL, so any printable ASCII up to 256 characters is acceptable. The
token is parsed by the same strict parser as Connect tokens (``app.ingest.connect.tokens``): one
spelling per token, so its SHA-256 identifies it.

No message raised from here contains the token or a claim value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import RSAAlgorithm

from app.ingest.jwt import ParsedToken, TokenError, numeric_claim, parse_token
from eventstore.events import canonical_json
from eventstore.ids import app_uuid, installation_uuid_from_ari, normalise_cloud_id

__all__ = [
    "FIT_ISSUER",
    "LICENSE_KEYS",
    "ForgeToken",
    "ParsedFit",
    "TokenError",
    "claimed_identity",
    "license_facts",
    "read_fit",
    "verify_fit",
]

FIT_ISSUER: Final = "forge/invocation-token"
KID: Final = re.compile(r"[\x20-\x7e]{1,256}")
_RS256: Final = RSAAlgorithm(RSAAlgorithm.SHA256)


@dataclass(frozen=True, slots=True)
class ParsedFit:
    """A token whose shape and header are acceptable; nothing in it is trusted yet."""

    kid: str
    sha256: str
    claims: Mapping[str, Any]
    parsed: ParsedToken


@dataclass(frozen=True, slots=True)
class ForgeToken:
    """The facts of a verified FIT. Ids are bare lower-case UUIDs."""

    sha256: str
    kid: str
    app_id: str
    installation_id: str
    app_version: str | None
    environment_id: str | None
    environment_type: str | None
    license: dict[str, Any] | None
    cloud_ids: tuple[str, ...]
    jti: str | None
    iat: int | None
    exp: int
    # The account the invocation is for (the token's ``principal``), when it names one.
    principal: str | None = None


def read_fit(token: str) -> ParsedFit:
    """Parse; the header must say RS256 and carry a usable kid. Raises TokenError."""
    parsed = parse_token(token)
    if parsed.token.alg != "RS256":
        raise TokenError("unsupported_alg", "Forge Invocation Tokens are RS256 only")
    kid = parsed.token.kid
    if kid is None or KID.fullmatch(kid) is None:
        raise TokenError("invalid_kid", "the token's kid is missing or not 1-256 printable ASCII")
    return ParsedFit(kid, parsed.token.sha256, parsed.token.claims, parsed)


def verify_fit(
    fit: ParsedFit, key: RSAPublicKey, *, app_id: str, now: int, leeway: int
) -> ForgeToken:
    """Signature, then the claims of rule 4, first failure wins. ``app_id`` is a UUID."""
    if not _RS256.verify(fit.parsed.signing_input, key, fit.parsed.signature):
        raise TokenError("bad_signature", "the signature does not verify with the JWKS key")
    claims = fit.claims
    if claims.get("iss") != FIT_ISSUER:
        raise TokenError("iss_mismatch", "the token's iss is not forge/invocation-token")
    aud = claims.get("aud")
    if not isinstance(aud, str) or not aud.startswith("ari:") or app_uuid(aud) != app_id.lower():
        raise TokenError("aud_mismatch", "the token is not for this app")
    exp = _time(claims, "exp", required=True)
    assert exp is not None
    if exp <= now - leeway:
        raise TokenError("token_expired", "the token's exp has passed")
    for name in ("nbf", "iat"):
        at = _time(claims, name, required=False)
        if at is not None and at > now + leeway:
            raise TokenError("token_not_yet_valid", f"the token's {name} is in the future")
    app = claims.get("app")
    if not isinstance(app, dict):
        raise TokenError("missing_claim", "the token has no app claim")
    if app_uuid(app.get("id")) != app_id.lower():
        raise TokenError("app_mismatch", "the token's app.id is not its aud")
    installation = installation_uuid_from_ari(app.get("installationId"))
    if installation is None:
        raise TokenError("invalid_installation", "app.installationId is not an installation ARI")
    return _facts(fit, app, installation, exp)


def _time(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    if name not in claims:
        if required:
            raise TokenError("missing_claim", f"the token has no {name} claim")
        return None
    value = numeric_claim(claims[name])
    if value is None:
        raise TokenError("invalid_claim", f"the {name} claim is not a number")
    return int(value)


def _text(value: object, limit: int = 256) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= limit:
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)  # an app version sent as a number
    return None


def _facts(fit: ParsedFit, app: Mapping[str, Any], installation: str, exp: int) -> ForgeToken:
    environment = app.get("environment")
    environment = environment if isinstance(environment, dict) else {}
    iat = numeric_claim(fit.claims.get("iat"))
    return ForgeToken(
        sha256=fit.sha256,
        kid=fit.kid,
        app_id=app_uuid(app.get("id")) or "",
        installation_id=installation,
        app_version=_text(app.get("appVersion", app.get("version"))),
        environment_id=_text(environment.get("id")),
        environment_type=_text(environment.get("type")),
        license=license_facts(app.get("license")),
        cloud_ids=_cloud_ids(app.get("installation")),
        jti=_text(fit.claims.get("jti")),
        iat=int(iat) if iat is not None else None,
        exp=exp,
        principal=_text(fit.claims.get("principal")),
    )


def _cloud_ids(installation: object) -> tuple[str, ...]:
    """``app.installation.contexts[].cloudId``; () when the token lists no contexts."""
    if not isinstance(installation, dict):
        return ()
    contexts = installation.get("contexts")
    if not isinstance(contexts, list):
        return ()
    found = (c.get("cloudId") for c in contexts if isinstance(c, dict))
    return tuple(sorted({normalise_cloud_id(c) for c in found if isinstance(c, str) and c}))


# The token's ``app.license`` (SPEC §10, Forge's 2026 layout) in the ledger's names,
# with the JSON type Atlassian documents for each field. ``active`` replaced the
# deprecated ``isActive`` (removed from tokens after 17 October 2026): ``isActive`` is
# read only when ``active`` is absent. ``modes`` (license modes, e.g. user access) is a
# list of strings.
_LICENSE_FIELDS: Final[tuple[tuple[str, str, type], ...]] = (
    ("active", "active", bool),
    ("type", "type", str),
    ("evaluation", "isEvaluation", bool),
    ("trial_end", "trialEndDate", str),
    ("subscription_end", "subscriptionEndDate", str),
    ("billing_period", "billingPeriod", str),
    ("capability_set", "capabilitySet", str),
    ("entitlement_id", "ccpEntitlementId", str),
    ("entitlement_slug", "ccpEntitlementSlug", str),
    ("modes", "modes", list),
)
LICENSE_KEYS: Final = tuple(ours for ours, _, _ in _LICENSE_FIELDS)


def _license_value(value: object, expected: type) -> Any:
    """The value when it has its documented type (or is null); otherwise its JSON
    text, so an odd value is kept as evidence, never refused, never a crash later."""
    if value is None:
        return None
    if expected is list:
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
    elif isinstance(value, expected):
        return value
    return canonical_json(value).decode()


def license_facts(value: object) -> dict[str, Any] | None:
    """The token's ``app.license`` in the ledger's names; None when the token has no
    license object ("no license facts", never "unlicensed"). Every key is present
    (None when the token omits the field)."""
    if not isinstance(value, dict):
        return None
    out: dict[str, Any] = {}
    for ours, theirs, expected in _LICENSE_FIELDS:
        item = value.get(theirs)
        if ours == "active" and "active" not in value:
            item = value.get("isActive")
        out[ours] = _license_value(item, expected)
    return out


def claimed_identity(token: str | None) -> tuple[str | None, str | None]:
    """(installation UUID, cloudId) that an unverified token *claims*, for the
    rejection log only; (None, None) when it cannot be read."""
    if not token:
        return None, None
    try:
        claims = parse_token(token).token.claims
    except TokenError:
        return None, None
    app = claims.get("app")
    if not isinstance(app, dict):
        return None, None
    clouds = _cloud_ids(app.get("installation"))
    return installation_uuid_from_ari(app.get("installationId")), clouds[0] if clouds else None
