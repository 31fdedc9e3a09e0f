"""The Forge read models (SPEC §10): ``installations`` and the identity ``links``.

Both are folded from *both* kinds of streams:

* ``tenant:<clientKey>`` streams: an ``Installed`` whose payload carries an
  ``installationId``, or a ``DetailsChanged`` that changes it, is evidence that this
  Connect tenant is that Forge installation: a ``connect`` link.
* ``installation:<uuid>`` streams: the ``Forge*`` events give each installation's
  row; a ``ForgeInstalled`` on a cloudId where another installation was seen before
  is a ``reinstall`` link (previous → new installation).

Rules:

* One installation can span several Atlassian apps of a site (Jira and Confluence,
  GA February 2026), so it can be linked to several Connect tenants: ``client_keys``
  lists them, oldest link first; ``client_key`` is the most recently linked one (the
  last), or None. Only a ``connect`` link seen for the first time moves its tenant to
  the end (a tenant naming it again does not take it back). A reinstalled installation
  with no link of its own inherits the tenants of the installation it replaced on that
  site (the same customer; the link says why).
* ``state`` is ``installed`` until a ``ForgeUninstalling`` (``uninstalling``); an
  ``installed``/``upgraded`` delivery after it (``ForgeInstallConfirmed`` or
  ``ForgeUpgraded``) makes it ``installed`` again.
* Links are evidence, written once (the first event that showed them) and never
  changed: ``evidence_stream``/``evidence_position`` name that event.

Both projections share one fold (``ForgeFold``); each hands over its own table's
rows. Installation ids are bare lower-case UUIDs (``projections.forge_ids``).

Every fold here is total (SPEC §6): a recorded field of an unexpected JSON type is
read as its JSON text (text columns) or as unknown (``license_active``), never raised on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Self

import msgspec
from msgspec.structs import astuple

from eventstore.events import (
    DetailsChanged,
    ForgeDetailsChanged,
    ForgeInstalled,
    ForgeLicenseChanged,
    ForgeUpgraded,
    Installed,
    canonical_json,
    client_key_of,
    installation_id_of,
)
from eventstore.values import RecordedEvent
from projections.model import fold_by_type, installation_id, stream_client_key

if TYPE_CHECKING:
    from projections.model import Projection

__all__ = [
    "InstallationRow",
    "InstallationsProjection",
    "LinkRow",
    "LinksProjection",
    "client_keys_at",
    "fold_installation",
]

InstallationState = Literal["installed", "uninstalling"]
LinkKind = Literal["connect", "reinstall"]
CONNECT: Final = "connect"
REINSTALL: Final = "reinstall"


class InstallationRow(msgspec.Struct, frozen=True, gc=False):
    installation_id: str
    cloud_id: str | None
    product: str | None
    app_version: str | None
    environment_type: str | None
    state: InstallationState
    license_active: bool | None
    client_keys: tuple[str, ...]  # every linked Connect tenant, oldest link first
    client_key: str | None  # the most recently linked one (the last of client_keys)
    installed_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    version: int
    installed_position: int  # orders installations of one site exactly (see from_rows)


class LinkRow(msgspec.Struct, frozen=True, gc=False):
    link_id: str  # "<kind>:<client_key or previous installation>:<installation>"
    kind: LinkKind
    client_key: str | None
    installation_id: str
    previous_installation_id: str | None
    evidence_stream: str
    evidence_position: int
    seen_at: datetime


class _Installation(msgspec.Struct, gc=False):
    """The fold's mutable twin of ``InstallationRow`` (same fields, same order)."""

    installation_id: str
    cloud_id: str | None
    product: str | None
    app_version: str | None
    environment_type: str | None
    state: InstallationState
    license_active: bool | None
    client_keys: tuple[str, ...]
    client_key: str | None
    installed_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    version: int
    installed_position: int


def _freeze(record: _Installation) -> InstallationRow:
    return InstallationRow(*astuple(record))


