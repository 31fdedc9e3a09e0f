"""The ``descriptors`` read model: every descriptor version seen, when it was first
seen, and how many *installed* tenants run it now.

A version is seen when an ``Installed`` carries it in ``metadata.descriptor_version``
or a ``DescriptorUpgraded`` moves a tenant ``to`` it. The count needs to know each
tenant's current version and whether it is installed, which no descriptor row
holds, so the fold keeps that per tenant in ``DescriptorsState`` (the runner owns
it; ``apply`` updates it in place and returns it, see ``projections.model``).

Counting follows the ``tenants`` projection exactly: a tenant counts for the
version in its row while its state is installed. ``Uninstalled`` leaves the
count, an ``Installed`` after it re-enters with the version that call carried;
an ``Installed`` without a version counts nowhere until a ``DescriptorUpgraded``.

"The latest version" is the one first seen last in log order (highest position),
not the highest version string and not the latest timestamp: versions are
opaque strings, and several writers' clocks do not order the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from eventstore.events import DescriptorUpgraded, stream_id_for
from eventstore.values import RecordedEvent
from projections.model import (
    INSTALLED,
    DescriptorRow,
    Projection,
    TenantRow,
    fold_by_type,
    key_text,
    shared,
)

__all__ = ["DescriptorRow", "DescriptorsProjection", "DescriptorsState", "apply", "latest_version"]


class DescriptorsState:
    """Per-version first sighting and count, per-tenant current version.

    ``_version_of`` holds installed tenants only (stream id → version or ``None``);
    an uninstalled tenant is simply absent, so counting needs no second lookup.
    Counts are plain ints; rows are built only when handed out.
    """

    __slots__ = ("_counts", "_dirty", "_first_seen", "_latest", "_version_of")

    def __init__(self) -> None:
        self._version_of: dict[str, str | None] = {}
        self._counts: dict[str, int] = {}
        self._first_seen: dict[str, tuple[datetime, int]] = {}
        self._latest: str | None = None
        self._dirty: set[str] = set()

    @classmethod
    def from_rows(
        cls, descriptors: Iterable[DescriptorRow], tenants: Iterable[TenantRow]
    ) -> DescriptorsState:
        """Resume from persisted rows: this projection's, and the ``tenants``
        projection's rows *at the same checkpoint* (they carry each tenant's version
        and state, which descriptor rows do not). Counts are recomputed from them."""
        state = cls()
        for row in descriptors:
            state._first_seen[row.version] = (row.first_seen_at, row.first_seen_position)
            state._counts[row.version] = 0
        if state._first_seen:
            state._latest = max(state._first_seen, key=lambda v: state._first_seen[v][1])
        for tenant in tenants:
            if tenant.state == INSTALLED:
                version = tenant.descriptor_version
                state._version_of[stream_id_for(tenant.client_key)] = version
                if version is not None:
                    state._counts[version] = state._counts.get(version, 0) + 1
        return state

    @property
    def latest(self) -> str | None:
        """The version first seen last (``None`` before any version was seen)."""
        return self._latest

    def get(self, version: str) -> DescriptorRow | None:
        return self._row(version) if version in self._first_seen else None

    def rows(self) -> Iterator[DescriptorRow]:
        return (self._row(version) for version in self._first_seen)

    def drain_changes(self) -> Iterator[DescriptorRow]:
        """``take_changes`` as an iterator (these rows exist already; nothing to stream)."""
        return iter(self.take_changes())

    def take_changes(self) -> list[DescriptorRow]:
        changed = [self._row(version) for version in self._dirty]
        self._dirty = set()
        return changed

    def _row(self, version: str) -> DescriptorRow:
        first_seen_at, position = self._first_seen[version]
        return DescriptorRow(version, first_seen_at, self._counts[version], position)


def _first_sighting(state: DescriptorsState, version: str, event: RecordedEvent) -> None:
    state._first_seen[version] = (event.recorded_at, event.position)
    state._counts[version] = 0
    state._latest = version
    state._dirty.add(version)


def _move(state: DescriptorsState, old: str | None, new: str | None) -> None:
    """A tenant leaves ``old`` and joins ``new`` (either may be ``None``: nowhere)."""
    counts = state._counts
    if old is not None:
        counts[old] -= 1
        state._dirty.add(old)
    if new is not None:
        counts[new] += 1
        state._dirty.add(new)


def _installed(state: DescriptorsState, event: RecordedEvent) -> None:
    # Read as the tenants fold reads it (an empty version is none there too), so the
    # counts match its rows, from which ``from_rows`` recomputes them.
    version = shared(key_text(event.metadata.descriptor_version) or None)
    if version is not None and version not in state._first_seen:
        _first_sighting(state, version, event)
    version_of = state._version_of
    stream_id = event.stream_id
    old = version_of.get(stream_id)  # None: not installed, or installed on no version
    version_of[stream_id] = version
    if old != version:
        _move(state, old, version)


def _descriptor_upgraded(state: DescriptorsState, event: RecordedEvent) -> None:
    data: DescriptorUpgraded = event.data  # type: ignore[assignment]  # by event.type
    version = shared(key_text(data.to))  # as the tenants fold reads it; None (an old log): no version
    if version is not None and version not in state._first_seen:
        _first_sighting(state, version, event)
    version_of = state._version_of
    stream_id = event.stream_id
    if stream_id in version_of:  # only installed tenants count
        old = version_of[stream_id]
        version_of[stream_id] = version
        if old != version:
            _move(state, old, version)


def _uninstalled(state: DescriptorsState, event: RecordedEvent) -> None:
    version_of = state._version_of
    stream_id = event.stream_id
    if stream_id in version_of:
        _move(state, version_of.pop(stream_id), None)


_HANDLERS: dict[str, Callable[[DescriptorsState, RecordedEvent], None]] = {
    "Installed": _installed,
    "DescriptorUpgraded": _descriptor_upgraded,
    "Uninstalled": _uninstalled,
}
"""Event types that change this model; every other type leaves it as it is."""


def apply(state: DescriptorsState, event: RecordedEvent) -> DescriptorsState:
    """Fold one event into ``state`` (updated in place and returned)."""
    return fold_by_type(_HANDLERS, state, (event,))


def latest_version(rows: Iterable[DescriptorRow]) -> str | None:
    """The latest version from persisted rows: the one first seen last."""
    best: DescriptorRow | None = None
    for row in rows:
        if best is None or row.first_seen_position > best.first_seen_position:
            best = row
    return None if best is None else best.version


class DescriptorsProjection:
    """The ``descriptors`` projection for the runner (key: ``version``)."""

    name: ClassVar[str] = "descriptors"
    row_type: ClassVar[type[DescriptorRow]] = DescriptorRow
    key_fields: ClassVar[tuple[str, ...]] = ("version",)
    event_types: ClassVar[frozenset[str]] = frozenset(_HANDLERS)
    handlers: ClassVar[dict[str, Callable[[DescriptorsState, RecordedEvent], None]]] = _HANDLERS

    def initial_state(self) -> DescriptorsState:
        return DescriptorsState()

    def apply(self, state: DescriptorsState, event: RecordedEvent) -> DescriptorsState:
        return apply(state, event)

    def apply_many(
        self, state: DescriptorsState, events: Iterable[RecordedEvent]
    ) -> DescriptorsState:
        return fold_by_type(_HANDLERS, state, events)


if TYPE_CHECKING:  # the class satisfies the runner's protocol
    _conforms: Projection[DescriptorsState, DescriptorRow] = DescriptorsProjection()
