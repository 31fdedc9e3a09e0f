"""A digest of the log's head: what an operator keeps where the database cannot reach.

Minimal stand-in so that `ledger demo` can print one; helper "integrity" owns this
module and its full version replaces this one (same function, same answer).
"""

from __future__ import annotations

from typing import Any

from eventstore.store import EventStore, format_timestamp


def make_digest(store: EventStore) -> dict[str, Any]:
    """``{"position", "head", "recorded_at", "store"}`` of the log's last event."""
    head = store.head()
    recorded_at = None
    if head.position:
        last = next(store.read_all(after_position=head.position - 1, batch_size=1), None)
        recorded_at = None if last is None else format_timestamp(last.recorded_at)
    kind = "postgresql" if store.url.startswith("postgres") else "sqlite"
    return {"position": head.position, "head": head.hash, "recorded_at": recorded_at, "store": kind}