def _active(license: object) -> bool | None:
    """The license's ``active`` (``isActive`` in a shape that predates the ledger's own
    names); None (unknown) for no license or a value that is not a boolean."""
    if not isinstance(license, dict):
        return None
    value = license.get("active", license.get("isActive"))
    return value if isinstance(value, bool) else None


def _text(value: object) -> str | None:
    """A recorded text field as a text column holds it: None, the text, or the JSON
    text of any other value (evidence kept, never a crash in a read model)."""
    if value is None or isinstance(value, str):
        return value
    try:
        return canonical_json(value).decode()
    except (TypeError, ValueError, OverflowError):  # not JSON at all: cannot be in a log
        return repr(value)


def _with_last(keys: tuple[str, ...], client_key: str) -> tuple[str, ...]:
    """``keys`` with ``client_key`` as its most recent (last) entry."""
    return (*(key for key in keys if key != client_key), client_key)


# -------------------------------------------------------- one installation's row


def _new_record(event: RecordedEvent) -> _Installation:
    data: ForgeInstalled = event.data  # type: ignore[assignment]  # by event.type
    at = event.recorded_at
    return _Installation(
        # The stream names the installation (as every later event's handler reads it).
        installation_id=installation_id_of(event.stream_id) or str(data.installation_id),
        cloud_id=_text(data.cloud_id),
        product=_text(data.product),
        app_version=_text(data.app_version),
        environment_type=_text(data.environment_type),
        state="installed",
        license_active=_active(data.license),
        client_keys=(),
        client_key=None,
        installed_at=at,
        updated_at=at,
        last_seen_at=at,
        version=event.version,
        installed_position=event.position,
    )


def _update(record: _Installation, event: RecordedEvent) -> None:
    """Every Forge event but ForgeInstalled, in place."""
    # By ``event.type``, never the data's class: a rebuild folds lean events
    # (projections.lean) whose data has these fields but not these classes.
    event_type = event.type
    changed = True
    if event_type == "ForgeUpgraded":
        upgraded: ForgeUpgraded = event.data  # type: ignore[assignment]  # by event.type
        record.app_version = _text(upgraded.to)
        record.state = "installed"
    elif event_type == "ForgeLicenseChanged":
        license: ForgeLicenseChanged = event.data  # type: ignore[assignment]  # by event.type
        record.license_active = _active(license.to)
    elif event_type == "ForgeDetailsChanged":
        details: ForgeDetailsChanged = event.data  # type: ignore[assignment]  # by event.type
        changes = details.changes
        for name in ("cloud_id", "product", "environment_type"):
            if name in changes:
                setattr(record, name, _text(changes[name]))
    elif event_type == "ForgeInstallConfirmed":
        changed = record.state != "installed"
        record.state = "installed"
    elif event_type == "ForgeUninstalling":
        changed = record.state != "uninstalling"
        record.state = "uninstalling"
    if changed:
        record.updated_at = event.recorded_at
    record.last_seen_at = event.recorded_at
    record.version = event.version


def fold_installation(events: Iterable[RecordedEvent]) -> InstallationRow | None:
    """One installation stream's row (``client_key`` None: links come from elsewhere)."""
    record: _Installation | None = None
    for event in events:
        if event.type == "ForgeInstalled":
            record = _new_record(event)
        elif record is not None and event.type in FORGE_HANDLED:
            _update(record, event)
    return None if record is None else _freeze(record)


def client_keys_at(
    links_of: Callable[[str], Iterable[LinkRow]],
    installation: str,
    up_to: int | datetime | None,
    *,
    hops: int = 64,
) -> tuple[str, ...]:
    """An installation's ``client_keys`` as the fold had them after the events up to
    ``up_to`` (a position or a time; None: all), from the links alone (``links_of``:
    the links naming an installation on either side). A reinstall's inheritance is
    followed back at most ``hops`` installations."""

    def seen(link: LinkRow, limit: int | datetime | None) -> bool:
        if limit is None:
            return True
        if isinstance(limit, int):
            return link.evidence_position <= limit
        return link.seen_at <= limit

    mine = sorted(
        (link for link in links_of(installation) if link.installation_id == installation),
        key=lambda link: link.evidence_position,
    )
    own = [link for link in mine if link.kind == CONNECT and seen(link, up_to)]
    keys: tuple[str, ...] = ()
    reinstall = next((link for link in mine if link.kind == REINSTALL), None)
    if (
        hops > 0
        and reinstall is not None
        and reinstall.previous_installation_id is not None
        and seen(reinstall, up_to)
        and not any(link.evidence_position < reinstall.evidence_position for link in own)
    ):
        keys = client_keys_at(
            links_of,
            reinstall.previous_installation_id,
            reinstall.evidence_position - 1,
            hops=hops - 1,
        )
    for link in own:
        if link.client_key is not None:
            keys = _with_last(keys, link.client_key)
    return keys


