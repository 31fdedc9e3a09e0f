"""A digest of the log's head: what an operator keeps where the database cannot reach.

Minimal stand-in so that `ledger demo` can print one; helper "integrity" owns this
module and its full version replaces this one (same function, same answer).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from eventstore.store import EventStore


def store_identity(url: str) -> dict[str, str]:
    """The store's kind and database, never a user name or a password."""
    if url.startswith("sqlite:"):
        return {"kind": "sqlite", "database": str(Path(url.removeprefix("sqlite:///")).resolve())}
    parts = urlsplit(url)
    return {
        "kind": "postgresql",
        "database": f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}",
    }


def make_digest(store: EventStore) -> dict[str, Any]:
    """``{"position", "head", "recorded_at", "store"}`` of the log's last event."""
    head = store.head()
    recorded_at = None
    if head.position:
        row = next(iter(store.read_raw(head.position - 1, 1)), None)
        recorded_at = row.recorded_at if row is not None else None
    return {
        "position": head.position,
        "head": head.hash,
        "recorded_at": recorded_at,
        "store": store_identity(store.url),
    }
