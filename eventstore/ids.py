"""Forge identifiers in their two spellings: a bare UUID or an ARI.

Atlassian writes an installation as ``ari:cloud:ecosystem::installation/<uuid>`` in
tokens and sometimes as the bare UUID in bodies; the ledger compares and stores the
bare, lower-case UUID and shows the ARI beside it. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

APP_ARI_PREFIX: Final = "ari:cloud:ecosystem::app/"
INSTALLATION_ARI_PREFIX: Final = "ari:cloud:ecosystem::installation/"

_UUID: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
# ari:cloud:<product>::site/<cloudId>; the product is a short lower-case name.
_SITE_ARI: Final = re.compile(r"ari:cloud:([a-z][a-z0-9.-]{0,63})::site/([0-9A-Za-z-]{1,128})")


def bare_uuid(value: object) -> str | None:
    """The lower-case UUID, or None when ``value`` is not a UUID string."""
    if isinstance(value, str) and _UUID.fullmatch(value):
        return value.lower()
    return None


def _uuid_after(prefix: str, value: object, *, bare_ok: bool) -> str | None:
    if not isinstance(value, str):
        return None
    if value.startswith(prefix):
        return bare_uuid(value[len(prefix) :])
    return bare_uuid(value) if bare_ok else None


def installation_uuid(value: object) -> str | None:
    """An installation given as a UUID or an installation ARI → its UUID (else None)."""
    return _uuid_after(INSTALLATION_ARI_PREFIX, value, bare_ok=True)


def installation_uuid_from_ari(value: object) -> str | None:
    """Only the ARI form (a token's ``app.installationId`` must be one)."""
    return _uuid_after(INSTALLATION_ARI_PREFIX, value, bare_ok=False)


def app_uuid(value: object) -> str | None:
    """An app given as a UUID or an app ARI → its UUID (else None)."""
    return _uuid_after(APP_ARI_PREFIX, value, bare_ok=True)


def app_ari(uuid: str) -> str:
    return APP_ARI_PREFIX + uuid.lower()


def installation_ari(uuid: str) -> str:
    return INSTALLATION_ARI_PREFIX + uuid.lower()


def site_of(context: object) -> tuple[str, str] | None:
    """``ari:cloud:<product>::site/<cloudId>`` → (product, cloudId); else None."""
    if not isinstance(context, str):
        return None
    match = _SITE_ARI.fullmatch(context)
    if match is None:
        return None
    return match.group(1), normalise_cloud_id(match.group(2))


def normalise_cloud_id(value: str) -> str:
    """cloudIds are UUIDs: compared lower-case; anything else is kept as given."""
    return bare_uuid(value) or value