FORGE_HANDLED: Final = frozenset(
    {
        "ForgeUpgraded",
        "ForgeLicenseChanged",
        "ForgeDetailsChanged",
        "ForgeInstallConfirmed",
        "ForgeUninstalling",
    }
)


# -------------------------------------------------------- the whole log


class ForgeFold:
    """Installations, links, and the indexes that make links: shared by both projections."""

    __slots__ = ("_clients_of", "_clouds", "_dirty", "_inherited", "_new_links", "_records", "_reinstalls")

    def __init__(self) -> None:
        self._records: dict[str, _Installation] = {}
        self._dirty: dict[str, _Installation] | None = None  # None: all rows are new
        # Which links exist, to make each once, without a set of their ``link_id``
        # texts (~170 bytes a tenant in a rebuild): a tenant of ``_clients_of`` has its
        # ``connect`` link unless it is among those its installation inherited on a
        # reinstall and has not linked itself since (``_inherited``: installation → them);
        # (previous, new installation) of every ``reinstall`` link.
        self._inherited: dict[str, tuple[str, ...]] = {}
        self._reinstalls: set[tuple[str, str]] = set()
        self._new_links: list[LinkRow] = []
        # installation → its Connect tenants, oldest link first
        # (one tenant, the usual case, kept as its clientKey alone: ~50 bytes a tenant
        # less than a 1-tuple in a rebuild; read through ``_clients``/``_set_clients``)
        self._clients_of: dict[str, str | tuple[str, ...]] = {}
        # cloudId → {installation now on it: its installed_position}; the site's latest
        # installation is the one installed last among them (see ``_latest_on``).
        self._clouds: dict[str, dict[str, int]] = {}

    @classmethod
    def from_rows(cls, installations: Iterable[InstallationRow], links: Iterable[LinkRow]) -> Self:
        """Resume from both tables' rows at the same checkpoint."""
        state = cls()
        state._dirty = {}
        linked: set[tuple[str, str]] = set()
        for link in sorted(links, key=lambda row: row.evidence_position):
            if link.kind == CONNECT and link.client_key is not None:
                linked.add((link.client_key, link.installation_id))
                # As ``connect`` did: links rows are first-seen links only, in order.
                known = state._clients(link.installation_id)
                state._set_clients(link.installation_id, _with_last(known, link.client_key))
            else:
                state._reinstalls.add((link.previous_installation_id or "", link.installation_id))
        for row in installations:
            installation = row.installation_id
            state._records[installation] = _Installation(*astuple(row))
            if row.client_keys:  # a row also holds what it inherited on a reinstall
                state._set_clients(installation, tuple(row.client_keys))
                waiting = tuple(k for k in row.client_keys if (k, installation) not in linked)
                if waiting:
                    state._inherited[installation] = waiting
            state._join(row.cloud_id, row.installation_id, row.installed_position)
        return state

    def _clients(self, installation: str) -> tuple[str, ...]:
        """The installation's Connect tenants, oldest link first."""
        keys = self._clients_of.get(installation, ())
        return (keys,) if isinstance(keys, str) else keys

    def _set_clients(self, installation: str, keys: tuple[str, ...]) -> None:
        self._clients_of[installation] = keys[0] if len(keys) == 1 else keys

    def _join(self, cloud_id: str | None, installation: str, installed_position: int) -> None:
        if cloud_id is not None:
            self._clouds.setdefault(cloud_id, {})[installation] = installed_position

    def _leave(self, cloud_id: str | None, installation: str) -> None:
        if cloud_id is not None:
            self._clouds.get(cloud_id, {}).pop(installation, None)

    def _latest_on(self, cloud_id: str | None) -> str | None:
        members = self._clouds.get(cloud_id or "")
        return max(members, key=members.__getitem__) if members else None

    def _touch(self, record: _Installation) -> None:
        if self._dirty is not None:
            self._dirty[record.installation_id] = record

    def _links_itself(self, client_key: str, installation: str) -> bool:
        """Whether a tenant the installation inherited now links it itself (it is then
        no longer waiting for its own link)."""
        waiting = self._inherited.get(installation, ())
        if client_key not in waiting:
            return False
        rest = tuple(key for key in waiting if key != client_key)
        if rest:
            self._inherited[installation] = rest
        else:
            del self._inherited[installation]
        return True

    # -- events

    def apply(self, event: RecordedEvent) -> None:
        fold_by_type(_HANDLERS, self, (event,))

    def connect(self, client_key: str, named: object, event: RecordedEvent) -> None:
        installation = installation_id(named)
        if installation is None:
            return
        known = self._clients(installation)
        new = client_key not in known or self._links_itself(client_key, installation)
        if new:
            self._new_links.append(
                LinkRow(
                    f"{CONNECT}:{client_key}:{installation}",
                    CONNECT,
                    client_key,
                    installation,
                    None,
                    event.stream_id,
                    event.position,
                    event.recorded_at,
                )
            )
        # Only a link seen for the first time makes that tenant the most recent one: an
        # older tenant naming it again (a stale call after a reimport) does not take it back.
        if new and known[-1:] != (client_key,):
            keys = _with_last(known, client_key)
            self._set_clients(installation, keys)
            record = self._records.get(installation)
            if record is not None:
                record.client_keys, record.client_key = keys, client_key
                self._touch(record)

    def forge_installed(self, event: RecordedEvent) -> None:
        record = _new_record(event)
        installation = record.installation_id
        previous = self._latest_on(record.cloud_id)
        if previous is not None and previous != installation:
            inherited = self._clients(previous)
            own = self._clients(installation) if installation in self._clients_of else inherited
            if (previous, installation) not in self._reinstalls:
                self._reinstalls.add((previous, installation))
                self._new_links.append(
                    LinkRow(
                        f"{REINSTALL}:{previous}:{installation}",
                        REINSTALL,
                        own[-1] if own else None,
                        installation,
                        previous,
                        event.stream_id,
                        event.position,
                        event.recorded_at,
                    )
                )
            if installation not in self._clients_of and inherited:
                self._set_clients(installation, inherited)
                self._inherited[installation] = inherited
        record.client_keys = self._clients(installation)
        record.client_key = record.client_keys[-1] if record.client_keys else None
        old = self._records.get(installation)
        if old is not None:
            self._leave(old.cloud_id, installation)
        self._join(record.cloud_id, installation, record.installed_position)
        self._records[installation] = record
        self._touch(record)

    def forge_event(self, event: RecordedEvent) -> None:
        installation = installation_id_of(event.stream_id)
        record = self._records.get(installation or "")
        if record is None:
            return
        before = record.cloud_id
        _update(record, event)
        if record.cloud_id != before:  # the installation is now on another site
            self._leave(before, record.installation_id)
            self._join(record.cloud_id, record.installation_id, record.installed_position)
        self._touch(record)

    # -- hand-over

    def installation_changes(self) -> Iterator[InstallationRow]:
        changed = self._records if self._dirty is None else self._dirty
        self._dirty = {}
        return map(_freeze, list(changed.values()))

    def link_changes(self) -> list[LinkRow]:
        new, self._new_links = self._new_links, []
        return new

    def installation(self, installation_id: str) -> InstallationRow | None:
        record = self._records.get(installation_id)
        return None if record is None else _freeze(record)


