"""The console's session: a cookie that proves the admin token was presented.

The cookie never holds the token. Its value is ``<expiry>.<HMAC-SHA256 under the
admin token of a fixed label and the expiry>``: it cannot be turned back into the
token, it stops working when it expires (checked here, not only by the browser),
and every session dies at once when ``LEDGER_ADMIN_TOKEN`` changes. With no token
configured nobody can log in, as with the admin API.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

from app.http import deps
from app.settings import Settings

COOKIE: Final = "ledger_console"
COOKIE_PATH: Final = "/console"
SESSION_SECONDS: Final = 12 * 3600
_LABEL: Final = b"tenant-ledger console session v1|"


def admin_token(settings: Settings) -> str:
    configured = settings.admin_token
    return configured.get_secret_value() if configured is not None else ""


def token_matches(settings: Settings, presented: str) -> bool:
    """Constant-time check of a presented token; always False when none is configured."""
    expected = admin_token(settings)
    # Digests of equal length: the comparison's time does not depend on the presented
    # value, not even on its length; it runs whether or not a token is configured.
    matches = hmac.compare_digest(
        hashlib.sha256(presented.encode()).digest(), hashlib.sha256(expected.encode()).digest()
    )
    return bool(expected) and matches


def _mac(token: str, expires: int) -> str:
    return hmac.new(token.encode(), _LABEL + str(expires).encode(), hashlib.sha256).hexdigest()


def session_value(settings: Settings, now: float | None = None) -> str:
    expires = int(now if now is not None else time.time()) + SESSION_SECONDS
    return f"{expires}.{_mac(admin_token(settings), expires)}"


def valid_session(settings: Settings, value: str | None, now: float | None = None) -> bool:
    token = admin_token(settings)
    if not token or not value:
        return False
    expires_text, _, mac = value.partition(".")
    # ASCII digits only: str.isdigit also passes "²³", which int() refuses, and
    # Arabic-Indic digits, which int() reads but which no session of ours ever holds.
    if not (expires_text.isascii() and expires_text.isdigit()) or len(expires_text) > 12:
        return False
    expires = int(expires_text)
    if expires <= (now if now is not None else time.time()):
        return False
    return hmac.compare_digest(mac.encode(), _mac(token, expires).encode())


def logged_in(request: Request) -> bool:
    settings: Settings = deps.settings(request)
    return valid_session(settings, request.cookies.get(COOKIE))


def safe_next(target: str | None) -> str:
    """Where to go after login: only a console path, never another site."""
    if (
        target
        and target.startswith(COOKIE_PATH)
        and "\\" not in target
        and all(ch.isprintable() for ch in target)
    ):
        return target
    return COOKIE_PATH


def same_origin(request: Request) -> bool:
    """Whether a form post came from a page of this console: its ``Origin`` names this
    host, or ``Sec-Fetch-Site`` says same-origin (a browser sends ``Origin: null``
    under ``Referrer-Policy: no-referrer``). Both headers are set by the browser, never by
    the page that submits; a request with neither is refused."""
    if request.headers.get("sec-fetch-site") == "same-origin":
        return True  # behind a proxy that rewrites Host, the browser's word still holds
    origin = request.headers.get("origin")
    host = request.headers.get("host", "").lower()
    return bool(origin and origin != "null" and urlsplit(origin).netloc.lower() == host)
