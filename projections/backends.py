"""The one place that picks the projections' backend for a store: their tables
(``ProjectionStorage``) and their locks (``ExclusiveLock``), keyed by the kind of the
store's database (``EventLog.database``). One factory per backend below; nothing else
looks at a store's class or URL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from eventstore.database import PostgresDatabase, SQLiteDatabase
from eventstore.store import EventLog
from projections.locks import ADVISORY_KEYS, AdvisoryLock, ExclusiveLock, FileLock
from projections.storage.base import ProjectionStorage
from projections.storage.postgres import PostgresProjectionStorage
from projections.storage.sqlite import SQLiteProjectionStorage


@dataclass(frozen=True, slots=True)
class ProjectionBackend:
    storage: Callable[[], ProjectionStorage]
    lock: Callable[[str], ExclusiveLock]  # by purpose: "runner", "rebuild"


def sqlite_backend(database: SQLiteDatabase) -> ProjectionBackend:
    """Tables in the store's file; locks are ``flock``s on files beside it."""
    return ProjectionBackend(
        storage=lambda: SQLiteProjectionStorage(database),
        lock=lambda purpose: FileLock(f"{database.path}.{purpose}.lock"),
    )


def postgres_backend(database: PostgresDatabase) -> ProjectionBackend:
    """Tables on the store's pool; locks are advisory locks on a dedicated connection
    made as the store's own are."""
    return ProjectionBackend(
        storage=lambda: PostgresProjectionStorage(database),
        lock=lambda purpose: AdvisoryLock(
            database.conninfo, ADVISORY_KEYS[purpose], database.translate
        ),
    )


def backend_for(store: EventLog) -> ProjectionBackend:
    database = store.database
    if database.kind == "sqlite":
        return sqlite_backend(database)
    return postgres_backend(database)


def storage_for(store: EventLog) -> ProjectionStorage:
    """Where ``store``'s projection rows and checkpoints live."""
    return backend_for(store).storage()


def lock_for(store: EventLog, purpose: str) -> ExclusiveLock:
    """The lock named ``purpose`` ("runner", "rebuild") on ``store``'s database."""
    return backend_for(store).lock(purpose)