def _installed(fold: ForgeFold, event: RecordedEvent) -> None:
    data: Installed = event.data  # type: ignore[assignment]  # by event.type: the dispatch picked this handler
    if "installationId" in data.details:
        # The stream's clientKey, the very string object the tenants row keeps.
        client_key = stream_client_key(event, data.client_key)
        fold.connect(client_key, data.details["installationId"], event)


def _details_changed(fold: ForgeFold, event: RecordedEvent) -> None:
    data: DetailsChanged = event.data  # type: ignore[assignment]  # by event.type: the dispatch picked this handler
    if "installationId" in data.changes:
        fold.connect(client_key_of(event.stream_id), data.changes["installationId"], event)


_HANDLERS: dict[str, Callable[[ForgeFold, RecordedEvent], None]] = {
    "Installed": _installed,
    "DetailsChanged": _details_changed,
    "ForgeInstalled": ForgeFold.forge_installed,
    **dict.fromkeys(FORGE_HANDLED, ForgeFold.forge_event),
}


class InstallationsState(ForgeFold):
    __slots__ = ()

    def take_changes(self) -> list[InstallationRow]:
        self.link_changes()  # this table's twin hands those over
        return list(self.installation_changes())

    def drain_changes(self) -> Iterator[InstallationRow]:
        self.link_changes()
        return self.installation_changes()


