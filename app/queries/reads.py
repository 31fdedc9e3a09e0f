"""The reads of the admin API as plain functions: one data path for the admin API and
the CLI (and anything else that shows the ledger), so both give the same answer.

Each function takes a store or the projection storage and returns the admin API's
JSON document (a dict of builtins). Secrets never appear: events go through
``redact_event``, and tenant rows never held one. A missing tenant raises
``NotFound``. Arguments arrive parsed (``app.queries.reads.parse_as_of`` is the one rule
for ``as_of``).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec

from eventstore.clock import format_timestamp, parse_timestamp, utcnow
from eventstore.events import (
    EVENT_TYPES,
    SCHEMA_VERSIONS,
    EventData,
    Metadata,
    data_as_dict,
    decode_data,
    decode_metadata,
    installation_stream_id,
    stream_id_for,
)
from eventstore.ids import installation_ari
from eventstore.store import EventStore
from eventstore.values import RecordedEvent, StoredEvent
from projections import tenants as tenants_fold
from projections.descriptors import latest_version
from projections.erasure_due import ErasureDue, Evidence, erasure_due
from projections.installations import (
    InstallationRow,
    LinkRow,
    client_keys_at,
    fold_installation,
)
from projections.migration import migration_report
from projections.model import INSTALLED, DescriptorRow, ReimportRow, TenantRow
from projections.presumed_gone import silence_threshold, site_refused, uninstalling
from projections.storage.base import ProjectionStorage

REDACTED = "[redacted]"
STRAGGLERS_SHOWN = 100  # a descriptors answer lists at most this many stragglers


MAX_POSITION: Final = 2**63 - 1  # a PostgreSQL bigint, a SQLite INTEGER


class BadParameter(Exception):
    """A query parameter the reads refuse (the admin API answers 400, the CLI exits 2)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def parse_as_of(value: str | None) -> int | datetime | None:
    """``as_of`` is a log position (ASCII digits) or an RFC 3339 time in years 1-9999 UTC."""
    if value is None or value == "":
        return None
    # str.isdigit and datetime.fromisoformat accept far more (superscripts, week
    # dates) than either form.
    if value.isascii() and value.isdigit():
        position = int(value)
        if position > MAX_POSITION:
            raise BadParameter(f"as_of: a position is at most {MAX_POSITION}")
        return position
    try:
        # Nanoseconds are cut to the microseconds Python keeps; the offset is applied
        # here, where a time at the edge of the calendar overflows (a 400, not a 500).
        return parse_timestamp(re.sub(r"(\.[0-9]{6})[0-9]+", r"\1", value))
    except (ValueError, OverflowError):
        raise BadParameter(
            "as_of must be a position or an RFC 3339 time in years 1-9999 UTC"
        ) from None


class NotFound(Exception):
    """No such tenant (``error`` is the admin API's error code)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(detail)
        self.error = error
        self.detail = detail


def redact_event(event: RecordedEvent) -> dict[str, Any]:
    """An event object with SPEC §3 field names and every shared secret redacted."""
    shown = event.as_dict()
    data = shown["data"]
    if "sharedSecret" in data:
        data["sharedSecret"] = REDACTED
    return shown


def tenant_object(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(row)
    for name in (
        "installed_at", "updated_at", "last_seen_at", "forgotten_at", "site_refused_at", "left_at"
    ):
        value = getattr(row, name, None)
        if isinstance(value, datetime):
            out[name] = format_timestamp(value)
    return out


def _stream_or_not_found(
    store: EventStore, client_key: str, up_to: int | datetime | None
) -> list[RecordedEvent]:
    stream = stream_id_for(client_key)
    events = store.read_stream(stream, up_to)
    if not events:
        raise _missing(store, stream, up_to)
    return events


def _missing(store: EventStore, stream: str, up_to: int | datetime | None) -> NotFound:
    """Why a tenant's stream read (up to ``up_to``) found no event."""
    if up_to is None or store.stream_version(stream) == 0:
        return NotFound("unknown_tenant", "no such clientKey")
    return NotFound("not_yet_installed", "the tenant did not exist at as_of")


def tenant_row(store: EventStore, client_key: str, as_of: int | datetime | None) -> TenantRow:
    """The tenant folded from its stream (up to as_of); NotFound when there is none."""
    row = tenants_fold.fold(_stream_or_not_found(store, client_key, as_of))
    if row is None:
        raise NotFound("unknown_tenant", "never installed")
    return row


