"""A Forge call's body (SPEC §10 rules 1, 5 and 6). Pure functions.

* ``parse_forge_body``: JSON object of at most 64 KiB; a retry envelope
  ``{"payload": {…, "retryContext": {…}}}`` is unwrapped, its ``retryContext`` kept
  apart (it goes to the event's metadata, never into what identifies a delivery).
* ``check_body``: the body must agree with the verified token (rule 5).
* ``facts_of``: what a call says about its installation (token and body together).
* ``delivery_sha256``: what identifies a delivery across Forge's retries (rule 6).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from app.ingest.forge.tokens import ForgeToken
from app.ingest.json_body import MAX_BODY_BYTES, BodyError, parse_json_object
from eventstore.events import canonical_json
from eventstore.ids import app_uuid, installation_uuid, normalise_cloud_id, site_of

__all__ = [
    "ROUTES",
    "BodyError",
    "ForgeBody",
    "ForgeFacts",
    "Route",
    "check_body",
    "claimed_installation",
    "delivery_sha256",
    "facts_of",
    "parse_forge_body",
]

Route = Literal["installed", "upgraded", "pre-uninstall"]
ROUTES: Final[tuple[Route, ...]] = ("installed", "upgraded", "pre-uninstall")

_decoder = msgspec.json.Decoder()
_DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)
MISMATCH: Final = "body_token_mismatch"


@dataclass(frozen=True, slots=True)
class ForgeBody:
    fields: dict[str, Any]  # the event's body, unwrapped, without retryContext
    retry_context: dict[str, Any] | None


def parse_forge_body(raw: bytes, content_type: str | None) -> ForgeBody:
    value = parse_json_object(raw, content_type)
    retry: object = None
    if set(value) == {"payload"} and isinstance(value["payload"], dict):
        value = dict(value["payload"])
        retry = value.pop("retryContext", None)
    elif set(value) == {"payload", "retryContext"} and isinstance(value["payload"], dict):
        # The envelope with retryContext beside the payload rather than in it: the same.
        retry = value["retryContext"]
        value = dict(value["payload"])
        value.pop("retryContext", None)
    if retry is not None and not isinstance(retry, dict):
        raise BodyError(400, "invalid_field", "retryContext must be an object")
    return ForgeBody(value, retry)


def _body_cloud_id(route: Route, fields: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(cloudId, product) the body names: a site ARI in ``context`` (installed,
    upgraded) or ``context.cloudId`` (pre-uninstall)."""
    context = fields.get("context")
    if isinstance(context, dict):
        cloud = context.get("cloudId")
        return (normalise_cloud_id(cloud) if isinstance(cloud, str) and cloud else None), None
    site = site_of(context)
    return (site[1], site[0]) if site else (None, None)


def check_body(route: Route, fields: Mapping[str, Any], token: ForgeToken) -> str | None:
    """Why the body disagrees with the token (rule 5), or None when it agrees."""
    body_id = fields.get("id")
    if route != "pre-uninstall" and body_id is None:
        return "the body names no installation id"
    if body_id is not None and installation_uuid(body_id) != token.installation_id:
        return "the body names another installation than the token"
    app = fields.get("app")
    if route != "pre-uninstall" and isinstance(app, dict) and "id" in app:
        if app_uuid(app.get("id")) != token.app_id:
            return "the body names another app than the token"
    elif route != "pre-uninstall" and app is not None and not isinstance(app, dict):
        return "the body's app is not an object"
    cloud_id, _ = _body_cloud_id(route, fields)
    if cloud_id is not None and token.cloud_ids and cloud_id not in token.cloud_ids:
        return "the body names a site the token's installation is not on"
    return None


@dataclass(frozen=True, slots=True)
class ForgeFacts:
    """What one verified call says about its installation (ForgeInstalled's fields)."""

    installation_id: str
    app_id: str
    app_version: str | None
    environment_id: str | None
    environment_type: str | None
    license: dict[str, Any] | None
    cloud_id: str | None
    site_ari: str | None
    product: str | None
    installer_account_id: str | None


def facts_of(route: Route, fields: Mapping[str, Any], token: ForgeToken) -> ForgeFacts:
    cloud_id, product = _body_cloud_id(route, fields)
    if cloud_id is None and len(token.cloud_ids) == 1:
        cloud_id = token.cloud_ids[0]
    context = fields.get("context")
    installer = fields.get("installerAccountId")
    return ForgeFacts(
        installation_id=token.installation_id,
        app_id=token.app_id,
        app_version=token.app_version,
        environment_id=token.environment_id,
        environment_type=token.environment_type,
        license=token.license,
        cloud_id=cloud_id,
        site_ari=context if isinstance(context, str) and product is not None else None,
        product=product,
        installer_account_id=installer if isinstance(installer, str) and installer else None,
    )


def _normalised(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The body as it identifies a delivery: installation and app ids as UUIDs, and
    without ``contextToken`` (a credential Forge may mint afresh for each retry)."""
    out = {k: v for k, v in fields.items() if k not in ("contextToken", "retryContext")}
    for name in ("id", "installationId"):
        if name in out:
            out[name] = installation_uuid(out[name]) or out[name]
    app = out.get("app")
    if isinstance(app, dict) and "id" in app:
        out["app"] = {**app, "id": app_uuid(app["id"]) or app["id"]}
    return out


def delivery_sha256(route: Route, fields: Mapping[str, Any], token: ForgeToken) -> str:
    """Rule 6: a retry (new token, same event) hashes the same; a change of version,
    environment, license or sites in the token makes it another delivery."""
    identity = {
        "route": route,
        "installation": token.installation_id,
        "body": _normalised(fields),
        "facts": {
            "app_version": token.app_version,
            "environment": [token.environment_id, token.environment_type],
            "license": token.license,
            "contexts": list(token.cloud_ids),
        },
    }
    return hashlib.sha256(canonical_json(identity)).hexdigest()


def claimed_installation(raw: bytes) -> tuple[str | None, str | None]:
    """Best-effort (installation UUID, cloudId) a refused body names, for the rejection log."""
    try:
        value = _decoder.decode(raw) if len(raw) <= MAX_BODY_BYTES else None
    except _DECODE_ERRORS:
        return None, None
    if not isinstance(value, dict):
        return None, None
    if set(value) <= {"payload", "retryContext"} and isinstance(value.get("payload"), dict):
        value = value["payload"]
    route: Route = "pre-uninstall" if isinstance(value.get("context"), dict) else "installed"
    cloud_id, _ = _body_cloud_id(route, value)
    installation = installation_uuid(value.get("id") or value.get("installationId"))
    return installation, cloud_id[:128] if cloud_id else None