class LinksState(ForgeFold):
    __slots__ = ()

    def take_changes(self) -> list[LinkRow]:
        self.installation_changes()
        return self.link_changes()

    def drain_changes(self) -> Iterator[LinkRow]:
        return iter(self.take_changes())


def forge_states(
    installations: list[InstallationRow], links: list[LinkRow]
) -> dict[str, ForgeFold]:
    """Both projections' states, resumed from their rows at one checkpoint."""
    return {
        "installations": InstallationsState.from_rows(installations, links),
        "links": LinksState.from_rows(installations, links),
    }


class _ForgeProjection:
    event_types: ClassVar[frozenset[str]] = frozenset(_HANDLERS)
    handlers: ClassVar[dict[str, Callable[[ForgeFold, RecordedEvent], None]]] = _HANDLERS
    state_type: ClassVar[type[ForgeFold]] = ForgeFold
    # Both projections fold the same ForgeFold: a rebuild folds it once for both and
    # takes each table's rows from it with ``rows_from`` (projections.rebuild).
    shared_fold: ClassVar[str] = "forge"

    def initial_state(self) -> Any:
        return self.state_type()

    def apply(self, state: Any, event: RecordedEvent) -> Any:
        state.apply(event)
        return state

    def apply_many(self, state: Any, events: Iterable[RecordedEvent]) -> Any:
        return fold_by_type(_HANDLERS, state, events)


class InstallationsProjection(_ForgeProjection):
    """The ``installations`` projection (key: ``installation_id``)."""

    name: ClassVar[str] = "installations"
    row_type: ClassVar[type[InstallationRow]] = InstallationRow
    key_fields: ClassVar[tuple[str, ...]] = ("installation_id",)
    state_type: ClassVar[type[ForgeFold]] = InstallationsState

    def rows_from(self, fold: ForgeFold) -> Iterator[InstallationRow]:
        """This table's changed rows from a fold shared with ``links``."""
        return fold.installation_changes()


class LinksProjection(_ForgeProjection):
    """The ``links`` projection (key: ``link_id``; rows never change once written)."""

    name: ClassVar[str] = "links"
    row_type: ClassVar[type[LinkRow]] = LinkRow
    key_fields: ClassVar[tuple[str, ...]] = ("link_id",)
    state_type: ClassVar[type[ForgeFold]] = LinksState

    def rows_from(self, fold: ForgeFold) -> Iterator[LinkRow]:
        """This table's new rows from a fold shared with ``installations``."""
        return iter(fold.link_changes())

    def finished_rows(self, fold: ForgeFold) -> list[LinkRow]:
        """The rows made since the last call, which never change again: a rebuild moves
        them out of memory as they appear (``projections.rebuild``)."""
        return fold.link_changes()


if TYPE_CHECKING:
    _installations: Projection[Any, InstallationRow] = InstallationsProjection()
    _links: Projection[Any, LinkRow] = LinksProjection()
