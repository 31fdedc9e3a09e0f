"""The one way a `ledger` command opens its store.

Every command but ``migrate`` (and ``serve``, which migrates unless told not to) opens
a store that must already exist with the code's schema: nothing is created, nothing is
migrated, so an auditor's SELECT-only role runs every read, ``verify``, ``digest`` and
``export``, and a read in the wrong directory says which store is missing instead of
reading a new empty one. Errors are said by ``app.cli.errors``.
"""

from __future__ import annotations

from app.bootstrap import store_for
from app.settings import Settings
from eventstore.store import EventStore


def existing_store(settings: Settings | None = None) -> EventStore:
    """The store ``LEDGER_DATABASE_URL`` names, as it is (SchemaMismatch, StoreMissing)."""
    return store_for(settings or Settings(), existing=True)
