"""The ``tenants`` read model: one row per clientKey, as it stands now.

Two layers, both pure:

* ``apply(row, event)`` folds one event into the previous row *of that tenant*
  (``None`` before its first event) and returns the next row. It is all the
  admin API needs to answer "this tenant as of position N" from one stream.
* ``TenantsProjection`` folds the whole log into a ``TenantsState`` (all rows,
  keyed by stream) for the runner; see ``projections.model`` for the contract.

Rules, one event type each (every event also sets ``last_seen_at`` to its
``recorded_at`` and ``version`` to its stream version):

* ``Installed`` (first install, or the first after ``Uninstalled``) sets every
  field from the event: base URL, ``displayUrl``/``productType`` from the payload,
  ``descriptor_version`` from ``metadata.descriptor_version`` (``None`` when the
  call carried none), state installed, enabled, ``installed_at``.
* ``BaseUrlChanged``, ``DescriptorUpgraded``, ``DetailsChanged`` set their field
  (``DetailsChanged`` only touches ``display_url``/``product_type`` when those keys
  are among its changes; other detail fields are not part of this row).
* ``Enabled``/``Disabled`` set ``enabled``. An uninstalled tenant stays
  uninstalled and disabled: a ``Disabled`` (or ``Enabled``) racing in after
  ``Uninstalled`` does not bring it back.
* ``Uninstalled`` sets state uninstalled and ``enabled`` False.

``updated_at`` is when the tenant's recorded state last changed: every event
moves it except ``InstallConfirmed`` (a call that changed nothing) and an
``Enabled``/``Disabled``/``Uninstalled`` that repeats what the row already says.
``SecretRotated`` and ``DetailsChanged`` move it even when no visible column
changes: the secret or a detail field did change.

An event for a tenant without a row (a stream that does not start with
``Installed``, which the service never writes) is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from msgspec.structs import replace

from eventstore.events import (
    BaseUrlChanged,
    DescriptorUpgraded,
    DetailsChanged,
    Installed,
    client_key_of,
    stream_id_for,
)
from eventstore.store import RecordedEvent
from projections.model import INSTALLED, UNINSTALLED, Projection, TenantRow

__all__ = ["TenantRow", "TenantsProjection", "TenantsState", "apply", "fold"]

Handler = Callable[[TenantRow | None, RecordedEvent], TenantRow | None]

# The handlers read ``event.data`` as the class its ``event.type`` names (the
# dispatch guarantees it); the ``type: ignore`` on those lines avoids paying an
# isinstance or cast call per event.


def _installed(row: TenantRow | None, event: RecordedEvent) -> TenantRow:
    data: Installed = event.data  # type: ignore[assignment]
    details = data.details
    at = event.recorded_at
    return TenantRow(
        client_key=client_key_of(event.stream_id),
        base_url=data.base_url,
        display_url=details.get("displayUrl"),
        product_type=details.get("productType"),
        state=INSTALLED,
        enabled=True,
        descriptor_version=event.metadata.descriptor_version,
        installed_at=at,
        updated_at=at,
        last_seen_at=at,
        version=event.version,
    )


def _seen(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    """InstallConfirmed, and repeats: the tenant called, nothing changed."""
    if row is None:
        return None
    return replace(row, last_seen_at=event.recorded_at, version=event.version)


def _changed(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    """SecretRotated: a change this row does not show."""
    if row is None:
        return None
    at = event.recorded_at
    return replace(row, updated_at=at, last_seen_at=at, version=event.version)


def _base_url_changed(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None:
        return None
    data: BaseUrlChanged = event.data  # type: ignore[assignment]
    at = event.recorded_at
    return replace(row, base_url=data.to, updated_at=at, last_seen_at=at, version=event.version)


def _descriptor_upgraded(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None:
        return None
    data: DescriptorUpgraded = event.data  # type: ignore[assignment]
    at = event.recorded_at
    return replace(
        row, descriptor_version=data.to, updated_at=at, last_seen_at=at, version=event.version
    )


def _details_changed(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None:
        return None
    data: DetailsChanged = event.data  # type: ignore[assignment]
    changes = data.changes
    at = event.recorded_at
    if "displayUrl" not in changes and "productType" not in changes:
        return replace(row, updated_at=at, last_seen_at=at, version=event.version)
    return replace(
        row,
        display_url=changes.get("displayUrl", row.display_url),
        product_type=changes.get("productType", row.product_type),
        updated_at=at,
        last_seen_at=at,
        version=event.version,
    )


def _enabled(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None or row.enabled or row.state != INSTALLED:
        return _seen(row, event)
    at = event.recorded_at
    return replace(row, enabled=True, updated_at=at, last_seen_at=at, version=event.version)


def _disabled(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None or not row.enabled:
        return _seen(row, event)
    at = event.recorded_at
    return replace(row, enabled=False, updated_at=at, last_seen_at=at, version=event.version)


def _uninstalled(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    if row is None or row.state == UNINSTALLED:
        return _seen(row, event)
    at = event.recorded_at
    return replace(
        row,
        state=UNINSTALLED,
        enabled=False,
        updated_at=at,
        last_seen_at=at,
        version=event.version,
    )


_HANDLERS: dict[str, Handler] = {
    "Installed": _installed,
    "SecretRotated": _changed,
    "BaseUrlChanged": _base_url_changed,
    "DescriptorUpgraded": _descriptor_upgraded,
    "DetailsChanged": _details_changed,
    "InstallConfirmed": _seen,
    "Enabled": _enabled,
    "Disabled": _disabled,
    "Uninstalled": _uninstalled,
}


def apply(row: TenantRow | None, event: RecordedEvent) -> TenantRow | None:
    """The tenant's next row after ``event`` (one of its own stream's events)."""
    return _HANDLERS[event.type](row, event)


def fold(events: Iterable[RecordedEvent]) -> TenantRow | None:
    """One tenant's row after all ``events`` of its stream (``None`` if never installed)."""
    row: TenantRow | None = None
    for event in events:
        row = _HANDLERS[event.type](row, event)
    return row


