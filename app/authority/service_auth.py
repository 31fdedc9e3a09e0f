"""Who is calling ``/auth/*`` (SPEC §11): a service token, compared in constant time. Pure.

A service token opens only the tenant authority's routes, and the admin token does not
open them: the two are checked against separate settings, and the settings refuse a
service token equal to the admin token. Every configured token is compared, whatever
matches first, so the time taken says nothing about which one (or how much of one)
matched.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

SCHEME: Final = "bearer"


@dataclass(frozen=True, slots=True)
class ServiceDenied:
    """Why a call was not let in: ``service_api_closed`` (no token configured),
    ``missing_token`` or ``bad_service_token``; ``credential`` names what was presented,
    for the warning log line (never the token)."""

    code: str
    detail: str
    credential: str


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def service_caller(authorization: str | None, tokens: Mapping[str, str]) -> str | ServiceDenied:
    """The calling service's name, or why it is refused. ``tokens``: name by token."""
    if not tokens:
        return ServiceDenied(
            "service_api_closed",
            "the service API is closed: LEDGER_SERVICE_TOKENS is not set",
            "none" if not authorization else "bearer",
        )
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if not authorization:
        return ServiceDenied(
            "missing_token", "Authorization: Bearer <service token> is required", "none"
        )
    if scheme.lower() != SCHEME or not presented.strip():
        return ServiceDenied(
            "bad_service_token",
            "Authorization: Bearer <service token> is required",
            scheme.lower()[:16] or "unknown",
        )
    candidate = _encoded(presented.strip())
    found: str | None = None
    for token, name in tokens.items():
        if hmac.compare_digest(candidate, _encoded(token)) and found is None:
            found = name
    if found is None:
        return ServiceDenied("bad_service_token", "the service token is not valid", "bearer")
    return found
