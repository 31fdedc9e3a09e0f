"""Atlassian Connect's lifecycle tokens (SPEC §4 rules 3-4): the query string hash, the
``kid`` rule, the claims, and verification with the install key or the shared secret.

Pure functions: no I/O, no clock. The caller passes ``now`` and ``leeway`` so the
time rules are testable, and fetches RS256 keys itself (``app.ingest.connect.keys``).
Tokens are parsed strictly by ``app.ingest.jwt``, which both Connect and Forge use.

No message raised from here contains the token, a secret or a claim value.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit

import msgspec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from jwt.algorithms import HMACAlgorithm, RSAAlgorithm

from app.ingest.jwt import (
    ParsedToken,
    TokenError,
    load_rsa_public_key,
    parse_token,
    require_alg,
    required_claim,
    same_text,
    string_claim,
    time_claim,
)

KID_PATTERN: Final = re.compile(r"^[A-Za-z0-9._-]{1,128}$")



_RS256: Final = RSAAlgorithm(RSAAlgorithm.SHA256)



_HS256: Final = HMACAlgorithm(HMACAlgorithm.SHA256)



@dataclass(frozen=True, slots=True)
class VerifiedToken:
    alg: str
    kid: str | None
    iss: str
    iat: int
    exp: int
    sha256: str
    # The app base URL the token was verified against (SPEC §4 rule 3): the current one
    # or a previous one; None where no base URL was asked for.
    app_base_url: str | None = None



@dataclass(frozen=True, slots=True)
class AppBase:
    """An app base URL a request may have been signed for, and the request's query
    string hash relative to it (the path under a base URL depends on the base)."""

    url: str | None
    qsh: str



def _percent_encode(text: str) -> str:
    # RFC 3986: everything but the unreserved set A-Z a-z 0-9 - . _ ~ is encoded,
    # so a space becomes %20 (never '+') and '*' becomes %2A.
    return quote(text, safe="-._~", encoding="utf-8", errors="surrogatepass")



def _utf16_order(text: str) -> bytes:
    # The reference implementations (Java, JavaScript) sort strings by UTF-16 code
    # units; big-endian UTF-16 bytes compare in exactly that order, whereas Python's
    # code-point order differs for characters above U+FFFF.
    return text.encode("utf-16-be", errors="surrogatepass")



def canonical_query(params: Sequence[tuple[str, str]]) -> str:
    """Canonical query string of decoded ``(name, value)`` pairs, ``jwt`` excluded.

    Names and values are sorted decoded, then percent-encoded; several values of one
    name are joined by ``,`` (itself not encoded) and pairs by ``&``.
    """
    grouped: dict[str, list[str]] = {}
    for name, value in params:
        if name == "jwt":
            continue
        grouped.setdefault(name, []).append(value)
    return "&".join(
        _percent_encode(name)
        + "="
        + ",".join(_percent_encode(value) for value in sorted(grouped[name], key=_utf16_order))
        for name in sorted(grouped, key=_utf16_order)
    )



def canonical_path(path: str) -> str:
    """Canonical form of a path already made relative to the app base URL.

    ``&`` is encoded so that ``/a&b=c?x=y`` and ``/a?b=c&x=y`` do not collide; one
    trailing ``/`` is dropped, as the reference implementations do.
    """
    if not path:
        return "/"
    path = path.replace("&", "%26")
    if not path.startswith("/"):
        path = "/" + path
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path



def relative_path(request_path: str, app_base_url: str) -> str:
    """Strip the app base URL's path from a request path (``/`` if nothing is left).

    The prefix is only removed at a segment boundary: base ``/app`` does not strip
    ``/application``.
    """
    base_path = urlsplit(app_base_url).path.rstrip("/")
    if base_path and (request_path == base_path or request_path.startswith(base_path + "/")):
        request_path = request_path[len(base_path) :]
    return request_path or "/"



def canonical_request(method: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    """``METHOD&path&canonical-query``.

    ``path`` is the request path relative to the app base URL, as sent on the wire
    (not percent-decoded); ``params`` are the decoded query parameters.
    """
    return f"{method.upper()}&{canonical_path(path)}&{canonical_query(params)}"



def query_string_hash(method: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    """SHA-256 hex of the canonical request: the value of a token's ``qsh`` claim."""
    canonical = canonical_request(method, path, params)
    return hashlib.sha256(canonical.encode("utf-8", errors="surrogatepass")).hexdigest()



def is_valid_kid(kid: object) -> bool:
    """A kid safe to append to the key server URL: no ``/``, no ``%``, not ``.``/``..``."""
    return (
        isinstance(kid, str) and KID_PATTERN.fullmatch(kid) is not None and kid not in {".", ".."}
    )



