"""Signing a request to a tenant's site as the app (SPEC §11, as ``/auth/connect/sign``
does): HS256 with the tenant's current shared secret, ``iss`` = the app key, ``iat``,
``exp`` and the ``qsh`` of (method, the path relative to the tenant's base URL, the
query). Pure: the secret and the time are given."""

from __future__ import annotations

from collections.abc import Sequence

import jwt

from app.ingest.connect.tokens import query_string_hash

__all__ = ["DEFAULT_EXPIRES_IN", "sign_site_request"]

DEFAULT_EXPIRES_IN = 180


def sign_site_request(
    secret: str,
    *,
    app_key: str,
    method: str,
    path: str,
    query: Sequence[tuple[str, str]] = (),
    now: int,
    expires_in: int = DEFAULT_EXPIRES_IN,
) -> str:
    """The JWT (without the ``JWT `` scheme) for ``method path?query`` at a tenant's site;
    ``path`` is relative to the tenant's base URL (``/rest/...``)."""
    claims = {
        "iss": app_key,
        "iat": now,
        "exp": now + expires_in,
        "qsh": query_string_hash(method, path, query),
    }
    return jwt.encode(claims, secret, algorithm="HS256")
