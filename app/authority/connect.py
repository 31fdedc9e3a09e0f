"""``/auth/connect/verify`` and ``/auth/connect/sign`` (SPEC §11) as decisions. Pure but for
opening the tenant's sealed secret with the key ring (no I/O: the wrapped data key is
held in memory).

verify: a request an Atlassian site sent to the app, checked as SPEC §4 rule 4 checks an
HS256 lifecycle call, by the same code (``verify_shared_secret_token``): HS256 only,
the tenant its ``iss`` names, that tenant's current secret, ``exp``/``iat`` with the
leeway, and ``qsh`` equal to the hash of (method, url) relative to the current or a
previous app base URL, or exactly ``context-qsh`` for ``AP.context.getToken()`` tokens.

sign: a request the app makes to a tenant's site, signed with the tenant's current
secret; only for a URL under the tenant's base URL (``app.authority.urls``).

Every refusal is an ``AuthRefused`` (status, code, words). No answer, refusal or
message holds a secret or the token.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

import jwt

from app.authority.urls import METHODS, UrlRefused, app_request, site_request
from app.authority.view import TenantView
from app.ingest.connect.tokens import AppBase, query_string_hash, verify_shared_secret_token
from app.ingest.jwt import TokenError, parse_token
from eventstore.clock import format_timestamp
from eventstore.crypto import CryptoError, KeyRing, MasterKeyUnavailable, open_secret, secret_ad

log = logging.getLogger("ledger.authority")

CONTEXT_QSH: Final = "context-qsh"
DEFAULT_EXPIRES_IN: Final = 180
EXPIRES_RANGE: Final = (30, 600)
LICENSES: Final = frozenset({"active", "none"})
# SPEC §11 names these refusals; the ingestion's token codes map onto them.
_TOKEN_CODES: Final = {"qsh_mismatch": "bad_qsh", "token_expired": "expired"}

Route = Literal["verify", "sign"]
# A tenant problem's status by route: verify refuses the caller's request (401), sign
# names a tenant that cannot be signed for (404/409).
_TENANT_STATUS: Final[dict[str, dict[Route, int]]] = {
    "unknown_tenant": {"verify": 401, "sign": 404},
    "tenant_uninstalled": {"verify": 401, "sign": 409},
    "no_shared_secret": {"verify": 401, "sign": 409},
}


class AuthRefused(Exception):
    def __init__(
        self, status: int, code: str, detail: str, client_key: str | None = None,
        retry_after: int | None = None,
    ) -> None:  # fmt: skip
        super().__init__(code)
        self.status, self.code, self.detail = status, code, detail
        self.client_key, self.retry_after = client_key, retry_after


@dataclass(frozen=True, slots=True)
class Tenants:
    """What a decision reads of the directory: a tenant's view and its wrapped data key."""

    views: Mapping[str, TenantView]
    data_keys: Mapping[str, bytes]


def _tenant_problem(route: Route, code: str, detail: str, client_key: str) -> AuthRefused:
    return AuthRefused(_TENANT_STATUS[code][route], code, detail, client_key)


def current_secret(
    route: Route, client_key: str, tenants: Tenants, keyring: KeyRing, retry_after: int
) -> tuple[TenantView, str]:
    """The tenant and its current secret in plain text, or why there is none."""
    view = tenants.views.get(client_key)
    if view is None:
        raise _tenant_problem(
            route, "unknown_tenant", "the ledger holds no such tenant", client_key
        )
    if not view.installed:
        raise _tenant_problem(route, "tenant_uninstalled", "the tenant is uninstalled", client_key)
    wrapped = tenants.data_keys.get(view.stream_id)
    if view.forgotten or view.secret is None or wrapped is None:
        raise _tenant_problem(
            route,
            "no_shared_secret",
            "the ledger holds no readable secret for this tenant",
            client_key,
        )
    try:
        key = keyring.unwrap(view.stream_id, wrapped)
    except MasterKeyUnavailable:
        raise AuthRefused(
            503, "master_key_unavailable", "the master key of this tenant is not configured; retry later",
            client_key, retry_after,
        ) from None  # fmt: skip
    except CryptoError:
        raise AuthRefused(
            503, "data_key_unreadable", "this tenant's data key cannot be read; retry later",
            client_key, retry_after,
        ) from None  # fmt: skip
    try:
        return view, open_secret(key, view.secret, secret_ad(view.stream_id, view.secret_version))
    except CryptoError:
        log.error(
            "the tenant's current secret does not open with its event's associated data",
            extra={"reason": "secret_unreadable", "client_key": client_key},
        )
        raise _tenant_problem(
            route,
            "no_shared_secret",
            "the ledger holds no readable secret for this tenant",
            client_key,
        ) from None


# --- request bodies -----------------------------------------------------------------


def _bad(detail: str) -> AuthRefused:
    return AuthRefused(400, "invalid_request", detail)


