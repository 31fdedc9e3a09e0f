"""Keeps a service process's ``Directory`` current: follows the log from its last position.

The service loads every tenant once before it answers (``load``), then a background task
reads what the log gained every ``INTERVAL`` seconds (``refresh``), so that a rotation
(``SecretRotated``), an uninstall or a ``ledger forget`` (``TenantForgotten``: the data key
is dropped from memory with it) reaches ``/auth/*`` on every process well within the
second SPEC §11 allows. Polling the head is the truth; it costs one indexed read per
process and interval when nothing happened.

The store's own reads run in worker threads; the directory is written entry by entry
(see ``app.authority.view``), so requests keep being answered meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Final

from anyio import to_thread

from app.authority.view import Changes, Directory, fold_batch
from eventstore.events import STREAM_PREFIX
from eventstore.store import EventStore
from eventstore.values import RecordedEvent

log = logging.getLogger("ledger.authority")

INTERVAL: Final = 0.2  # seconds between two looks at the log (SPEC §9: ≤ 1 s end to end)
# A view not refreshed for this long may miss a rotation or a forget: the authority then
# refuses (503) rather than decide with a secret that may no longer be the tenant's.
STALE_AFTER: Final = 5.0
BATCH: Final = 2000  # events folded per read; a larger backlog is taken in several
_KEY_PAGE: Final = 1000
_WARN_EVERY: Final = 30.0  # seconds between two warnings while the store stays away


class Follower:
    def __init__(self, store: EventStore, directory: Directory, interval: float = INTERVAL) -> None:
        self._store = store
        self.directory = directory
        self._interval = interval
        self._warned_at = 0.0

    def load(self) -> None:
        """Everything the log holds now, and every tenant's wrapped data key (in pages)."""
        changes = self._fold(self._store.read_all(0, batch_size=5000))
        held = {view.stream_id for view in changes.views.values() if view.secret is not None}
        keys: dict[str, bytes | None] = {}
        after = STREAM_PREFIX
        while page := self._store.list_data_keys(after, _KEY_PAGE):
            keys.update((stream, wrapped) for stream, wrapped in page if stream in held)
            after = page[-1][0]
            if len(page) < _KEY_PAGE:
                break
        changes.rekey.clear()
        self.directory.publish(changes, keys)
        self.directory.refreshed_at = time.monotonic()

    def refresh(self) -> int:
        """Fold what the log gained since the last look; the number of events read."""
        read = 0
        while True:
            events = []
            for event in self._store.read_all(self.directory.position, batch_size=BATCH):
                events.append(event)
                if len(events) >= BATCH:
                    break
            if not events:
                break
            changes = self._fold(events)
            keys = {stream: self._store.get_data_key(stream) for stream in changes.rekey}
            self.directory.publish(changes, keys)
            read += len(events)
            if len(events) < BATCH:
                break
        self.directory.refreshed_at = time.monotonic()
        return read

    def stale(self) -> bool:
        refreshed = self.directory.refreshed_at
        return refreshed is None or time.monotonic() - refreshed > STALE_AFTER

    def _fold(self, events: Iterable[RecordedEvent]) -> Changes:
        directory = self.directory
        return fold_batch(directory.tenants, events, directory.position)

    async def run(self) -> None:
        """Refresh forever (cancel to stop); a store that is away is tried again."""
        while True:
            try:
                await to_thread.run_sync(self.refresh)
            except Exception as error:  # a store error, or any bad read: it must live on
                self._warn(error)
            await asyncio.sleep(self._interval)

    def _warn(self, error: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY:
            self._warned_at = now
            log.warning(
                "the authority could not read the log; it refuses once its view is stale",
                extra={"reason": type(error).__name__},
            )
