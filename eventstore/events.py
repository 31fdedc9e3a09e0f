"""The event catalog (SPEC §3): typed, versioned event data and the upcasters.

Each event's ``data`` is stored as canonical JSON text together with the schema
version it was written with. Reading turns that text into the typed model of the
*current* schema version, running the upcasters for older shapes first; stored
rows are never rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import msgspec

STREAM_PREFIX: Final = "tenant:"


def stream_id_for(client_key: str) -> str:
    return STREAM_PREFIX + client_key


def client_key_of(stream_id: str) -> str:
    return stream_id[len(STREAM_PREFIX) :] if stream_id.startswith(STREAM_PREFIX) else stream_id


INSTALLATION_STREAM_PREFIX: Final = "installation:"


def installation_stream_id(installation_uuid: str) -> str:
    """The stream of one Forge installation (SPEC §10), by its bare UUID."""
    return INSTALLATION_STREAM_PREFIX + installation_uuid


def installation_id_of(stream_id: str) -> str | None:
    """The installation UUID of an ``installation:`` stream; None for any other stream."""
    if stream_id.startswith(INSTALLATION_STREAM_PREFIX):
        return stream_id[len(INSTALLATION_STREAM_PREFIX) :]
    return None


# Event data and metadata are ``gc=False`` Structs: they hold only JSON values (strings,
# numbers, and dicts and lists of those), which cannot refer back to them, so they are
# never part of a reference cycle; a full read makes a million of them, and keeping them
# out of the cyclic garbage collector's scans makes it measurably faster.


class SealedSecret(msgspec.Struct, frozen=True, gc=False, forbid_unknown_fields=True):
    """A shared secret encrypted with the tenant's data key (see eventstore.crypto).

    ``ad`` records the associated data the ciphertext is bound to, so that a
    ciphertext copied into another stream or version fails to decrypt.
    """

    alg: str
    nonce: str
    ct: str
    ad: str


class Installed(msgspec.Struct, frozen=True, gc=False):
    """Every payload field of the call; ``sharedSecret`` replaced by its sealed form.

    ``details`` holds the fields beyond key/clientKey/baseUrl/sharedSecret,
    including fields Atlassian adds later: unknown fields are kept, never dropped.
    """

    key: str
    client_key: str
    base_url: str
    shared_secret: SealedSecret | None
    details: dict[str, Any]


class SecretRotated(msgspec.Struct, frozen=True, gc=False):
    shared_secret: SealedSecret


class BaseUrlChanged(msgspec.Struct, frozen=True, gc=False):
    from_: str
    to: str


class DescriptorUpgraded(msgspec.Struct, frozen=True, gc=False):
    from_: str | None
    to: str


class DetailsChanged(msgspec.Struct, frozen=True, gc=False):
    """Changed payload fields only, with their new value (``None`` when removed)."""

    changes: dict[str, Any]


class InstallConfirmed(msgspec.Struct, frozen=True, gc=False):
    pass


class Enabled(msgspec.Struct, frozen=True, gc=False):
    pass


class Disabled(msgspec.Struct, frozen=True, gc=False):
    pass


class Uninstalled(msgspec.Struct, frozen=True, gc=False):
    pass


class TenantForgotten(msgspec.Struct, frozen=True, gc=False):
    """``ledger forget`` destroyed the tenant's data key (SPEC §5): its sealed secrets are
    unreadable from here on. ``reason`` is the operator's words; the metadata names the
    operator's OS user and host."""

    reason: str


# ------------------------------------------------ Forge lifecycle (SPEC §10)
# Snake-case field names on the wire: these events are ours, not a copy of a payload.


class ForgeInstalled(msgspec.Struct, frozen=True, gc=False):
    """The first call of a Forge installation: what its token and body said then.

    ``license`` is the token's ``app.license`` in the ledger's own names (``active``,
    ``type``, ``evaluation``, ``trial_end``, ``subscription_end``), or None.
    """

    installation_id: str
    cloud_id: str | None
    site_ari: str | None
    product: str | None
    app_id: str
    app_version: str | None
    environment_id: str | None
    environment_type: str | None
    installer_account_id: str | None
    license: dict[str, Any] | None


