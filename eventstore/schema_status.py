"""Where a store's schema stands against the code's migrations, and the one rule that
refuses a schema the code does not run on (read-only opens, ``LEDGER_MIGRATE_ON_START=false``).

Pure: the backends read ``schema_migrations`` and hand the rows here."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from eventstore.errors import SchemaMismatch, StoreMissing


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """``applied``: (step, applied_at) of every step the store ran, in order (empty when
    it has no schema at all); ``latest``: the number of steps the code knows."""

    applied: tuple[tuple[int, str], ...]
    latest: int

    @property
    def current(self) -> int:
        return max((step for step, _ in self.applied), default=0)

    @property
    def pending(self) -> tuple[int, ...]:
        return tuple(range(self.current + 1, self.latest + 1))


def describe_url(url: str) -> str:
    """A store's URL as it may be shown to a person: never a user name or a password."""
    if url.startswith("sqlite:"):
        return url
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"postgresql://{host}:{parts.port or 5432}{parts.path or '/'}"


def require_current(status: SchemaStatus, url: str) -> None:
    """Refuse a store whose schema is not the code's, saying what to do."""
    where = describe_url(url)
    if not status.applied:
        raise StoreMissing(f"{where} holds no ledger schema; run `ledger migrate` to create it")
    if status.current < status.latest:
        raise SchemaMismatch(
            f"the schema of {where} is at step {status.current}, this ledger needs step"
            f" {status.latest}; run `ledger migrate`"
        )
    if status.current > status.latest:
        raise SchemaMismatch(
            f"the schema of {where} is at step {status.current}, newer than this ledger"
            f" (step {status.latest}); run a ledger release that knows it"
        )
