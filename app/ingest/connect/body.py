"""Rule 1 of SPEC §4: the body of a lifecycle call, checked before any token work. Pure."""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from app.ingest.json_body import (
    DECODE_ERRORS,
    MAX_BODY_BYTES,
    MAX_STRING,
    BodyError,
    decode_body,
    parse_json_object,
    refuse_non_printable,
)

MAX_CLIENT_KEY: Final = 255
MAX_URL: Final = 2048
MAX_SECRET: Final = 1024
MAX_DESCRIPTOR_VERSION: Final = 64

# The payload fields the ledger reads (SPEC §4 rule 1), the one list of them: each
# must be a string or null when present (the first three must be strings), else 400
# ``bad_field_type``. Every other field may hold any JSON value and is kept as sent.
READ_FIELDS: Final = (
    "key",
    "clientKey",
    "baseUrl",
    "displayUrl",
    "displayUrlServicedeskHelpCenter",
    "productType",
    "description",
    "serverVersion",
    "pluginsVersion",
    "serviceEntitlementNumber",
    "entitlementId",
    "entitlementNumber",
    "oauthClientId",
    "installationId",
    "sharedSecret",
    "eventType",
)

_HOST = re.compile(
    r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$"
)


@dataclass(frozen=True, slots=True)
class LifecyclePayload:
    fields: dict[str, Any]  # the body without sharedSecret
    client_key: str
    base_url: str
    shared_secret: str | None


def claimed_identity(body: bytes) -> tuple[str | None, str | None]:
    """Best-effort clientKey and baseUrl of a body that may be refused, for the rejection log."""
    try:
        value = decode_body(body) if len(body) <= MAX_BODY_BYTES else None
    except DECODE_ERRORS:
        return None, None
    if not isinstance(value, dict):
        return None, None
    key, url = value.get("clientKey"), value.get("baseUrl")
    return (
        key[:MAX_CLIENT_KEY] if isinstance(key, str) else None,
        url[:MAX_URL] if isinstance(url, str) else None,
    )


def check_descriptor_version(query: Iterable[tuple[str, str]]) -> None:
    """The ``v`` query parameter is stored with every event: bounded and printable."""
    for name, value in query:
        if name != "v":
            continue
        if len(value) > MAX_DESCRIPTOR_VERSION:
            raise BodyError(400, "field_too_long", "the v parameter is too long")
        refuse_non_printable(value, "the v parameter")


def host_allowed(host: str, patterns: Iterable[str]) -> bool:
    host = host.lower().rstrip(".")
    return any(fnmatch.fnmatchcase(host, pattern) for pattern in patterns)


def parse_lifecycle_body(
    body: bytes,
    content_type: str | None,
    *,
    app_key: str,
    allowed_hosts: Iterable[str],
    dev_hosts: Iterable[str],
    require_secret: bool,
) -> LifecyclePayload:
    value = parse_json_object(body, content_type)
    check_field_types(value)

    key = _string(value, "key", MAX_STRING)
    client_key = _string(value, "clientKey", MAX_CLIENT_KEY)
    base_url = _string(value, "baseUrl", MAX_URL)
    if key != app_key:
        raise BodyError(401, "wrong_app_key", "the payload is for another app")

    scheme, host = _base_url_host(base_url)
    dev = host in set(dev_hosts)
    if scheme == "http" and not dev:
        raise BodyError(400, "insecure_base_url", "baseUrl must use https")
    if not dev and not host_allowed(host, allowed_hosts):
        raise BodyError(400, "host_not_allowed", "baseUrl's host is not in the allowlist")

    secret: str | None = value.get("sharedSecret")  # a string or None: check_field_types
    if require_secret and not secret:
        raise BodyError(400, "missing_field", "sharedSecret is required for installed")
    if secret is not None and len(secret) > MAX_SECRET:
        raise BodyError(400, "field_too_long", "sharedSecret is too long")
    fields = {k: v for k, v in value.items() if k != "sharedSecret"}
    return LifecyclePayload(
        fields=fields, client_key=client_key, base_url=base_url, shared_secret=secret
    )


def check_field_types(value: dict[str, Any]) -> None:
    """Each of ``READ_FIELDS`` present is a string or null (a null required field is
    then refused as missing by ``_string``)."""
    for name in READ_FIELDS:
        field = value.get(name)
        if field is not None and not isinstance(field, str):
            raise BodyError(400, "bad_field_type", f"{name} must be a string or null")


def _base_url_host(base_url: str) -> tuple[str, str]:
    """(scheme, host) of an absolute http(s) URL that a browser reads the same way:
    anything ambiguous (backslashes, spaces, control characters, user info, a port
    that is not a number, a host that is no DNS name or IP address) is refused."""
    if _AMBIGUOUS.search(base_url):
        raise _invalid_base_url()
    try:
        parts = urlsplit(base_url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
    except ValueError:
        raise _invalid_base_url() from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http") or "@" in parts.netloc:
        raise _invalid_base_url()
    if not (_HOST.match(host.removesuffix(".")) or _is_ip(host)):
        raise _invalid_base_url()
    return scheme, host


# A backslash, a space, a control character or DEL: a URL a browser may read otherwise.
_AMBIGUOUS = re.compile(r"[\\ \x00-\x1f\x7f]")


def _invalid_base_url() -> BodyError:
    return BodyError(400, "invalid_base_url", "baseUrl must be an absolute https URL")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _string(value: dict[str, Any], name: str, limit: int) -> str:
    field = value.get(name)
    if field is None:
        raise BodyError(400, "missing_field", f"{name} is required")
    if not field:  # a string (check_field_types ran first)
        raise BodyError(400, "invalid_field", f"{name} must be a non-empty string")
    if len(field) > limit:
        raise BodyError(400, "field_too_long", f"{name} is longer than {limit} characters")
    return field


