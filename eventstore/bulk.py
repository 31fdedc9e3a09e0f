"""The guard of a bulk import (``EventStore.import_rows``): rows go in only after the head.

A store streams the rows to its database through ``checked`` inside one transaction
that holds the head; ``checked`` recomputes the chain as the rows pass (the same
``eventstore.chain.verify_links`` that ``ledger verify`` runs) and refuses the whole
import at the first row that is not the next position, not hashed onto the previous
row, or whose time is not in the stored text form. The store then rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from eventstore.chain import ChainCheck, raw_links, verify_links
from eventstore.clock import format_timestamp, parse_timestamp
from eventstore.errors import StoreError
from eventstore.values import Head, RawEvent


class ImportRefused(StoreError):
    """The rows do not continue the log at its head; nothing was imported."""


def checked(rows: Iterable[RawEvent], head: Head, write: Callable[[RawEvent], None]) -> Head:
    """Hand every row to ``write`` while checking it continues the chain from ``head``.

    Returns the new head; raises ImportRefused (after ``write`` may have seen the bad
    row: the caller's transaction must roll back).
    """

    def passing() -> Iterator[RawEvent]:
        for row in rows:
            if format_timestamp(parse_timestamp(row.recorded_at)) != row.recorded_at:
                raise ImportRefused(
                    f"position {row.position}: recorded_at {row.recorded_at!r} is not in the"
                    " stored form (UTC, microseconds, Z)"
                )
            write(row)
            yield row

    check = ChainCheck(after=head.position, previous=bytes.fromhex(head.hash))
    report = verify_links(raw_links(passing()), check)
    if not report.ok:
        raise ImportRefused(f"import refused: {report.reason}")
    return Head(head.position + report.events, report.head)
