"""The URLs the tenant authority is asked about (SPEC §11), read strictly. Pure.

* ``site_request``: a URL the app wants to call on a tenant's site (``/auth/connect/sign``).
  Only a path under the tenant's base URL, given relative to it or absolute, is signed:
  the token's ``qsh`` would otherwise be good for a request to another host, or to a path
  outside the base that the site reads differently. Refused as ``foreign_url``: another
  scheme, host or port, user info, ``//host`` (a scheme-relative URL), a path outside the
  base, dot segments and encoded slashes or backslashes (which a server may decode into a
  path outside it), a host that is not plain ASCII (IDN look-alikes). Refused as
  ``invalid_url``: what is not a URL, or is read differently by different parsers
  (spaces, backslashes, control characters, raw non-ASCII, a fragment, a query that is
  not UTF-8).
* ``app_request``: a request the app received (``/auth/connect/verify``), its path
  relative to the app's base URL, or absolute under the current or a previous one; the
  query string hash for each base URL it may have been signed for.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from app.ingest.connect.tokens import AppBase, query_string_hash, relative_path

MAX_URL_LENGTH: Final = 8192
METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_AMBIGUOUS: Final = re.compile(r"[^\x21-\x7e]|\\")
_ENCODED_SEPARATOR: Final = re.compile(r"%(2f|5c|00)", re.IGNORECASE)
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


class UrlRefused(Exception):
    """``code``: ``foreign_url`` or ``invalid_url``; ``detail`` never quotes the URL."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(code)
        self.code, self.detail = code, detail


@dataclass(frozen=True, slots=True)
class SiteRequest:
    url: str  # absolute, on the tenant's site
    path: str  # relative to the tenant's base URL, for the qsh
    query: list[tuple[str, str]]


def _foreign(detail: str) -> UrlRefused:
    return UrlRefused("foreign_url", detail)


def _invalid(detail: str) -> UrlRefused:
    return UrlRefused("invalid_url", detail)


def _origin(parts: SplitResult) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port made explicit."""
    try:
        port = parts.port
    except ValueError:
        raise _invalid("the URL's port is not a number in range") from None
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0)


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        raise _invalid("not a URL") from None


def _check_text(url: str) -> None:
    if not url or len(url) > MAX_URL_LENGTH:
        raise _invalid(f"the URL must hold 1 to {MAX_URL_LENGTH} characters")
    if "#" in url:
        raise _invalid("the URL must not carry a fragment")
    if _AMBIGUOUS.search(url):
        raise _invalid(
            "the URL must be printable ASCII without spaces or backslashes (percent-encode the rest)"
        )


def _check_path(path: str) -> None:
    """A path that stays where it says: no dot segment, no encoded separator."""
    if path.startswith("//"):
        raise _foreign("a URL starting with // names another host")
    if _ENCODED_SEPARATOR.search(path):
        raise _foreign("the path must not hold an encoded slash, backslash or NUL")
    if any(unquote(segment) in (".", "..") for segment in path.split("/")):
        raise _foreign("the path must not hold . or .. segments")


def _query(query: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(query, keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _invalid("the query string is not UTF-8 percent-encoding") from None


def _under(path: str, base_path: str) -> str | None:
    """``path`` relative to ``base_path`` at a segment boundary, or None if outside it."""
    if not base_path:
        return path or "/"
    if path == base_path or path.startswith(base_path + "/"):
        return path[len(base_path) :] or "/"
    return None


def _absolute(url: str, base: str) -> tuple[SplitResult, str] | None:
    """(parts, path relative to ``base``) when ``url`` is absolute under ``base``; None
    when it is absolute elsewhere; raises for what cannot be compared."""
    parts, base_parts = _split(url), _split(base)
    if parts.username is not None or parts.password is not None or "@" in parts.netloc:
        raise _foreign("the URL must not carry user info")
    if _origin(parts) != _origin(base_parts):
        return None
    relative = _under(parts.path, base_parts.path.rstrip("/"))
    return None if relative is None else (parts, relative)


def _is_relative(url: str) -> bool:
    return url.startswith("/") and not url.startswith("//")


def site_request(url: object, base_url: str) -> SiteRequest:
    """The call the app asks to sign, on the tenant at ``base_url``."""
    if not isinstance(url, str):
        raise _invalid("url must be a string")
    if url.startswith("//"):
        raise _foreign("a URL starting with // names another host")
    if not _is_relative(url):
        if not url.isascii():
            raise _foreign("the URL's host must be the tenant's, in ASCII")
        _check_text(url)
        found = _absolute(url, base_url)
        if found is None:
            raise _foreign("the URL is not under the tenant's base URL")
        parts, path = found
        query = parts.query
    else:
        _check_text(url)
        path, _, query = url.partition("?")
    _check_path(path)
    base = _split(base_url)
    absolute = f"{base.scheme}://{base.netloc}{base.path.rstrip('/')}{path}"
    return SiteRequest(
        url=absolute + (f"?{query}" if query else ""), path=path, query=_query(query)
    )


@dataclass(frozen=True, slots=True)
class AppRequest:
    bases: tuple[AppBase, ...]  # one per app base URL it may have been signed for
    query: list[tuple[str, str]]


def app_request(method: str, url: object, app_base_urls: Sequence[str]) -> AppRequest:
    """A request the app received: the qsh for each app base URL it may be signed for
    (the current one first). A relative URL is relative to every base alike."""
    if not isinstance(url, str):
        raise _invalid("url must be a string")
    _check_text(url)
    if _is_relative(url):
        path, _, query = url.partition("?")
        params = _query(query)
        qsh = query_string_hash(method, path, params)
        return AppRequest(tuple(AppBase(base, qsh) for base in app_base_urls), params)
    bases: list[AppBase] = []
    params = []
    for base in app_base_urls:
        found = _absolute(url, base)
        if found is None:
            continue
        parts, _ = found
        params = _query(parts.query)
        path = relative_path(parts.path, base)
        bases.append(AppBase(base, query_string_hash(method, path, params)))
    if not bases:
        raise _foreign("the URL is not under the app's base URL")
    return AppRequest(tuple(bases), params)