def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = required_claim(claims, "aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return aud
    raise TokenError("invalid_claim", "the aud claim is neither a string nor a list of strings")



def body_mac(token: ParsedToken, body: Mapping[str, Any]) -> str:
    """What tells one body sent with a token from another (SPEC §4 rule 6): HMAC-SHA256
    of the body as one canonical JSON value (keys sorted), keyed by the token itself.

    Keyed, not a plain SHA-256: the body holds the shared secret, and the log keeps
    this value; only whoever holds the token (never stored) can test a guess with it."""
    key = parsed_token_bytes(token)
    canonical = msgspec.json.encode(body, order="sorted")
    return hmac.new(key, canonical, hashlib.sha256).hexdigest()



def parsed_token_bytes(token: ParsedToken) -> bytes:
    """The token as signed: its signing input and signature."""
    return token.signing_input + b"." + token.signature



def _check_claims(
    parsed: ParsedToken,
    *,
    client_key: str,
    bases: Sequence[AppBase],
    now: int,
    leeway: int,
    check_aud: bool,
) -> VerifiedToken:
    """The claims, first failure wins. ``bases``: the current app base URL first, then
    the previous ones; the first whose qsh matches is chosen, among those ``aud`` names
    when ``check_aud``."""
    claims = parsed.token.claims
    iss = string_claim(claims, "iss")
    claimed_qsh = string_claim(claims, "qsh")
    exp = time_claim(claims, "exp")
    iat = time_claim(claims, "iat")
    audiences = _audiences(claims) if check_aud else []

    if not same_text(iss, client_key):
        raise TokenError("iss_mismatch", "the token's iss is not the payload's clientKey")
    if check_aud:
        named = [b for b in bases if b.url is not None and _names(audiences, b.url)]
        if not named:
            raise TokenError("aud_mismatch", "the token's aud does not name this app")
    else:
        named = list(bases)
    chosen = next((b for b in named if same_text(claimed_qsh, b.qsh)), None)
    if chosen is None:
        raise TokenError("qsh_mismatch", "the token's qsh does not match this request")
    if exp <= now - leeway:
        raise TokenError("token_expired", "the token's exp has passed")
    if iat > now + leeway:
        raise TokenError("token_not_yet_valid", "the token's iat is in the future")
    if "nbf" in claims:
        nbf = time_claim(claims, "nbf")
        if nbf > now + leeway:
            raise TokenError("token_not_yet_valid", "the token's nbf is in the future")

    return VerifiedToken(
        alg=parsed.token.alg,
        kid=parsed.token.kid,
        iss=iss,
        iat=int(iat),
        exp=int(exp),
        sha256=parsed.token.sha256,
        app_base_url=chosen.url,
    )



def _names(audiences: Sequence[str], base_url: str) -> bool:
    """Whether ``aud`` names ``base_url`` (a trailing ``/`` ignored on either side)."""
    wanted = base_url.rstrip("/")
    return any(same_text(aud.rstrip("/"), wanted) for aud in audiences)



def verify_install_token(
    token: str | ParsedToken,
    public_key_pem: str | bytes | RSAPublicKey,
    *,
    client_key: str,
    app_base_url: str,
    qsh: str,
    now: int,
    leeway: int,
    previous: Sequence[AppBase] = (),
) -> VerifiedToken:
    """Verify a signed-install (RS256) token against the key its ``kid`` names.

    Checks, first failure wins: alg is RS256, kid well formed, signature, claims
    present, ``iss`` == client_key, ``aud`` names app_base_url (trailing ``/``
    ignored) or one of ``previous`` (then ``qsh`` is the one relative to it), ``qsh``,
    ``exp`` > now - leeway, ``iat`` <= now + leeway.
    ``token`` may be given already parsed (``parse_token``): a call parses it once.
    """
    parsed = token if isinstance(token, ParsedToken) else parse_token(token)
    require_alg(parsed, "RS256")
    if not is_valid_kid(parsed.token.kid):
        raise TokenError("invalid_kid", "the token header's kid is missing or not allowed")
    key = load_rsa_public_key(public_key_pem)
    if not _RS256.verify(parsed.signing_input, key, parsed.signature):
        raise TokenError("bad_signature", "the signature does not verify with the install key")
    return _check_claims(
        parsed,
        client_key=client_key,
        bases=(AppBase(app_base_url, qsh), *previous),
        now=now,
        leeway=leeway,
        check_aud=True,
    )



def verify_shared_secret_token(
    token: str | ParsedToken,
    secret: str,
    *,
    client_key: str,
    qsh: str,
    now: int,
    leeway: int,
    app_base_url: str | None = None,
    previous: Sequence[AppBase] = (),
) -> VerifiedToken:
    """Verify an HS256 token with the tenant's stored shared secret.

    Same rules as ``verify_install_token`` except ``aud``, which Atlassian's
    HS256 tokens do not carry: the qsh may be relative to ``app_base_url`` or to one
    of ``previous`` (the first that matches is the one recorded).
    """
    parsed = token if isinstance(token, ParsedToken) else parse_token(token)
    require_alg(parsed, "HS256")
    if not secret:
        # An empty secret is known to everyone: anyone could sign with it.
        raise TokenError("invalid_key", "no shared secret to verify with")
    if not _HS256.verify(parsed.signing_input, secret.encode("utf-8"), parsed.signature):
        raise TokenError("bad_signature", "the signature does not verify with the shared secret")
    return _check_claims(
        parsed,
        client_key=client_key,
        bases=(AppBase(app_base_url, qsh), *previous),
        now=now,
        leeway=leeway,
        check_aud=False,
    )

