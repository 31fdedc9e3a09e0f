"""The ``base_urls`` read model: every interval during which a tenant held a base URL.

An interval opens when a tenant gets a base URL (its ``Installed``, or a
``BaseUrlChanged`` ``to`` it) and closes, ``to`` = that event's ``recorded_at``,
when the tenant moves to another URL. URLs are compared normalised
(``projections.model.normalize_base_url``): a change of case in the host or a
trailing ``/`` is the same URL and keeps the interval open.

Decisions:

* ``Uninstalled`` does NOT close the interval. An uninstalled site still holds its
  URL (Atlassian sends no call when a site is deleted or renamed later, and a
  reimported site reappears at the very same URL); the interval says "last known
  at this URL since", and the tenant's state lives in the ``tenants`` model.
* A reinstall (``Installed`` after ``Uninstalled``) at the same URL keeps the open
  interval; at a different URL it closes the old one and opens a new one.
* Row identity is ``(client_key, base_url, from_position)``: the position of the
  event that opened the interval stands in for ``from_``, which it orders exactly
  and which stays unique even if two intervals began in the same microsecond.

The fold keeps only each tenant's open interval; closed intervals are handed to
the runner by ``take_changes`` and then forgotten (see ``projections.model``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from eventstore.events import BaseUrlChanged, Installed, stream_id_for
from eventstore.values import RecordedEvent
from projections.model import (
    BaseUrlRow,
    Projection,
    fold_by_type,
    normalize_base_url,
    stream_client_key,
    url_key,
)

__all__ = ["BaseUrlRow", "BaseUrlsProjection", "BaseUrlsState", "apply"]

RowKey = tuple[str, str, int]


class BaseUrlsState:
    """Each tenant's open interval (by stream id) and the rows not yet handed over.

    Until the first ``take_changes`` nothing has been handed over, so closed
    intervals simply pile up in ``_closed`` (a list append, no hashing) and the
    first call returns them with the open ones: a rebuild pays nothing for change
    tracking. After that, changes are tracked by row identity in ``_dirty``.
    """

    __slots__ = ("_closed", "_dirty", "_open")

    def __init__(self) -> None:
        self._open: dict[str, BaseUrlRow] = {}
        self._closed: list[BaseUrlRow] = []
        self._dirty: dict[RowKey, BaseUrlRow] | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[BaseUrlRow]) -> BaseUrlsState:
        """Resume from persisted rows: only the open intervals matter to the fold."""
        state = cls()
        for row in rows:
            if row.to is None:
                state._open[stream_id_for(row.client_key)] = row
        state._dirty = {}
        return state

    def open_interval(self, client_key: str) -> BaseUrlRow | None:
        return self._open.get(stream_id_for(client_key))

    def drain_changes(self) -> Iterator[BaseUrlRow]:
        """``take_changes`` as an iterator (these rows exist already; nothing to stream)."""
        return iter(self.take_changes())

    def take_closed(self) -> list[BaseUrlRow]:
        """The intervals closed since the last call and not handed over: before the first
        ``take_changes`` (a rebuild moves them out of memory as they appear), none after
        it (closed intervals are among the changes then)."""
        closed, self._closed = self._closed, []
        return closed

    def take_changes(self) -> list[BaseUrlRow]:
        if self._dirty is None:
            changed = self._closed
            changed.extend(self._open.values())
            self._closed = []
        else:
            changed = list(self._dirty.values())
        self._dirty = {}
        return changed


def _record(state: BaseUrlsState, row: BaseUrlRow) -> None:
    if state._dirty is None:
        if row.to is not None:
            state._closed.append(row)
    else:
        state._dirty[(row.client_key, row.base_url, row.from_position)] = row


def _arrive(
    state: BaseUrlsState, stream_id: str, current: BaseUrlRow, url: str, event: RecordedEvent
) -> None:
    """A tenant holding ``current`` now holds ``url``: close one, open the other,
    unless they are the same URL."""
    if url == current.base_url or normalize_base_url(url) == normalize_base_url(current.base_url):
        return
    at = event.recorded_at
    _record(
        state,
        BaseUrlRow(current.base_url, current.client_key, current.from_, at, current.from_position),
    )
    opened = BaseUrlRow(url, current.client_key, at, None, event.position)
    state._open[stream_id] = opened
    _record(state, opened)


def _installed(state: BaseUrlsState, event: RecordedEvent) -> None:
    data: Installed = event.data  # type: ignore[assignment]  # by event.type
    stream_id = event.stream_id
    current = state._open.get(stream_id)
    if current is not None:  # a reinstall
        _arrive(state, stream_id, current, url_key(data.base_url), event)
        return
    # The stream's clientKey, the same string object the tenants row keeps (the
    # event's own, when it is the stream's): one copy per tenant in a rebuild.
    client_key = stream_client_key(event, data.client_key)
    opened = BaseUrlRow(url_key(data.base_url), client_key, event.recorded_at, None, event.position)
    state._open[stream_id] = opened
    if state._dirty is not None:
        _record(state, opened)


def _base_url_changed(state: BaseUrlsState, event: RecordedEvent) -> None:
    stream_id = event.stream_id
    current = state._open.get(stream_id)
    if current is not None:  # else a stream that never had an Installed: ignore
        data: BaseUrlChanged = event.data  # type: ignore[assignment]  # by event.type: the dispatch picked this handler
        _arrive(state, stream_id, current, url_key(data.to), event)


_HANDLERS: dict[str, Callable[[BaseUrlsState, RecordedEvent], None]] = {
    "Installed": _installed,
    "BaseUrlChanged": _base_url_changed,
}
"""Event types that change this model; every other type leaves it as it is."""


def apply(state: BaseUrlsState, event: RecordedEvent) -> BaseUrlsState:
    """Fold one event into ``state`` (updated in place and returned)."""
    return fold_by_type(_HANDLERS, state, (event,))


class BaseUrlsProjection:
    """The ``base_urls`` projection for the runner (key: client, URL, opening position)."""

    name: ClassVar[str] = "base_urls"
    row_type: ClassVar[type[BaseUrlRow]] = BaseUrlRow
    key_fields: ClassVar[tuple[str, ...]] = ("client_key", "base_url", "from_position")
    event_types: ClassVar[frozenset[str]] = frozenset(_HANDLERS)
    handlers: ClassVar[dict[str, Callable[[BaseUrlsState, RecordedEvent], None]]] = _HANDLERS

    def finished_rows(self, state: BaseUrlsState) -> list[BaseUrlRow]:
        """Closed intervals, which never change again (``projections.rebuild``)."""
        return state.take_closed()

    def initial_state(self) -> BaseUrlsState:
        return BaseUrlsState()

    def apply(self, state: BaseUrlsState, event: RecordedEvent) -> BaseUrlsState:
        return apply(state, event)

    def apply_many(self, state: BaseUrlsState, events: Iterable[RecordedEvent]) -> BaseUrlsState:
        return fold_by_type(_HANDLERS, state, events)


if TYPE_CHECKING:  # the class satisfies the runner's protocol
    _conforms: Projection[BaseUrlsState, BaseUrlRow] = BaseUrlsProjection()