def tenant_answer(
    store: EventStore, client_key: str, as_of: int | datetime | None
) -> dict[str, Any]:
    """``GET /admin/tenants/{clientKey}``: the tenant folded from its stream (up to as_of)."""
    return tenant_object(tenant_row(store, client_key, as_of))


def tenant_events_answer(
    store: EventStore, client_key: str, as_of: int | datetime | None = None
) -> dict[str, Any]:
    """``GET /admin/tenants/{clientKey}/events``: the tenant's events, oldest first, as
    the admin API's JSON decoded (one path: ``tenant_events_json``)."""
    return _HISTORY_DECODER.decode(tenant_events_json(store, client_key, as_of))


def tenant_events_json(
    store: EventStore, client_key: str, as_of: int | datetime | None = None
) -> bytes:
    """The admin API's history of a tenant as JSON (``stream_events_json``)."""
    stream = stream_id_for(client_key)
    body = stream_events_json(store, stream, as_of)
    if body is None:
        raise _missing(store, stream, as_of)
    return body


def stream_events_json(
    store: EventStore, stream_id: str, up_to: int | datetime | None = None
) -> bytes | None:
    """``{"events": [...]}`` of a stream (up to ``up_to``), oldest first, as JSON: every
    event as ``redact_event`` shows it, byte for byte what msgspec makes of those
    objects; None when the stream has no event (then). The one path of every history
    (a tenant's, a Forge installation's, the console's timelines, the CLI's).

    Built from the stored rows (``read_stream_stored``): an event whose shown data is
    its stored JSON text as it lies is passed through undecoded (``_stored_data``);
    only the metadata, whose stored key order differs from the shown one, is decoded."""
    events = store.read_stream_stored(stream_id, up_to)
    if not events:
        return None
    return _ENCODER.encode(_History(list(map(_shown, events))))


def stream_events(
    store: EventStore, stream_id: str, up_to: int | datetime | None = None
) -> list[dict[str, Any]]:
    """A stream's events as the admin API shows them (``stream_events_json`` decoded),
    oldest first; none when the stream has none (then)."""
    body = stream_events_json(store, stream_id, up_to)
    return [] if body is None else _HISTORY_DECODER.decode(body)["events"]


_HISTORY_DECODER = msgspec.json.Decoder(dict[str, list[dict[str, Any]]])


class _ShownEvent(msgspec.Struct, gc=False):
    """``redact_event``'s object as msgspec encodes it: the keys of
    ``RecordedEvent.as_dict`` in its order; the metadata struct encodes as
    ``msgspec.to_builtins`` turns it into a dict (same fields, defaults left out); the
    time is the stored text, ``format_timestamp``'s form."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    data: Any
    metadata: Metadata
    recorded_at: str
    hash: str


class _History(msgspec.Struct, gc=False):
    events: list[_ShownEvent]


_ENCODER = msgspec.json.Encoder()


def _shown(event: StoredEvent) -> _ShownEvent:
    return _ShownEvent(event.position, event.stream_id, event.version, event.type,
                       event.schema_version, _stored_data(event), decode_metadata(event.metadata),
                       event.recorded_at, event.hash)  # fmt: skip


# Types whose data (current schema version) shows as exactly its stored JSON text:
# stored by ``data_to_json`` (msgspec, keys sorted, the only writer of the log), shown
# as msgspec encodes the decoded dict (keys in the order read: sorted too) or a struct
# whose fields are declared in sorted order; msgspec writes back the text it reads
# (numbers of any size, escapes). None of them carries a secret, and ``_stored_data``
# checks the text besides (a details change is a payload's fields: it could name
# one). Installed and SecretRotated (secrets; an install's fields are reordered),
# ForgeInstalled (fields not declared in sorted order) and TenantForgotten (its reason
# shown as text) are decoded, as is any older schema version (upcast).
_VERBATIM: Final = frozenset(
    {
        "DetailsChanged",
        "ForgeDetailsChanged",
        "BaseUrlChanged",
        "DescriptorUpgraded",
        "ForgeUpgraded",
        "ForgeLicenseChanged",
        "ForgeInstallConfirmed",
        "LicenseChanged",
        "SiteRefused",
    }
)
# Types whose data always shows as {} (decode_data ignores what is stored for them).
_FIELDLESS_NAMES: Final = frozenset(
    name for name, t in EVENT_TYPES.items() if not msgspec.structs.fields(t)
)
_EMPTY_DATA: Final = msgspec.Raw(b"{}")


def _stored_data(event: StoredEvent) -> Any:
    """``redact_event``'s data of a stored event, as msgspec is to encode it."""
    kind, raw = event.type, event.data
    if kind in _FIELDLESS_NAMES:
        return _EMPTY_DATA
    # No "sharedSecret" in the text, literally or spelt with a \u escape (the only
    # escape that can write a letter): no key can be named so, at any depth.
    if (
        kind in _VERBATIM
        and event.schema_version == SCHEMA_VERSIONS[kind]
        and b"sharedSecret" not in raw
        and b"\\u" not in raw
    ):
        return msgspec.Raw(raw)
    return _shown_data(decode_data(kind, event.schema_version, raw))


