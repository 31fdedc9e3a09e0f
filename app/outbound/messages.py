"""What is delivered, as pure functions of an event and what the folds say about it.

One event of the log becomes one Standard Webhooks message (``webhook-id`` =
``evt_<position>``), followed by the facts it made (``evt_<position>_<n>``, n = 1, 2 …):
a reimport link (``tenant.reimport_detected``) and identity links
(``installation.linked``). Bodies are ``{"type", "timestamp", "data"}``; ``data`` holds
the event as the admin API shows it (``redact_event``: secrets never) and the tenant or
installation as it stands after the event (the same objects as the admin API).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from eventstore.clock import format_timestamp
from eventstore.values import RecordedEvent

# SPEC §11: the event types' names on the wire.
MESSAGE_TYPES: Final[dict[str, str]] = {
    "Installed": "tenant.installed",
    "SecretRotated": "tenant.secret_rotated",
    "BaseUrlChanged": "tenant.base_url_changed",
    "DescriptorUpgraded": "tenant.descriptor_upgraded",
    "DetailsChanged": "tenant.details_changed",
    "InstallConfirmed": "tenant.install_confirmed",
    "Enabled": "tenant.enabled",
    "Disabled": "tenant.disabled",
    "Uninstalled": "tenant.uninstalled",
    "TenantForgotten": "tenant.forgotten",
    "LicenseChanged": "tenant.license_changed",
    "SiteRefused": "tenant.site_refused",
    "ForgeInstalled": "installation.installed",
    "ForgeUpgraded": "installation.upgraded",
    "ForgeLicenseChanged": "installation.license_changed",
    "ForgeDetailsChanged": "installation.details_changed",
    "ForgeInstallConfirmed": "installation.install_confirmed",
    "ForgeUninstalling": "installation.uninstalling",
}
REIMPORT_DETECTED: Final = "tenant.reimport_detected"
INSTALLATION_LINKED: Final = "installation.linked"

_WORD_BREAK: Final = re.compile(r"(?<!^)(?=[A-Z])")


def message_type(event_type: str, stream_id: str) -> str:
    """The wire name of an event type; a type this table does not know yet (a newer
    release's) still gets a stable name from its stream's kind and its own words."""
    known = MESSAGE_TYPES.get(event_type)
    if known is not None:
        return known
    kind = "installation" if stream_id.startswith("installation:") else "tenant"
    words = _WORD_BREAK.sub("_", event_type.removeprefix("Forge")).lower()
    return f"{kind}.{words}"


@dataclass(frozen=True, slots=True)
class Message:
    """One Standard Webhooks message: its id and its body's exact bytes (signed as is)."""

    id: str
    type: str
    position: int  # the event it belongs to (the checkpoint moves by events)
    body: bytes


@dataclass(frozen=True, slots=True)
class Facts:
    """What the folds say about one event: the tenant or installation after it (the
    admin API's object; None when the stream has none yet) and the links it made."""

    subject: Mapping[str, Any] | None = None
    reimport: Mapping[str, Any] | None = None  # the admin API's reimport link object
    links: Sequence[Mapping[str, Any]] = ()  # the admin API's link objects


_encoder = msgspec.json.Encoder()


def _subject_key(stream_id: str) -> str:
    return "installation" if stream_id.startswith("installation:") else "tenant"


def _body(kind: str, timestamp: str, data: Mapping[str, Any]) -> bytes:
    return _encoder.encode({"type": kind, "timestamp": timestamp, "data": data})


def messages_for(event: RecordedEvent, shown: Mapping[str, Any], facts: Facts) -> list[Message]:
    """The messages of one event, in delivery order. ``shown`` is the event as the
    admin API shows it (``app.queries.reads.redact_event``)."""
    position = event.position
    timestamp = format_timestamp(event.recorded_at)
    common = {
        "position": position,
        "stream_id": event.stream_id,
        "version": event.version,
        "call_id": event.metadata.call_id,
    }
    subject = {_subject_key(event.stream_id): facts.subject}
    kind = message_type(event.type, event.stream_id)
    found = [
        Message(
            f"evt_{position}", kind, position,
            _body(kind, timestamp, {**common, "event": shown, **subject}),
        )
    ]
    derived: list[tuple[str, Mapping[str, Any]]] = []
    if facts.reimport is not None:
        derived.append((REIMPORT_DETECTED, {**common, "link": facts.reimport, **subject}))
    for link in facts.links:
        derived.append((INSTALLATION_LINKED, {**common, "link": link, **subject}))
    for n, (name, data) in enumerate(derived, start=1):
        found.append(Message(f"evt_{position}_{n}", name, position, _body(name, timestamp, data)))
    return found