def _method(body: Mapping[str, Any], required: bool) -> str:
    method = body.get("method")
    if method is None and not required:
        return "GET"
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise _bad("method must be one of " + ", ".join(sorted(METHODS)))
    return method.upper()


def _optional_text(body: Mapping[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    return value


def _jwt_header(authorization: str | None, query: list[tuple[str, str]]) -> str:
    """The token: ``authorization`` (``JWT <token>``), else the url's ``jwt`` parameter."""
    if authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.upper() != "JWT" or not value.strip():
            raise AuthRefused(401, "missing_token", "authorization must be JWT <token>")
        return value.strip()
    values = [v for k, v in query if k == "jwt"]
    if len(values) != 1 or not values[0]:
        raise AuthRefused(401, "missing_token", "no token: give authorization or a jwt parameter")
    return values[0]


def _license(query: list[tuple[str, str]]) -> str | None:
    values = [v for k, v in query if k == "lic"]
    return values[0] if len(values) == 1 and values[0] in LICENSES else None


# --- verify ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verifying:
    """A verify request read: the token and the qsh it must carry for each base URL."""

    token: str
    bases: tuple[AppBase, ...]
    license: str | None


def read_verify(body: Mapping[str, Any], app_base_urls: tuple[str, ...]) -> Verifying:
    context = body.get("context", False)
    if not isinstance(context, bool):
        raise _bad("context must be true or false")
    authorization = _optional_text(body, "authorization")
    url = body.get("url")
    if context and url is None:
        return Verifying(
            _jwt_header(authorization, []),
            tuple(AppBase(base, CONTEXT_QSH) for base in app_base_urls),
            None,
        )
    method = _method(body, required=not context)
    try:
        request = app_request(method, url, app_base_urls)
    except UrlRefused as refused:
        raise AuthRefused(400, refused.code, refused.detail) from None
    bases = tuple(AppBase(b.url, CONTEXT_QSH) for b in request.bases) if context else request.bases
    return Verifying(_jwt_header(authorization, request.query), bases, _license(request.query))


def verify(
    verifying: Verifying,
    tenants: Tenants,
    keyring: KeyRing,
    *,
    now: int,
    leeway: int,
    retry_after: int,
) -> dict[str, Any]:
    """The answer for a genuine request; AuthRefused otherwise."""
    try:
        parsed = parse_token(verifying.token)
    except TokenError as error:
        raise AuthRefused(401, error.code, error.detail) from None
    if parsed.token.alg != "HS256":
        raise AuthRefused(401, "unsupported_alg", "only HS256 tokens are verified here")
    client_key = parsed.token.iss
    if client_key is None:
        raise AuthRefused(401, "missing_claim", "the token has no iss claim")
    view, secret = current_secret("verify", client_key, tenants, keyring, retry_after)
    current, *previous = verifying.bases
    try:
        verified = verify_shared_secret_token(
            parsed, secret, client_key=client_key, qsh=current.qsh, now=now, leeway=leeway,
            app_base_url=current.url, previous=previous,
        )  # fmt: skip
    except TokenError as error:
        code = _TOKEN_CODES.get(error.code, error.code)
        raise AuthRefused(401, code, error.detail, client_key) from None
    sub = parsed.token.claims.get("sub")
    return {
        "client_key": verified.iss,
        "account_id": sub if isinstance(sub, str) else None,
        "license": verifying.license,
        "expires_at": _timestamp(verified.exp),
        "tenant": view.answer,
    }


def _timestamp(seconds: int) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


# --- sign -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Signing:
    client_key: str
    method: str
    url: object
    expires_in: int


def read_sign(body: Mapping[str, Any]) -> Signing:
    client_key = body.get("client_key")
    if not isinstance(client_key, str) or not client_key or len(client_key) > 255:
        raise _bad("client_key must be a string of 1 to 255 characters")
    expires_in = body.get("expires_in", DEFAULT_EXPIRES_IN)
    low, high = EXPIRES_RANGE
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not low <= expires_in <= high
    ):
        raise _bad(f"expires_in must be a whole number of seconds from {low} to {high}")
    return Signing(client_key, _method(body, required=True), body.get("url"), expires_in)


def sign(
    signing: Signing, tenants: Tenants, keyring: KeyRing, *, app_key: str, now: int,
    retry_after: int,
) -> dict[str, Any]:  # fmt: skip
    """A token for the app's call to the tenant's site; AuthRefused otherwise."""
    view, secret = current_secret("sign", signing.client_key, tenants, keyring, retry_after)
    try:
        target = site_request(signing.url, view.row.base_url)
    except UrlRefused as refused:
        raise AuthRefused(400, refused.code, refused.detail, signing.client_key) from None
    exp = now + signing.expires_in
    claims = {
        "iss": app_key,
        "iat": now,
        "exp": exp,
        "qsh": query_string_hash(signing.method, target.path, target.query),
    }
    token = jwt.encode(claims, secret, algorithm="HS256")
    return {"url": target.url, "authorization": f"JWT {token}", "expires_at": _timestamp(exp)}