def _shown_data(data: EventData) -> dict[str, Any]:
    """``redact_event``'s data of a decoded event."""
    shown = data_as_dict(data)
    if "sharedSecret" in shown:
        shown["sharedSecret"] = REDACTED
    return shown


def tenants_page(
    storage: ProjectionStorage,
    state: str | None,
    after: str | None,
    limit: int,
    presumed_gone: bool = False,
    grace_hours: float = 24,
    now: datetime | None = None,
    search: str | None = None,
) -> list[TenantRow]:
    """One page of tenants by clientKey (or of those presumed gone, for either reason).

    ``search``: a case-insensitive part of the client key or base URL (the console's box)."""
    if not presumed_gone:
        return storage.list_tenants(state=state, after=after, limit=limit, search=search)
    found = presumed_gone_page(storage, grace_hours, after, limit, now=now, search=search)
    return [row for row, _ in found]


def presumed_gone_page(
    storage: ProjectionStorage,
    grace_hours: float,
    after: str | None,
    limit: int,
    *,
    now: datetime | None = None,
    search: str | None = None,
) -> list[tuple[TenantRow, list[str]]]:
    """One page (by clientKey) of the installed tenants presumed gone, each with why:
    ``silent`` (no call since a descriptor version older than the grace, SPEC §6),
    ``uninstalling`` (their linked Forge installation sent ``pre-uninstall``, SPEC §10)
    and/or ``site_refused`` (their site refused the license check, SPEC §11).

    The silent ones come from an indexed query; the uninstalling ones from the
    installations in that state (few). A page of their union is exact: any of its
    first ``limit`` keys is among the first ``limit`` of one of the two."""
    threshold = silence_threshold(
        storage.load_rows("descriptors"), now or utcnow(), timedelta(hours=grace_hours)
    )
    silent = (
        []
        if threshold is None
        else storage.list_tenants(
            state=INSTALLED, after=after, limit=limit, seen_before=threshold, search=search
        )
    )
    reasons: dict[str, tuple[TenantRow, list[str]]] = {
        r.client_key: (r, ["silent"]) for r in silent
    }
    for row in uninstalling_tenants(storage):
        if (after is None or row.client_key > after) and _matches(row, search):
            reasons.setdefault(row.client_key, (row, []))[1].append("uninstalling")
    refused = storage.list_tenants(
        state=INSTALLED, after=after, limit=limit, search=search, refused=True
    )
    for row in site_refused(refused):
        reasons.setdefault(row.client_key, (row, []))[1].append("site_refused")
    return [reasons[key] for key in sorted(reasons)[:limit]]


def presumed_gone_totals(
    storage: ProjectionStorage,
    grace_hours: float,
    *,
    now: datetime | None = None,
    search: str | None = None,
) -> dict[str, int]:
    """How many installed tenants ``presumed_gone_page`` lists over all its pages, and
    how many for each reason (a tenant with two reasons counts once in ``all``)."""
    threshold = silence_threshold(
        storage.load_rows("descriptors"), now or utcnow(), timedelta(hours=grace_hours)
    )
    silent = both = 0
    if threshold is not None:
        silent = storage.count_tenants(state=INSTALLED, seen_before=threshold, search=search)
        both = storage.count_tenants(
            state=INSTALLED, seen_before=threshold, search=search, refused=True
        )
    refused = storage.count_tenants(state=INSTALLED, search=search, refused=True)
    leaving = [row for row in uninstalling_tenants(storage) if _matches(row, search)]
    only_leaving = [  # uninstalling and neither silent nor refused: not counted yet
        row
        for row in leaving
        if row.site_refused_at is None
        and (threshold is None or row.last_seen_at >= threshold)
    ]
    return {
        "all": silent + refused - both + len(only_leaving),
        "silent": silent,
        "uninstalling": len(leaving),
        "site_refused": refused,
    }


