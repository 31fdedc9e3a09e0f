"""The webhook settings' rules (SPEC §11), pure: which URLs are acceptable, what a
secret looks like, how a URL is named where people and metrics see it.

A webhook URL may carry credentials (``https://user:pass@…`` or a token in its query);
it is therefore never shown whole: ``url_label`` keeps scheme, host, port and path, and
``url_id`` (a SHA-256) keys its checkpoint row.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from pydantic import SecretStr

SECRET_PREFIX: Final = "whsec_"  # noqa: S105  (a prefix, not a secret)
# Standard Webhooks: symmetric keys of 24 to 64 bytes.
SECRET_MIN_BYTES: Final = 24
SECRET_MAX_BYTES: Final = 64
NEW_SECRET_BYTES: Final = 32


def url_problem(url: str, dev_hosts: Iterable[str]) -> str | None:
    """Why ``url`` cannot be a webhook URL (None: it can). Never quotes the URL."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  (raises on a port that is not a number)
    except ValueError:
        return "is not a URL"
    if parts.scheme not in ("https", "http") or not host:
        return "must be https:// URLs (http:// only for LEDGER_DEV_HOSTS)"
    if parts.scheme == "http" and host not in set(dev_hosts):
        return f"http:// is allowed only for LEDGER_DEV_HOSTS, not for {host}"
    if parts.fragment:
        return "must not carry a #fragment"
    return None


def secret_key(secret: str) -> bytes | None:
    """The key bytes of a ``whsec_<base64>`` secret; None when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if SECRET_MIN_BYTES <= len(key) <= SECRET_MAX_BYTES else None


def check_webhook_settings(
    urls: tuple[str, ...], secret: SecretStr | None, dev_hosts: Iterable[str]
) -> None:
    """Raise ValueError naming the setting to fix (one line, no URL, no secret)."""
    hosts = tuple(dev_hosts)
    for index, url in enumerate(urls):
        problem = url_problem(url, hosts)
        if problem is not None:
            raise ValueError(f"LEDGER_WEBHOOK_URLS (URL {index}) {problem}")
    if len(set(urls)) != len(urls):
        raise ValueError("LEDGER_WEBHOOK_URLS names one URL twice")
    value = secret.get_secret_value().strip() if secret is not None else ""
    if urls and not value:
        raise ValueError("LEDGER_WEBHOOK_SECRET is required when LEDGER_WEBHOOK_URLS is set")
    if value and secret_key(value) is None:
        raise ValueError(
            f"LEDGER_WEBHOOK_SECRET must be {SECRET_PREFIX} followed by the base64 of"
            f" {SECRET_MIN_BYTES} to {SECRET_MAX_BYTES} bytes (`ledger webhooks secret` makes one)"
        )


def new_secret() -> str:
    """A fresh ``whsec_…`` secret (``ledger webhooks secret``)."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(NEW_SECRET_BYTES)).decode()


def url_id(url: str) -> str:
    """The key of a URL's checkpoint row: its SHA-256 (the URL itself may hold credentials)."""
    return hashlib.sha256(url.encode()).hexdigest()


def url_label(url: str) -> str:
    """The URL as people and logs see it: scheme, host, port, path; never its user,
    password, query or fragment (where credentials hide)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def url_host(url: str) -> str:
    """The host alone (a metrics label)."""
    return (urlsplit(url).hostname or "").lower()
