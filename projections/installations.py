"""The Forge read models (SPEC §10): ``installations`` and the identity ``links``.

Both are folded from *both* kinds of streams:

* ``tenant:<clientKey>`` streams: an ``Installed`` whose payload carries an
  ``installationId``, or a ``DetailsChanged`` that changes it, is evidence that this
  Connect tenant is that Forge installation: a ``connect`` link.
* ``installation:<uuid>`` streams: the ``Forge*`` events give each installation's
  row; a ``ForgeInstalled`` on a cloudId where another installation was seen before
  is a ``reinstall`` link (previous → new installation).

Rules:

* An installation's ``client_key`` is the Connect tenant of its most recently *first
  seen* ``connect`` link (a tenant naming it again does not take it back); a reinstalled installation with no link of its own inherits the tenant of the
  installation it replaced on that site (the same customer; the link says why).
* ``state`` is ``installed`` until a ``ForgeUninstalling`` (``uninstalling``); an
  ``installed``/``upgraded`` delivery after it (``ForgeInstallConfirmed`` or
  ``ForgeUpgraded``) makes it ``installed`` again.
* Links are evidence, written once (the first event that showed them) and never
  changed: ``evidence_stream``/``evidence_position`` name that event.

Both projections share one fold (``ForgeFold``); each hands over its own table's
rows. Installation ids are bare lower-case UUIDs (``projections.forge_ids``).
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
    client_key_of,
    installation_id_of,
)
from eventstore.ids import installation_uuid
from eventstore.store import RecordedEvent
from projections.model import fold_by_type

if TYPE_CHECKING:
    from projections.model import Projection

__all__ = [
    "InstallationRow",
    "InstallationsProjection",
    "LinkRow",
    "LinksProjection",
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
    client_key: str | None  # the linked Connect tenant
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
    client_key: str | None
    installed_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    version: int
    installed_position: int


def _freeze(record: _Installation) -> InstallationRow:
    return InstallationRow(*astuple(record))


def _active(license: dict[str, Any] | None) -> bool | None:
    value = (license or {}).get("active")
    return value if isinstance(value, bool) else None


# -------------------------------------------------------- one installation's row


def _new_record(event: RecordedEvent) -> _Installation:
    data: ForgeInstalled = event.data  # type: ignore[assignment]  # by event.type
    at = event.recorded_at
    return _Installation(
        installation_id=data.installation_id,
        cloud_id=data.cloud_id,
        product=data.product,
        app_version=data.app_version,
        environment_type=data.environment_type,
        state="installed",
        license_active=_active(data.license),
        client_key=None,
        installed_at=at,
        updated_at=at,
        last_seen_at=at,
        version=event.version,
        installed_position=event.position,
    )


def _update(record: _Installation, event: RecordedEvent) -> None:
    """Every Forge event but ForgeInstalled, in place."""
    data = event.data
    changed = True
    if isinstance(data, ForgeUpgraded):
        record.app_version = data.to
        record.state = "installed"
    elif isinstance(data, ForgeLicenseChanged):
        record.license_active = _active(data.to)
    elif isinstance(data, ForgeDetailsChanged):
        changes = data.changes
        record.cloud_id = changes.get("cloud_id", record.cloud_id)
        record.product = changes.get("product", record.product)
        record.environment_type = changes.get("environment_type", record.environment_type)
    elif event.type == "ForgeInstallConfirmed":
        changed = record.state != "installed"
        record.state = "installed"
    elif event.type == "ForgeUninstalling":
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

    __slots__ = ("_client_of", "_clouds", "_dirty", "_link_ids", "_new_links", "_records")

    def __init__(self) -> None:
        self._records: dict[str, _Installation] = {}
        self._dirty: dict[str, _Installation] | None = None  # None: all rows are new
        self._link_ids: set[str] = set()
        self._new_links: list[LinkRow] = []
        self._client_of: dict[str, str] = {}  # installation → its Connect tenant
        # cloudId → {installation now on it: its installed_position}; the site's latest
        # installation is the one installed last among them (see ``_latest_on``).
        self._clouds: dict[str, dict[str, int]] = {}

    @classmethod
    def from_rows(cls, installations: Iterable[InstallationRow], links: Iterable[LinkRow]) -> Self:
        """Resume from both tables' rows at the same checkpoint."""
        state = cls()
        state._dirty = {}
        for link in sorted(links, key=lambda row: row.evidence_position):
            state._link_ids.add(link.link_id)
            if link.kind == CONNECT and link.client_key is not None:
                state._client_of[link.installation_id] = link.client_key
        for row in installations:
            state._records[row.installation_id] = _Installation(*astuple(row))
            if row.client_key is not None:
                state._client_of[row.installation_id] = row.client_key
            state._join(row.cloud_id, row.installation_id, row.installed_position)
        return state

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

    def _link(self, row: LinkRow) -> bool:
        """Record a link unless it exists; whether it was new."""
        if row.link_id in self._link_ids:
            return False
        self._link_ids.add(row.link_id)
        self._new_links.append(row)
        return True

    # -- events

    def apply(self, event: RecordedEvent) -> None:
        fold_by_type(_HANDLERS, self, (event,))

    def connect(self, client_key: str, named: object, event: RecordedEvent) -> None:
        installation = installation_uuid(named)
        if installation is None:
            return
        new = self._link(
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
        # Only a link seen for the first time moves the installation to that tenant: an
        # older tenant naming it again (a stale call after a reimport) does not take it back.
        if new and self._client_of.get(installation) != client_key:
            self._client_of[installation] = client_key
            record = self._records.get(installation)
            if record is not None:
                record.client_key = client_key
                self._touch(record)

    def forge_installed(self, event: RecordedEvent) -> None:
        record = _new_record(event)
        installation = record.installation_id
        previous = self._latest_on(record.cloud_id)
        if previous is not None and previous != installation:
            inherited = self._client_of.get(previous)
            self._link(
                LinkRow(
                    f"{REINSTALL}:{previous}:{installation}",
                    REINSTALL,
                    self._client_of.get(installation, inherited),
                    installation,
                    previous,
                    event.stream_id,
                    event.position,
                    event.recorded_at,
                )
            )
            if installation not in self._client_of and inherited is not None:
                self._client_of[installation] = inherited
        record.client_key = self._client_of.get(installation)
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
        fold.connect(client_key_of(event.stream_id), data.details["installationId"], event)


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


if TYPE_CHECKING:
    _installations: Projection[Any, InstallationRow] = InstallationsProjection()
    _links: Projection[Any, LinkRow] = LinksProjection()