def _matches(row: TenantRow, search: str | None) -> bool:
    needle = (search or "").lower()
    return needle in row.client_key.lower() or needle in row.base_url.lower()


IN_CHUNK = 500  # values per IN (…) list: far below every database's parameter limit


def uninstalling_tenants(storage: ProjectionStorage) -> list[TenantRow]:
    """Installed tenants whose Forge installation is uninstalling (``uninstalling``'s
    rule), read from the uninstalling installations and the tenants they touch only."""
    leaving: list[InstallationRow] = []
    after: str | None = None
    while True:
        page = storage.list_installations(state="uninstalling", after=after, limit=1000)
        leaving += page
        if len(page) < 1000:
            break
        after = page[-1].installation_id
    tenants: dict[str, TenantRow] = {}
    keys = sorted({key for row in leaving for key in row.client_keys})
    ids = [row.installation_id for row in leaving]
    for start in range(0, max(len(keys), len(ids)), IN_CHUNK):
        named = storage.tenants_named(keys[start : start + IN_CHUNK], ids[start : start + IN_CHUNK])
        tenants.update((row.client_key, row) for row in named)
    linked = {row.installation_id: row for row in leaving}
    chosen = sorted(tenants)
    for start in range(0, len(chosen), IN_CHUNK):
        for row in storage.list_installations(
            client_keys=chosen[start : start + IN_CHUNK], limit=None
        ):
            linked[row.installation_id] = row
    # The tenant's installation may be an installed one its payload names: fetch those.
    named_ids = [
        t.installation_id
        for t in tenants.values()
        if t.installation_id is not None and t.installation_id not in linked
    ]
    for row in _installations_by_id(storage, named_ids):
        linked[row.installation_id] = row
    return uninstalling(list(tenants.values()), linked.values())


def _installations_by_id(storage: ProjectionStorage, ids: list[str]) -> list[InstallationRow]:
    found: list[InstallationRow] = []
    for start in range(0, len(ids), IN_CHUNK):
        found += storage.list_installations(
            installation_ids=ids[start : start + IN_CHUNK], limit=None
        )
    return found


def tenants_answer(
    storage: ProjectionStorage,
    *,
    state: str | None = None,
    after: str | None = None,
    limit: int = 100,
    presumed_gone: bool = False,
    grace_hours: float = 24,
) -> dict[str, Any]:
    """``GET /admin/tenants``: a page of tenants and the cursor of the next one (with
    ``presumed_gone``: those presumed gone for either reason, as tenant objects)."""
    rows = tenants_page(storage, state, after, limit, presumed_gone, grace_hours)
    return {
        "tenants": [tenant_object(r) for r in rows],
        "next": rows[-1].client_key if len(rows) == limit else None,
    }


