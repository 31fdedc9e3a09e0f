"""The ``reimports`` read model: links from a base URL's previous tenant to a new one.

A site reimport gives the same base URL a brand-new clientKey, and the old
clientKey may never hear ``uninstalled``. So when a clientKey is installed for
the first time (its first ``Installed``; a reinstall is not new) at a base URL
another clientKey held, the fold records a link:

* ``previous_client_key`` is the *most recent holder* of that URL: the clientKey
  that last arrived at it (by ``Installed`` or ``BaseUrlChanged``), even if an
  older holder is still there. A reinstall at the URL a tenant already holds is
  not an arrival, so holders are ordered exactly like ``base_urls`` intervals
  (by the position that opened them).
* ``kind`` is ``reimport`` when that holder's current base URL is still this one
  (installed or uninstalled there: an uninstall does not give the URL up), and
  ``url_reused`` when it had moved to another URL first.

Base URLs are compared normalised (``projections.model.normalize_base_url``).
Links are evidence for a person, never an automatic migration; once written they
never change. The fold keeps two indexes in ``ReimportsState`` (normalised URL →
latest holder, tenant → its current URL); ``apply`` updates them in place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, ClassVar

from eventstore.events import BaseUrlChanged, Installed, client_key_of, stream_id_for
from eventstore.values import RecordedEvent
from projections.model import (
    REIMPORT,
    URL_REUSED,
    BaseUrlRow,
    Projection,
    ReimportRow,
    fold_by_type,
    normalize_base_url,
    url_key,
)

__all__ = ["ReimportRow", "ReimportsProjection", "ReimportsState", "apply"]


class ReimportsState:
    """``_holder``: normalised URL → stream id of its latest arrival;
    ``_url_of``: stream id → the normalised URL it holds now; ``_new``: links not
    yet handed to the runner."""

    __slots__ = ("_holder", "_new", "_url_of")

    def __init__(self) -> None:
        self._holder: dict[str, str] = {}
        self._url_of: dict[str, str] = {}
        self._new: list[ReimportRow] = []

    @classmethod
    def from_rows(cls, base_urls: Iterable[BaseUrlRow]) -> ReimportsState:
        """Resume from the ``base_urls`` projection's rows *at the same checkpoint*:
        its intervals are exactly the arrivals this fold indexes (links already
        written are not needed: they never change)."""
        state = cls()
        latest: dict[str, BaseUrlRow] = {}
        for row in base_urls:
            url = normalize_base_url(row.base_url)
            if row.to is None:
                state._url_of[stream_id_for(row.client_key)] = url
            best = latest.get(url)
            if best is None or row.from_position > best.from_position:
                latest[url] = row
        state._holder = {url: stream_id_for(row.client_key) for url, row in latest.items()}
        return state

    def holder(self, base_url: str) -> str | None:
        """The clientKey that last arrived at ``base_url`` (``None``: nobody yet)."""
        stream_id = self._holder.get(normalize_base_url(base_url))
        return None if stream_id is None else client_key_of(stream_id)

    def drain_changes(self) -> Iterator[ReimportRow]:
        """``take_changes`` as an iterator (these rows exist already; nothing to stream)."""
        return iter(self.take_changes())

    def take_changes(self) -> list[ReimportRow]:
        new, self._new = self._new, []
        return new


def _installed(state: ReimportsState, event: RecordedEvent) -> None:
    data: Installed = event.data  # type: ignore[assignment]  # by event.type
    stream_id = event.stream_id
    base_url = url_key(data.base_url)  # as the base_urls rows this state resumes from
    url = normalize_base_url(base_url)
    current = state._url_of.get(stream_id)
    if current is None:  # the first Installed of this clientKey
        previous = state._holder.get(url)
        if previous is not None:
            state._new.append(
                ReimportRow(
                    base_url=base_url,
                    previous_client_key=client_key_of(previous),
                    client_key=client_key_of(stream_id),
                    detected_at=event.recorded_at,
                    kind=REIMPORT if state._url_of[previous] == url else URL_REUSED,
                )
            )
    elif current == url:  # a reinstall where it already was: not an arrival
        return
    state._holder[url] = stream_id
    state._url_of[stream_id] = url


def _base_url_changed(state: ReimportsState, event: RecordedEvent) -> None:
    stream_id = event.stream_id
    current = state._url_of.get(stream_id)
    if current is None:  # a stream that never had an Installed
        return
    data: BaseUrlChanged = event.data  # type: ignore[assignment]  # by event.type: the dispatch picked this handler
    url = normalize_base_url(url_key(data.to))
    if url != current:
        state._holder[url] = stream_id
        state._url_of[stream_id] = url


_HANDLERS: dict[str, Callable[[ReimportsState, RecordedEvent], None]] = {
    "Installed": _installed,
    "BaseUrlChanged": _base_url_changed,
}
"""Event types that change this model; every other type leaves it as it is."""


def apply(state: ReimportsState, event: RecordedEvent) -> ReimportsState:
    """Fold one event into ``state`` (updated in place and returned)."""
    return fold_by_type(_HANDLERS, state, (event,))


class ReimportsProjection:
    """The ``reimports`` projection for the runner (key: the new ``client_key``,
    which gets at most one link: only its first install can create one)."""

    name: ClassVar[str] = "reimports"
    row_type: ClassVar[type[ReimportRow]] = ReimportRow
    key_fields: ClassVar[tuple[str, ...]] = ("client_key",)
    event_types: ClassVar[frozenset[str]] = frozenset(_HANDLERS)
    handlers: ClassVar[dict[str, Callable[[ReimportsState, RecordedEvent], None]]] = _HANDLERS

    def finished_rows(self, state: ReimportsState) -> list[ReimportRow]:
        """The rows made since the last call, which never change again: a rebuild moves
        them out of memory as they appear (``projections.rebuild``)."""
        return state.take_changes()

    def initial_state(self) -> ReimportsState:
        return ReimportsState()

    def apply(self, state: ReimportsState, event: RecordedEvent) -> ReimportsState:
        return apply(state, event)

    def apply_many(self, state: ReimportsState, events: Iterable[RecordedEvent]) -> ReimportsState:
        return fold_by_type(_HANDLERS, state, events)


if TYPE_CHECKING:  # the class satisfies the runner's protocol
    _conforms: Projection[ReimportsState, ReimportRow] = ReimportsProjection()
