"""Where the messages come from: the log, read after a checkpoint, and what the read
models say about each event (I/O; the messages themselves are ``messages.py``'s).

An event is delivered only once the projections that make its derived facts (reimport
links, identity links) have folded it: then "the facts it made" is a lookup, and the
tenant or installation "as it stands after the event" is its stream folded up to the
event (the admin API's ``as_of``), whatever the projections have done since. So a
projection of those facts that has stopped at an event (a fold bug, SPEC §6) holds the
deliveries at that event too, until it folds past it: /readyz shows both.

Every URL's deliverer reads through one ``MessageSource``; it keeps the messages of
recent events (bounded) so that several URLs cost one build per event, and each
stream's last tenant row (bounded) so that a tenant's next event is one fold step, not
a read of its whole stream.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Final

from app.outbound.messages import Facts, Message, messages_for
from app.queries.reads import (
    installation_object,
    installation_row_at,
    link_object,
    redact_event,
    reimport_object,
    tenant_object,
)
from eventstore.events import client_key_of, installation_id_of
from eventstore.store import EventStore
from eventstore.values import RecordedEvent
from projections import tenants as tenants_fold
from projections.installations import LinkRow
from projections.model import ReimportRow, TenantRow
from projections.storage.base import ProjectionStorage

# The projections whose rows make derived facts: an event is delivered once they hold it.
FACT_PROJECTIONS: Final = ("reimports", "links")
MESSAGES_KEPT: Final = 4096  # events whose messages are kept for the other URLs
TENANTS_KEPT: Final = 10_000  # streams whose last tenant row is kept
_LINKING_TYPES: Final = frozenset({"Installed", "DetailsChanged", "ForgeInstalled"})


class MessageSource:
    """Thread-safe: every URL's deliverer thread calls it."""

    def __init__(self, store: EventStore, storage: ProjectionStorage) -> None:
        self.store = store
        self.storage = storage
        self._lock = threading.Lock()
        self._messages: OrderedDict[int, list[Message]] = OrderedDict()
        self._tenants: OrderedDict[str, tuple[int, TenantRow | None]] = OrderedDict()

    def ready_position(self) -> int:
        """The last position whose facts the projections have folded."""
        checkpoints = self.storage.checkpoints()
        return min(checkpoints.get(name, 0) for name in FACT_PROJECTIONS)

    def head(self) -> int:
        return self.store.head().position

    def events(self, after: int, through: int, limit: int) -> list[RecordedEvent]:
        """At most ``limit`` events after ``after``, up to ``through``."""
        reader = self.store.read_all(after, min(limit, 1000))
        try:
            return [e for e in itertools.islice(reader, limit) if e.position <= through]
        finally:
            reader.close()  # type: ignore[attr-defined]  # a generator: its cursor goes now

    def messages(self, events: Sequence[RecordedEvent]) -> list[list[Message]]:
        """Each event's messages, in order. The facts of the events not built yet are
        looked up for all of them at once (two queries), not event by event."""
        with self._lock:
            built = {
                e.position: self._messages[e.position]
                for e in events
                if e.position in self._messages
            }
        missing = [e for e in events if e.position not in built]
        if missing:
            found = _Lookups.of(self.storage, missing)
            for event in missing:
                built[event.position] = messages_for(
                    event, redact_event(event), self._facts(event, found)
                )
            with self._lock:
                for event in missing:
                    self._messages[event.position] = built[event.position]
                while len(self._messages) > MESSAGES_KEPT:
                    self._messages.popitem(last=False)
        return [built[e.position] for e in events]

    def _facts(self, event: RecordedEvent, found: _Lookups) -> Facts:
        made = [
            link_object(link)
            for link in found.links.get(event.position, ())
            if link.evidence_stream == event.stream_id
        ]
        installation = installation_id_of(event.stream_id)
        if installation is not None:
            row = installation_row_at(self.store, self.storage, installation, event.position)
            return Facts(subject=None if row is None else installation_object(row), links=made)
        tenant = self._tenant_after(event)
        reimport = (
            found.reimports.get(client_key_of(event.stream_id))
            if event.type == "Installed"
            else None
        )
        if reimport is not None and reimport.detected_at != event.recorded_at:
            reimport = None  # made by this tenant's first install, not this one
        return Facts(
            subject=None if tenant is None else tenant_object(tenant),
            reimport=None if reimport is None else reimport_object(reimport),
            links=made,
        )

    def _tenant_after(self, event: RecordedEvent) -> TenantRow | None:
        """The tenant folded from its stream up to ``event``: one step from the row kept
        for the event before it, else the stream read up to the event."""
        stream = event.stream_id
        with self._lock:
            kept = self._tenants.get(stream)
        if event.version == 1:  # a stream's first event: nothing before it to read
            row = tenants_fold.apply(None, event)
        elif kept is not None and kept[0] == event.version - 1:
            row = tenants_fold.apply(kept[1], event)
        elif kept is not None and kept[0] == event.version:
            row = kept[1]
        else:
            row = tenants_fold.fold(self.store.read_stream(stream, event.position))
        with self._lock:
            self._tenants[stream] = (event.version, row)
            self._tenants.move_to_end(stream)
            while len(self._tenants) > TENANTS_KEPT:
                self._tenants.popitem(last=False)
        return row


class _Lookups:
    """The derived facts of a run of events, read at once: reimport links by new client
    key, identity links by the position of the event that showed them."""

    def __init__(self, reimports: dict[str, ReimportRow], links: dict[int, list[LinkRow]]) -> None:
        self.reimports = reimports
        self.links = links

    @classmethod
    def of(cls, storage: ProjectionStorage, events: Sequence[RecordedEvent]) -> _Lookups:
        keys = sorted({client_key_of(e.stream_id) for e in events if e.type == "Installed"})
        reimports = {row.client_key: row for row in storage.reimports_of(keys)} if keys else {}
        links: dict[int, list[LinkRow]] = {}
        if any(e.type in _LINKING_TYPES for e in events):
            first, last = events[0].position, events[-1].position
            for link in storage.links_seen_between(first - 1, last):
                links.setdefault(link.evidence_position, []).append(link)
        return cls(reimports, links)
