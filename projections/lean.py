"""The rebuild's reader: the log as lean events, only what the folds read.

A rebuild folds every event of the log; decoding each to a full typed
``RecordedEvent`` (every payload field, the sealed secret, all of the metadata) cost
more than the folds themselves. ``LeanEvent`` has the attributes the folds read
from a ``RecordedEvent`` (``position``, ``stream_id``, ``version``, ``type``,
``recorded_at``, ``data``, ``metadata``), with the same values, and nothing else, so
the *same* fold handlers (``projections.*``) run on either: the rules exist once.

* ``LeanData`` holds the payload fields any fold reads, by their stored names, for
  every event type at once (``to`` is ``BaseUrlChanged``'s, ``DescriptorUpgraded``'s,
  the license events'...); a field the stored data lacks is ``UNSET``. Its
  ``details`` (``Installed``) and ``changes`` (``DetailsChanged``,
  ``ForgeDetailsChanged``) are itself, answering ``in``/``[]``/``get`` for the keys
  the folds ask about, and refusing any other key loudly (a fold reading a new key
  must add it here; the property test ``tests/contract/test_lean_rebuild.py`` would fail).
* ``LeanMeta`` holds the three metadata fields folds read.

Each page's columns are decoded by msgspec Struct decoders through C-level ``map``s (no
Python code per event), on PostgreSQL a page ahead by a helper thread. A row whose data has an older
schema version (none in a current log) is read again through the store's own
``read_all``, which upcasts it, and converted with ``lean_event_of``: upcasting stays
the event catalog's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Final

import msgspec
from msgspec import UNSET
from psycopg.types.string import ByteaBinaryLoader

from eventstore.clock import parse_timestamp
from eventstore.database import Translate
from eventstore.errors import StoreError
from eventstore.events import SCHEMA_VERSIONS, data_as_dict
from eventstore.read_ahead import paged, read_ahead
from eventstore.store import EventLog
from eventstore.values import RecordedEvent

__all__ = ["LeanData", "LeanEvent", "LeanMeta", "lean_event_of", "lean_pages"]

# The keys folds look up in ``Installed.details``/``DetailsChanged.changes`` (Connect
# payload names) and ``ForgeDetailsChanged.changes`` (Forge names).
_MAPPED: Final = frozenset(
    {"displayUrl", "productType", "installationId", "cloud_id", "product", "environment_type"}
)


class LeanData(
    msgspec.Struct, frozen=True, gc=False, rename={"base_url": "baseUrl", "client_key": "clientKey"}
):
    """The payload fields the folds read, of any event type (``UNSET``: not in the data).

    ``gc=False``: decoded JSON values cannot refer back to the struct."""

    base_url: Any = UNSET
    client_key: Any = UNSET
    to: Any = UNSET
    displayUrl: Any = UNSET  # the stored payload's keys, looked up by name
    productType: Any = UNSET
    installationId: Any = UNSET
    installation_id: Any = UNSET
    cloud_id: Any = UNSET
    product: Any = UNSET
    app_version: Any = UNSET
    environment_type: Any = UNSET
    license: Any = UNSET

    # ``Installed.details`` and ``DetailsChanged``/``ForgeDetailsChanged.changes`` as a
    # read-only mapping of the keys in ``_MAPPED``.
    @property
    def details(self) -> LeanData:
        return self

    @property
    def changes(self) -> LeanData:
        return self

    def _value(self, key: str) -> Any:
        if key not in _MAPPED:
            raise LookupError(f"the rebuild's reader does not decode {key!r} (projections.lean)")
        return getattr(self, key)

    def __contains__(self, key: str) -> bool:
        return self._value(key) is not UNSET

    def __getitem__(self, key: str) -> Any:
        value = self._value(key)
        if value is UNSET:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if key not in _MAPPED:  # as in _value, inline: three of these per Installed
            raise LookupError(f"the rebuild's reader does not decode {key!r} (projections.lean)")
        value = getattr(self, key)
        return default if value is UNSET else value


class LeanMeta(msgspec.Struct, frozen=True, gc=False):
    """The metadata fields the folds read (typed as ``eventstore.events.Metadata``'s)."""

    descriptor_version: str | None = None
    operator: str | None = None
    host: str | None = None


class LeanEvent(msgspec.Struct, frozen=True, gc=False, array_like=True):
    """One row of the log with the attributes of a ``RecordedEvent`` the folds read."""

    position: int
    stream_id: str
    version: int
    type: str
    schema_version: int
    recorded_at: datetime
    data: LeanData
    metadata: LeanMeta


_page_decoder: Final = msgspec.json.Decoder(list[LeanEvent])
_data_decoder: Final = msgspec.json.Decoder(LeanData)
_meta_decoder: Final = msgspec.json.Decoder(LeanMeta)


def lean_event_of(event: RecordedEvent) -> LeanEvent:
    """A decoded event as the lean reader would have read it (from its stored shape)."""
    return LeanEvent(
        event.position,
        event.stream_id,
        event.version,
        event.type,
        event.schema_version,
        event.recorded_at,
        msgspec.convert(data_as_dict(event.data), LeanData),
        msgspec.convert(msgspec.to_builtins(event.metadata), LeanMeta),
    )


def _position(event: LeanEvent) -> int:
    return event.position


def lean_pages(store: EventLog, after: int, size: int) -> Iterator[list[LeanEvent]]:
    """The events after position ``after``, in pages of at most ``size``."""
    database = store.database

    def upcast(page: list[LeanEvent]) -> list[LeanEvent]:
        return _upcast(store, page)

    if database.kind == "postgresql":
        fetch = _postgres_reader(database.pool, database.translate, upcast)
        pages = paged(fetch, after, size, _position)
        return read_ahead(pages, depth=1, name="ledger-rebuild-read")
    connection = database.connection
    translate = database.translate

    def read(position: int, count: int) -> list[LeanEvent]:
        with _translated(translate):
            rows = connection().execute(_SQLITE_PAGE, (position, count)).fetchall()
        return upcast(list(map(_sqlite_event, rows)))

    return paged(read, after, size, _position)


def _upcast(store: EventLog, page: list[LeanEvent]) -> list[LeanEvent]:
    """Rows of an older schema version (or an unknown type) read again, typed."""
    current = SCHEMA_VERSIONS.get
    if all(event.schema_version == current(event.type) for event in page):
        return page
    return [
        event
        if event.schema_version == current(event.type)
        else lean_event_of(next(store.read_all(event.position - 1, 1)))
        for event in page
    ]


class _translated:
    """Driver errors leave as the store's own (``database.translate``)."""

    def __init__(self, translate: Translate) -> None:
        self.translate = translate

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        if isinstance(error, Exception) and not isinstance(error, StoreError):
            mapped = self.translate(error)
            if mapped is not None:
                raise mapped from error


# ------------------------------------------------------------------ PostgreSQL

# The columns as psycopg's binary protocol gives them cheapest: text as bytes (msgspec
# decodes bytes without a str first), the ids as str, the time as the JSON text of the
# store's own reading of recorded_at (eventstore.postgres.store, _EVENT_PAGE; psycopg's
# timestamptz loader costs several times msgspec's). Building each page as one JSON
# text in the server instead was tried: ~10 µs a row of string concatenation there.
_PG_PAGE: Final = (
    "SELECT position, stream_id::varchar, version, type::varchar, schema_version, data,"
    " metadata, '\"' || {time} || 'Z\"' FROM events WHERE position > %s ORDER BY position"
    " LIMIT %s"
)
_ISO_TIME: Final = "(recorded_at AT TIME ZONE 'UTC')::text"
_ANY_TIME: Final = "to_char(recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
_time_decoder: Final = msgspec.json.Decoder(datetime)
_CURRENT: Final = frozenset(SCHEMA_VERSIONS.items())


def _postgres_reader(
    pool: Any, translate: Translate, upcast: Callable[[list[LeanEvent]], list[LeanEvent]]
) -> Callable[[int, int], list[LeanEvent]]:
    def read(after: int, size: int) -> list[LeanEvent]:
        with _translated(translate), pool.connection() as conn, conn.cursor(binary=True) as cur:
            cur.adapters.register_loader("text", ByteaBinaryLoader)  # JSON as bytes, never str
            iso = (conn.info.parameter_status("DateStyle") or "").startswith("ISO")
            sql = _PG_PAGE.replace("{time}", _ISO_TIME if iso else _ANY_TIME)
            rows = cur.execute(sql.encode(), [after, size], prepare=True).fetchall()
        if not rows:
            return []
        # Column by column through C-level maps: no Python code per event.
        positions, streams, versions, types, schemas, data, metadata, times = zip(
            *rows, strict=True
        )
        del rows
        page = list(
            map(
                LeanEvent,
                positions,
                streams,
                versions,
                types,
                schemas,
                map(_time_decoder.decode, times),
                map(_data_decoder.decode, data),
                map(_meta_decoder.decode, metadata),
            )
        )
        # Rows of an older schema version (almost never any) are read again, upcast.
        return page if set(zip(types, schemas, strict=True)) <= _CURRENT else upcast(page)

    return read


# ------------------------------------------------------------------ SQLite

_SQLITE_PAGE: Final = (
    "SELECT position, stream_id, version, type, schema_version, recorded_at, data, metadata"
    " FROM events WHERE position > ? ORDER BY position LIMIT ?"
)


def _sqlite_event(row: tuple[Any, ...]) -> LeanEvent:
    position, stream_id, version, kind, schema, recorded_at, data, metadata = row
    return LeanEvent(
        position,
        stream_id,
        version,
        kind,
        schema,
        parse_timestamp(recorded_at),  # as the store reads it
        _data_decoder.decode(data),
        _meta_decoder.decode(metadata),
    )
