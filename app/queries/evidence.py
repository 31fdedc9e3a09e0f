"""A tenant's history as evidence a person can read: per event, how the call that made
it was verified, by which request, from where, on which descriptor version, and what
changed. Pure: it reads admin API event objects (``reads.tenant_events_answer``, the
one history path), so the CLI and the demo show exactly what the admin API answers.

"How it was verified" for HS256 names the shared secret in force, by the stream
version of the event that set it (an ``Installed`` or a ``SecretRotated``): a call is
checked against the secret stored *before* it, never one it carries, so every event
of one call (one ``call_id``) names the same secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

SEALED = "(sealed)"
HISTORY_COLUMNS = (
    "position",
    "version",
    "type",
    "recorded_at",
    "verified_by",
    "call_id",
    "remote_addr",
    "descriptor_version",
    "changes",
)
_INSTALLED_SHOWN = ("baseUrl", "productType")
_INSTALLED_HIDDEN = {"key", "clientKey", "sharedSecret", "eventType"}


def _pairs(data: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    return [
        f"{name}={SEALED if name == 'sharedSecret' else cell(data.get(name))}"
        for name in names
        if name in data
    ]


def describe_change(event_type: str, data: Mapping[str, Any]) -> str:
    """What an event changed, in one compact line; a secret only ever as "(sealed)"."""
    if event_type == "Installed":
        shown = _pairs(data, (*_INSTALLED_SHOWN, "sharedSecret"))
        others = [n for n in data if n not in _INSTALLED_HIDDEN and n not in _INSTALLED_SHOWN]
        if others:
            shown.append(f"+{len(others)} more fields ({', '.join(others)})")
        return ", ".join(shown)
    if event_type == "SecretRotated":
        return f"sharedSecret={SEALED}"
    if event_type == "BaseUrlChanged":
        return f"baseUrl: {data.get('from')} → {data.get('to')}"
    if event_type == "DescriptorUpgraded":
        return f"descriptor: {cell(data.get('from')) or '(none)'} → {data.get('to')}"
    if event_type == "DetailsChanged":
        return ", ".join(_pairs(data, list(data)))
    if event_type == "TenantForgotten":
        return f"data key destroyed; reason={cell(data.get('reason'))}"
    return ""


def verified_by(metadata: Mapping[str, Any], secret_version: int | None) -> str:
    alg = metadata.get("alg")
    if alg is None and "operator" in metadata:  # `ledger forget`: an operator, not a call
        return f"ledger forget by {metadata.get('operator')}@{metadata.get('host') or '?'}"
    if alg == "RS256":
        return f"RS256 kid={metadata.get('kid')}"
    if alg == "HS256":
        where = f" of v{secret_version}" if secret_version is not None else ""
        return f"HS256 shared secret{where}"
    return cell(alg)


def evidence_rows(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per event (admin API event objects, oldest first) with its evidence."""
    rows: list[dict[str, Any]] = []
    secret_set_at: int | None = None  # stream version whose secret is in force
    in_force: int | None = None  # ... at the start of the current call
    last_call: object = object()
    for event in events:
        meta = event.get("metadata") or {}
        data = event.get("data") or {}
        call = meta.get("call_id")
        if call is None or call != last_call:
            in_force, last_call = secret_set_at, call
        rows.append(
            {
                "position": event["position"],
                "version": event["version"],
                "type": event["type"],
                "recorded_at": event["recorded_at"],
                "verified_by": verified_by(meta, in_force),
                "call_id": call,
                "remote_addr": meta.get("remote_addr"),
                "descriptor_version": meta.get("descriptor_version"),
                "changes": describe_change(event["type"], data),
            }
        )
        if "sharedSecret" in data:
            secret_set_at = event["version"]
    return rows


def cell(value: Any) -> str:
    """One value as text: full, never shortened."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False)
    return str(value)

