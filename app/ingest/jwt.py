"""What Connect's and Forge's tokens share: strict parsing of a JWT, its claims' types,
and the refusal every verification raises (``TokenError``). Pure functions.

The token is parsed here, strictly, rather than by ``jwt.decode``: the allowed
algorithm is fixed by the function called (never read from the header), PyJWT is
used only for its signature primitives, and every claim rule is ours. Strictness
matters beyond correctness: the ledger detects replays by the token's SHA-256, so
a second spelling of the same token (base64 padding, non-canonical trailing bits)
must not verify.

No message raised from here contains the token, a secret or a claim value.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

# Lifecycle tokens are a few hundred bytes; the cap bounds the work an
# unauthenticated caller can make us do before the signature is checked.
MAX_TOKEN_LENGTH: Final = 16 * 1024

REASON_CODES: Final = frozenset(
    {
        "malformed_token",
        "unsupported_alg",
        "invalid_kid",
        "invalid_key",
        "bad_signature",
        "missing_claim",
        "invalid_claim",
        "iss_mismatch",
        "aud_mismatch",
        "qsh_mismatch",
        "token_expired",
        "token_not_yet_valid",
    }
)

_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    """A token was refused. ``code`` is a stable snake_case reason (see REASON_CODES)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True, slots=True)
class UnverifiedToken:
    """What a token claims before anything is checked: enough to pick the key."""

    alg: str
    kid: str | None
    iss: str | None
    iat: int | None
    sha256: str
    claims: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True, slots=True)
class ParsedToken:
    token: UnverifiedToken
    signing_input: bytes
    signature: bytes


# --- query string hash -------------------------------------------------------


# --- parsing -----------------------------------------------------------------


def token_sha256(token: str) -> str:
    """Hex SHA-256 of the raw token: what logs and replay checks hold instead of it."""
    return hashlib.sha256(token.encode("utf-8", errors="surrogatepass")).hexdigest()


def _b64url_decode(segment: str) -> bytes:
    # Unpadded and canonical only: exactly one spelling per byte string.
    if _B64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("not canonical base64url")
    return raw


def _reject_constant(name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


def _json_object(raw: bytes) -> dict[str, Any]:
    value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def numeric_claim(value: object) -> float | int | None:
    # bool is an int subclass; "exp": true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def parse_token(token: str) -> ParsedToken:
    if not isinstance(token, str) or not token:
        raise TokenError("malformed_token", "the token is empty or not a string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("malformed_token", f"the token is longer than {MAX_TOKEN_LENGTH} bytes")
    segments = token.split(".")
    if len(segments) != 3:
        raise TokenError("malformed_token", "a JWT has three dot-separated segments")
    header_b64, payload_b64, signature_b64 = segments
    try:
        header = _json_object(_b64url_decode(header_b64))
        claims = _json_object(_b64url_decode(payload_b64))
        signature = _b64url_decode(signature_b64)
    except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError):
        raise TokenError(
            "malformed_token", "the token is not base64url-encoded JSON objects"
        ) from None
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenError("malformed_token", "the token header has no alg")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise TokenError("malformed_token", "the token header's kid is not a string")
    iss = claims.get("iss")
    iat = numeric_claim(claims.get("iat"))
    unverified = UnverifiedToken(
        alg=alg,
        kid=kid,
        iss=iss if isinstance(iss, str) else None,
        iat=int(iat) if iat is not None else None,
        sha256=token_sha256(token),
        claims=claims,
    )
    return ParsedToken(
        token=unverified,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
    )


def parse_unverified(token: str) -> UnverifiedToken:
    """Read alg, kid, iss and iat without trusting them (to choose how to verify)."""
    return parse_token(token).token


# --- verification ------------------------------------------------------------


@lru_cache(maxsize=256)
def _load_rsa_pem(pem: bytes) -> RSAPublicKey:
    key = load_pem_public_key(pem)
    if not isinstance(key, RSAPublicKey):
        raise TypeError("not an RSA public key")
    return key


def load_rsa_public_key(public_key_pem: str | bytes | RSAPublicKey) -> RSAPublicKey:
    """Load a PEM RSA public key (memoised: a handful of install keys are in use)."""
    if isinstance(public_key_pem, RSAPublicKey):
        return public_key_pem
    pem = public_key_pem.encode("ascii") if isinstance(public_key_pem, str) else public_key_pem
    try:
        return _load_rsa_pem(pem)
    except (ValueError, TypeError, UnicodeError, UnsupportedAlgorithm):
        raise TokenError("invalid_key", "the install key is not a PEM RSA public key") from None


def require_alg(parsed: ParsedToken, allowed: str) -> None:
    if parsed.token.alg != allowed:
        raise TokenError("unsupported_alg", f"only {allowed} is accepted here")


def same_text(a: str, b: str) -> bool:
    # compare_digest only takes ASCII str; claim values may hold anything.
    return hmac.compare_digest(
        a.encode("utf-8", errors="surrogatepass"), b.encode("utf-8", errors="surrogatepass")
    )


def required_claim(claims: Mapping[str, Any], name: str) -> Any:
    if name not in claims or claims[name] is None:
        raise TokenError("missing_claim", f"the token has no {name} claim")
    return claims[name]


def time_claim(claims: Mapping[str, Any], name: str) -> float | int:
    value = numeric_claim(required_claim(claims, name))
    if value is None:
        raise TokenError("invalid_claim", f"the {name} claim is not a number")
    return value


def string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = required_claim(claims, name)
    if not isinstance(value, str):
        raise TokenError("invalid_claim", f"the {name} claim is not a string")
    return value