class ForgeUpgraded(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    from_: str | None
    to: str


class ForgeLicenseChanged(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    from_: dict[str, Any] | None
    to: dict[str, Any] | None


class ForgeDetailsChanged(msgspec.Struct, frozen=True, gc=False):
    """Changed recorded fields only (ForgeInstalled's names), with their new value."""

    changes: dict[str, Any]


class ForgeInstallConfirmed(msgspec.Struct, frozen=True, gc=False):
    """A later ``installed`` or ``upgraded`` delivery that changed no recorded field."""

    route: str


class ForgeUninstalling(msgspec.Struct, frozen=True, gc=False):
    pass


# ------------------------------------------- license and presence checks (SPEC §11)


class LicenseChanged(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    """The tenant's site answered the license check with another license than the one
    last recorded: ``from``/``to`` each ``{"active", "type", "evaluation", "sen"}`` (the
    ledger's names), or None (none recorded yet / the site named none)."""

    from_: dict[str, Any] | None
    to: dict[str, Any] | None


class SiteRefused(msgspec.Struct, frozen=True, gc=False):
    """The tenant's site answered the license check 401, 403 or 404: the app is very
    likely gone from it (deleted site, or an ``uninstalled`` that never reached us)."""

    status: int


FORGE_EVENT_TYPES: Final = frozenset(
    {
        "ForgeInstalled",
        "ForgeUpgraded",
        "ForgeLicenseChanged",
        "ForgeDetailsChanged",
        "ForgeInstallConfirmed",
        "ForgeUninstalling",
    }
)

EventData = (
    Installed
    | SecretRotated
    | BaseUrlChanged
    | DescriptorUpgraded
    | DetailsChanged
    | InstallConfirmed
    | Enabled
    | Disabled
    | Uninstalled
    | TenantForgotten
    | ForgeInstalled
    | ForgeUpgraded
    | ForgeLicenseChanged
    | ForgeDetailsChanged
    | ForgeInstallConfirmed
    | ForgeUninstalling
    | LicenseChanged
    | SiteRefused
)

EVENT_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls
    for cls in (
        Installed,
        SecretRotated,
        BaseUrlChanged,
        DescriptorUpgraded,
        DetailsChanged,
        InstallConfirmed,
        Enabled,
        Disabled,
        Uninstalled,
        TenantForgotten,
        ForgeInstalled,
        ForgeUpgraded,
        ForgeLicenseChanged,
        ForgeDetailsChanged,
        ForgeInstallConfirmed,
        ForgeUninstalling,
        LicenseChanged,
        SiteRefused,
    )
}

# Current schema version per type. Bump it together with an upcaster from the
# previous version; never change the meaning of a stored version.
SCHEMA_VERSIONS: Final[dict[str, int]] = {name: 1 for name in EVENT_TYPES} | {
    "DescriptorUpgraded": 2,
}


class Metadata(msgspec.Struct, frozen=True, gc=False, omit_defaults=True):
    """Where an event came from. Holds a token's SHA-256, never the token itself."""

    call_id: str | None = None
    received_at: str | None = None
    token_sha256: str | None = None
    iat: int | None = None
    alg: str | None = None
    kid: str | None = None
    remote_addr: str | None = None
    path: str | None = None
    descriptor_version: str | None = None
    # The app base URL the call was signed for (SPEC §4 rule 3: current or previous).
    app_base_url: str | None = None
    # HMAC-SHA256 of the body keyed by the token (app.ingest.connect.tokens.body_mac): the same token
    # with another body is refused as token_reused (SPEC §4 rule 6).
    body_mac: str | None = None
    # Forge calls (SPEC §10 rules 1, 5, 6): never the token itself, nor the context token.
    delivery_sha256: str | None = None
    jti: str | None = None
    trace_id: str | None = None
    retry_count: int | None = None
    retry_reason: str | None = None
    context_token_sha256: str | None = None
    # ``ledger forget`` (TenantForgotten): who ran it, as the OS user, and on which machine.
    operator: str | None = None
    host: str | None = None
    # The ledger's own observations (LicenseChanged, SiteRefused): "license_check".
    source: str | None = None


# ---------------------------------------------------------------- upcasting

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


def _descriptor_upgraded_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    # v1 recorded only the version the tenant moved to, as {"version": "<to>"}.
    return {"from": data.get("previous"), "to": data["version"]}


UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {
    ("DescriptorUpgraded", 1): _descriptor_upgraded_v1_to_v2,
}


def upcast(event_type: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    current = SCHEMA_VERSIONS[event_type]
    while schema_version < current:
        data = UPCASTERS[(event_type, schema_version)](data)
        schema_version += 1
    if schema_version > current:
        raise ValueError(
            f"{event_type} schema version {schema_version} is newer than this code ({current})"
        )
    return data


# ---------------------------------------------------------------- encoding

_json_encoder = msgspec.json.Encoder(order="sorted")
_json_decoder = msgspec.json.Decoder()
_metadata_decoder = msgspec.json.Decoder(Metadata)
_pair_decoder = msgspec.json.Decoder(dict[str, str | None])


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: the exact bytes stored and hashed."""
    return _json_encoder.encode(value)


def data_to_json(data: EventData) -> bytes:
    """The stored (wire) shape of an event's data: camelCase payload fields."""
    return _json_encoder.encode(data_as_dict(data))


def metadata_to_json(metadata: Metadata) -> bytes:
    return _json_encoder.encode(metadata)


# Stored metadata JSON -> Metadata: the decoder's own method (no Python call around
# it), as every event read runs it.
decode_metadata: Final[Callable[[bytes | str], Metadata]] = _metadata_decoder.decode


_EMPTY: Final[dict[str, EventData]] = {
    "InstallConfirmed": InstallConfirmed(),
    "Enabled": Enabled(),
    "Disabled": Disabled(),
    "Uninstalled": Uninstalled(),
    "ForgeUninstalling": ForgeUninstalling(),
}


def decode_data(event_type: str, schema_version: int, raw: bytes | str) -> EventData:
    """Stored JSON text → typed data of the current schema version."""
    empty = _EMPTY.get(event_type)
    if empty is not None:
        return empty
    if schema_version == SCHEMA_VERSIONS.get(event_type):
        # Fast paths for the current versions: one C-level decode.
        if event_type == "BaseUrlChanged" or event_type == "DescriptorUpgraded":
            pair = _pair_decoder.decode(raw)
            return EVENT_TYPES[event_type](from_=pair.get("from"), to=pair["to"])
        body = _json_decoder.decode(raw)
    else:
        body = upcast(event_type, schema_version, _json_decoder.decode(raw))
    return data_from_dict(event_type, body)


def _sealed(value: Any) -> SealedSecret:
    # Built directly rather than by msgspec.convert: this runs for every install
    # and rotation a rebuild reads.
    if not isinstance(value, dict):
        raise ValueError("sharedSecret must be a sealed secret object")
    return SealedSecret(value["alg"], value["nonce"], value["ct"], value["ad"])


def data_from_dict(event_type: str, body: dict[str, Any]) -> EventData:
    if event_type == "Installed":
        details = dict(body)
        sealed = details.pop("sharedSecret", None)
        return Installed(
            details.pop("key"),
            details.pop("clientKey"),
            details.pop("baseUrl"),
            _sealed(sealed) if sealed is not None else None,
            details,
        )
    if event_type == "SecretRotated":
        return SecretRotated(_sealed(body["sharedSecret"]))
    if event_type == "BaseUrlChanged":
        return BaseUrlChanged(from_=body["from"], to=body["to"])
    if event_type == "DescriptorUpgraded":
        return DescriptorUpgraded(from_=body.get("from"), to=body["to"])
    if event_type == "DetailsChanged":
        return DetailsChanged(changes=dict(body))
    if event_type in _EMPTY:
        return _EMPTY[event_type]
    if event_type == "TenantForgotten":
        return TenantForgotten(reason=str(body["reason"]))
    if event_type == "ForgeDetailsChanged":
        return ForgeDetailsChanged(changes=dict(body))
    if event_type in FORGE_EVENT_TYPES:
        return msgspec.convert(body, EVENT_TYPES[event_type])
    if event_type == "LicenseChanged" or event_type == "SiteRefused":
        return msgspec.convert(body, EVENT_TYPES[event_type])
    raise ValueError(f"unknown event type {event_type!r}")


def data_as_dict(data: EventData) -> dict[str, Any]:
    """The wire shape as a plain dict (for APIs and exports; secrets still sealed)."""
    if isinstance(data, Installed):
        body: dict[str, Any] = dict(data.details)
        body["key"] = data.key
        body["clientKey"] = data.client_key
        body["baseUrl"] = data.base_url
        if data.shared_secret is not None:
            body["sharedSecret"] = msgspec.structs.asdict(data.shared_secret)
        return body
    if isinstance(data, SecretRotated):
        return {"sharedSecret": msgspec.structs.asdict(data.shared_secret)}
    if isinstance(data, BaseUrlChanged | DescriptorUpgraded):
        return {"from": data.from_, "to": data.to}
    if isinstance(data, DetailsChanged | ForgeDetailsChanged):
        return dict(data.changes)
    return dict(msgspec.to_builtins(data))
