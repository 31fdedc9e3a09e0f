"""The append-only log: event catalog, stores, hash chain, encryption of sensitive fields.

One module per job: ``store`` (the event log's and the store's interfaces), ``values``,
``data_keys`` and ``rejections`` (the store's two other interfaces), ``errors``,
``clock``, ``sql`` (statements and methods both SQL backends share), ``sqlite`` and
``postgres`` (each backend's own), ``database`` (what a store tells about its
database), ``chain``, ``crypto``, ``digest``, ``export``, ``events``.
"""

from __future__ import annotations

from typing import Unpack

from eventstore.store import EventStore
from eventstore.values import StoreOptions


def open_store(url: str, **options: Unpack[StoreOptions]) -> EventStore:
    """A store for a ``sqlite:///path`` or ``postgresql://…`` URL: the one place that
    tells the backends apart by URL. ``options`` a backend does not take are ignored."""
    if url.startswith("sqlite:"):
        from eventstore.sqlite import SQLiteEventStore

        return SQLiteEventStore(url, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from eventstore.postgres.store import PostgresEventStore

        return PostgresEventStore(url, **options)
    raise ValueError("LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://")


__all__ = ["open_store"]