class TenantsState:
    """Every tenant's row, keyed by stream id, plus the rows changed since the last
    ``take_changes``. Owned by the runner, updated in place by the fold.

    Until the first ``take_changes`` every row counts as changed (nothing has been
    handed over yet), so a rebuild pays nothing for change tracking: ``_dirty`` is
    ``None`` then, and the first call hands over all rows.
    """

    __slots__ = ("_dirty", "_rows")

    def __init__(self) -> None:
        self._rows: dict[str, TenantRow] = {}
        self._dirty: dict[str, TenantRow] | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[TenantRow]) -> TenantsState:
        """Resume from persisted rows (all of them, at the runner's checkpoint)."""
        state = cls()
        state._rows = {stream_id_for(row.client_key): row for row in rows}
        state._dirty = {}
        return state

    def get(self, client_key: str) -> TenantRow | None:
        return self._rows.get(stream_id_for(client_key))

    def rows(self) -> Iterator[TenantRow]:
        return iter(self._rows.values())

    def __len__(self) -> int:
        return len(self._rows)

    def take_changes(self) -> list[TenantRow]:
        changed = list((self._rows if self._dirty is None else self._dirty).values())
        self._dirty = {}
        return changed


class TenantsProjection:
    """The ``tenants`` projection for the runner (key: ``client_key``)."""

    name: ClassVar[str] = "tenants"
    row_type: ClassVar[type[TenantRow]] = TenantRow
    key_fields: ClassVar[tuple[str, ...]] = ("client_key",)

    def initial_state(self) -> TenantsState:
        return TenantsState()

    def apply(self, state: TenantsState, event: RecordedEvent) -> TenantsState:
        stream_id = event.stream_id
        row = _HANDLERS[event.type](state._rows.get(stream_id), event)
        if row is not None:
            state._rows[stream_id] = row
            if state._dirty is not None:
                state._dirty[stream_id] = row
        return state

    def apply_many(self, state: TenantsState, events: Iterable[RecordedEvent]) -> TenantsState:
        rows = state._rows
        dirty = state._dirty
        handlers = _HANDLERS
        get = rows.get
        for event in events:
            stream_id = event.stream_id
            row = handlers[event.type](get(stream_id), event)
            if row is not None:
                rows[stream_id] = row
                if dirty is not None:
                    dirty[stream_id] = row
        return state


if TYPE_CHECKING:  # the class satisfies the runner's protocol
    _conforms: Projection[TenantsState, TenantRow] = TenantsProjection()
