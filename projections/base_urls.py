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
* Row identity is ``(client_key, base_url, from_)``; a tenant cannot return to a
  URL within the same microsecond, so it is unique in practice.

The fold keeps only each tenant's open interval; closed intervals are handed to
the runner by ``take_changes`` and then forgotten (see ``projections.model``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from eventstore.events import BaseUrlChanged, Installed, client_key_of, stream_id_for
from eventstore.store import RecordedEvent
from projections.model import BaseUrlRow, Projection, normalize_base_url

__all__ = ["BaseUrlRow", "BaseUrlsProjection", "BaseUrlsState", "apply"]

RowKey = tuple[str, str, datetime]


class BaseUrlsState:
    """Each tenant's open interval (by stream id) and the rows changed since the
    last ``take_changes`` (by row identity)."""

    __slots__ = ("_dirty", "_open")

    def __init__(self) -> None:
        self._open: dict[str, BaseUrlRow] = {}
        self._dirty: dict[RowKey, BaseUrlRow] = {}

    @classmethod
    def from_rows(cls, rows: Iterable[BaseUrlRow]) -> BaseUrlsState:
        """Resume from persisted rows: only the open intervals matter to the fold."""
        state = cls()
        for row in rows:
            if row.to is None:
                state._open[stream_id_for(row.client_key)] = row
        return state

    def open_interval(self, client_key: str) -> BaseUrlRow | None:
        return self._open.get(stream_id_for(client_key))

    def open_intervals(self) -> Iterator[BaseUrlRow]:
        return iter(self._open.values())

    def take_changes(self) -> list[BaseUrlRow]:
        changed = list(self._dirty.values())
        self._dirty = {}
        return changed


def _arrive(state: BaseUrlsState, stream_id: str, url: str, event: RecordedEvent) -> None:
    """The tenant now holds ``url``: close its other interval, open one here."""
    current = state._open.get(stream_id)
    if current is not None:
        if url == current.base_url or normalize_base_url(url) == normalize_base_url(
            current.base_url
        ):
            return
        closed = BaseUrlRow(
            current.base_url,
            current.client_key,
            current.from_,
            event.recorded_at,
            current.from_position,
        )
        state._dirty[(closed.client_key, closed.base_url, closed.from_)] = closed
        client_key = current.client_key
    else:
        client_key = client_key_of(stream_id)
    opened = BaseUrlRow(url, client_key, event.recorded_at, None, event.position)
    state._open[stream_id] = opened
    state._dirty[(client_key, url, opened.from_)] = opened


def _installed(state: BaseUrlsState, event: RecordedEvent) -> None:
    data: Installed = event.data  # type: ignore[assignment]  # by event.type
    _arrive(state, event.stream_id, data.base_url, event)


def _base_url_changed(state: BaseUrlsState, event: RecordedEvent) -> None:
    stream_id = event.stream_id
    if stream_id in state._open:  # ignore a stream that never had an Installed
        data: BaseUrlChanged = event.data  # type: ignore[assignment]
        _arrive(state, stream_id, data.to, event)


_HANDLERS: dict[str, Callable[[BaseUrlsState, RecordedEvent], None]] = {
    "Installed": _installed,
    "BaseUrlChanged": _base_url_changed,
}
"""Event types that change this model; every other type leaves it as it is."""


def apply(state: BaseUrlsState, event: RecordedEvent) -> BaseUrlsState:
    """Fold one event into ``state`` (updated in place and returned)."""
    handler = _HANDLERS.get(event.type)
    if handler is not None:
        handler(state, event)
    return state


class BaseUrlsProjection:
    """The ``base_urls`` projection for the runner (key: client, URL, from)."""

    name: ClassVar[str] = "base_urls"
    row_type: ClassVar[type[BaseUrlRow]] = BaseUrlRow
    key_fields: ClassVar[tuple[str, ...]] = ("client_key", "base_url", "from_")

    def initial_state(self) -> BaseUrlsState:
        return BaseUrlsState()

    def apply(self, state: BaseUrlsState, event: RecordedEvent) -> BaseUrlsState:
        return apply(state, event)

    def apply_many(self, state: BaseUrlsState, events: Iterable[RecordedEvent]) -> BaseUrlsState:
        get = _HANDLERS.get
        for event in events:
            handler = get(event.type)
            if handler is not None:
                handler(state, event)
        return state


if TYPE_CHECKING:  # the class satisfies the runner's protocol
    _conforms: Projection[BaseUrlsState, BaseUrlRow] = BaseUrlsProjection()