def presumed_gone_answer(
    storage: ProjectionStorage,
    *,
    grace_hours: float = 24,
    after: str | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """``GET /admin/presumed-gone``: tenant objects with ``presumed`` (their reasons)."""
    found = presumed_gone_page(storage, grace_hours, after, limit)
    return {
        "tenants": [{**tenant_object(row), "presumed": why} for row, why in found],
        "next": found[-1][0].client_key if len(found) == limit else None,
    }


def descriptor_rows(storage: ProjectionStorage) -> list[DescriptorRow]:
    """Descriptor versions in the order first seen."""
    rows: list[DescriptorRow] = storage.load_rows("descriptors")
    rows.sort(key=lambda r: r.first_seen_position)
    return rows


def descriptors_answer(storage: ProjectionStorage) -> dict[str, Any]:
    """``GET /admin/descriptors``: versions seen, the latest, and who is not on it yet."""
    rows = descriptor_rows(storage)
    latest = latest_version(rows)
    stragglers = (
        []
        if latest is None
        else storage.list_tenants(state=INSTALLED, not_version=latest, limit=STRAGGLERS_SHOWN)
    )
    return {
        "latest": latest,
        "versions": [
            {
                "version": r.version,
                "first_seen_at": format_timestamp(r.first_seen_at),
                "tenants": r.tenants,
            }
            for r in rows
        ],
        "stragglers": [tenant_object(r) for r in stragglers],
    }


def reimport_rows(storage: ProjectionStorage) -> list[ReimportRow]:
    """Reimport links, oldest first."""
    rows: list[ReimportRow] = storage.load_rows("reimports")
    rows.sort(key=lambda r: (r.detected_at, r.client_key))
    return rows


def reimports_answer(storage: ProjectionStorage) -> dict[str, Any]:
    """``GET /admin/reimports``: links between a new clientKey and the one that held its URL."""
    return {"links": [reimport_object(r) for r in reimport_rows(storage)]}


def reimport_object(row: ReimportRow) -> dict[str, Any]:
    """A reimport link as the admin API shows it."""
    return {
        "base_url": row.base_url,
        "previous_client_key": row.previous_client_key,
        "client_key": row.client_key,
        "detected_at": format_timestamp(row.detected_at),
        "kind": row.kind,
    }


# ------------------------------------------------------------------- Forge (SPEC §10)


def installation_object(row: InstallationRow) -> dict[str, Any]:
    return {
        "installation_id": row.installation_id,
        "installation_ari": installation_ari(row.installation_id),
        "cloud_id": row.cloud_id,
        "product": row.product,
        "app_version": row.app_version,
        "environment_type": row.environment_type,
        "state": row.state,
        "license_active": row.license_active,
        "client_keys": list(row.client_keys),
        "client_key": row.client_key,
        "installed_at": format_timestamp(row.installed_at),
        "updated_at": format_timestamp(row.updated_at),
        "last_seen_at": format_timestamp(row.last_seen_at),
        "version": row.version,
    }


def installation_row_at(
    store: EventStore, storage: ProjectionStorage, uuid: str, up_to: int | datetime | None
) -> InstallationRow | None:
    """One installation folded from its stream up to ``up_to`` (None: all), with its
    tenants as the links seen up to then say (its stream alone cannot tell them)."""
    row = fold_installation(store.read_stream(installation_stream_id(uuid), up_to))
    if row is None:
        return None
    keys = client_keys_at(lambda named: storage.list_links(installation_id=named), uuid, up_to)
    return msgspec.structs.replace(row, client_keys=keys, client_key=keys[-1] if keys else None)


def link_object(row: LinkRow) -> dict[str, Any]:
    previous = row.previous_installation_id
    return {
        "kind": row.kind,
        "client_key": row.client_key,
        "installation_id": row.installation_id,
        "installation_ari": installation_ari(row.installation_id),
        "previous_installation_id": previous,
        "previous_installation_ari": installation_ari(previous) if previous else None,
        "evidence": {"stream": row.evidence_stream, "position": row.evidence_position},
        "seen_at": format_timestamp(row.seen_at),
    }


def installations_answer(
    storage: ProjectionStorage,
    *,
    state: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> dict[str, Any]:
    """``GET /admin/installations``: a page by installation id (``after``: a bare UUID)."""
    rows = storage.list_installations(state=state, after=after, limit=limit)
    return {
        "installations": [installation_object(r) for r in rows],
        "next": rows[-1].installation_id if len(rows) == limit else None,
    }


def links_answer(
    storage: ProjectionStorage,
    *,
    kind: str | None = None,
    client_key: str | None = None,
    installation_id: str | None = None,
) -> dict[str, Any]:
    """``GET /admin/links``: identity links in the order seen, filtered in the query."""
    rows = storage.list_links(kind=kind, client_key=client_key, installation_id=installation_id)
    return {"links": [link_object(r) for r in rows]}


def migration_answer(storage: ProjectionStorage) -> dict[str, Any]:
    """``GET /admin/migration``: linked, Connect only, Forge only (computed now)."""
    report = migration_report(
        storage.load_rows("tenants"),
        storage.load_rows("installations"),
        storage.load_rows("links"),
    )
    return {
        "linked": report.linked,
        "connect_only": [
            {
                "client_key": t.client_key,
                "base_url": t.base_url,
                "installation_id": t.installation_id,
                "installation_ari": installation_ari(t.installation_id)
                if t.installation_id
                else None,
            }
            for t in report.connect_only
        ],
        "forge_only": [installation_object(r) for r in report.forge_only],
    }


def rejections_answer(
    store: EventStore,
    *,
    limit: int = 100,
    reason: str | None = None,
    since: datetime | None = None,
    client_key: str | None = None,
) -> dict[str, Any]:
    """``GET /admin/rejections``: refused calls, newest first, optionally filtered."""
    rows = store.list_rejections(limit, reason=reason, since=since, client_key=client_key)
    return {"rejections": [r.as_dict() for r in rows]}


def verify_answer(store: EventStore) -> dict[str, Any]:
    """``GET /admin/verify``: the chain recomputed, as the admin API and the console show it."""
    report = store.verify()
    answer: dict[str, Any] = {"ok": report.ok, "events": report.events, "head": report.head}
    if not report.ok:
        answer["first_bad_position"] = report.first_bad_position
        answer["reason"] = report.reason
    return answer


def erasure_due_page(
    store: EventStore,
    storage: ProjectionStorage,
    after_days: int,
    *,
    now: datetime | None = None,
    after: str | None = None,
    limit: int = 1000,
) -> list[ErasureDue]:
    """One page (by clientKey) of the tenants due for erasure (SPEC §6,
    ``projections.erasure_due``): uninstalled or refused by their site (an indexed
    query), or uninstalling on Forge (few: each one's event read from its stream)."""
    now = now or utcnow()
    grace = timedelta(days=after_days)
    gone = storage.list_tenants(after=after, limit=limit, left_before=now - grace)
    leaving = [
        row for row in uninstalling_tenants(storage) if after is None or row.client_key > after
    ]
    evidence = _uninstalling_evidence(store, storage, leaving)
    rows = {row.client_key: row for row in [*leaving, *gone]}
    found = erasure_due([rows[key] for key in sorted(rows)], now, grace, evidence)
    return found[:limit]


def _uninstalling_evidence(
    store: EventStore, storage: ProjectionStorage, tenants: list[TenantRow]
) -> dict[str, Evidence]:
    """For each tenant, the ``ForgeUninstalling`` of its uninstalling installation."""
    found: dict[str, Evidence] = {}
    for tenant in tenants:
        linked = storage.list_installations(client_keys=[tenant.client_key], limit=None)
        if tenant.installation_id is not None:
            linked += _installations_by_id(storage, [tenant.installation_id])
        leaving = [row for row in linked if row.state == "uninstalling"]
        if not leaving:
            continue
        chosen = max(leaving, key=lambda row: row.installed_position)
        stream_id = installation_stream_id(chosen.installation_id)
        events = [e for e in store.read_stream(stream_id) if e.type == "ForgeUninstalling"]
        if events:
            event = events[-1]
            found[tenant.client_key] = Evidence(stream_id, event.position, event.recorded_at)
    return found


def erasure_due_object(due: ErasureDue) -> dict[str, Any]:
    return {
        **tenant_object(due.tenant),
        "reason": due.reason,
        "gone_since": format_timestamp(due.gone_since),
        "due_at": format_timestamp(due.due_at),
        "evidence": {
            "stream_id": due.evidence.stream_id,
            "position": due.evidence.position,
            "recorded_at": format_timestamp(due.evidence.at),
        },
    }


def erasure_due_answer(
    store: EventStore,
    storage: ProjectionStorage,
    after_days: int | None,
    *,
    now: datetime | None = None,
    after: str | None = None,
    limit: int = 1000,
) -> dict[str, Any]:
    """``GET /admin/erasure-due``: the tenants due for erasure, each with why, since
    when, the date it became due and the evidence; ``after_days`` null (and no tenant)
    while ``LEDGER_ERASURE_AFTER_DAYS`` is unset."""
    if after_days is None:
        # Nothing is due, but the answer still stands for the store: one that is down
        # says so (503) rather than an empty list that reads as "nothing to erase".
        storage.checkpoints()
        return {"after_days": None, "tenants": [], "next": None}
    found = erasure_due_page(store, storage, after_days, now=now, after=after, limit=limit)
    return {
        "after_days": after_days,
        "tenants": [erasure_due_object(due) for due in found],
        "next": found[-1].tenant.client_key if len(found) == limit else None,
    }
