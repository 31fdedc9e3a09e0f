"""How each read model's rows map to a table: names, columns, keys, conversions.

One spec per projection, shared by both databases; only column types and the
timestamp representation differ (PostgreSQL timestamptz, SQLite ISO text).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Final, Literal, get_args, get_origin

import msgspec
from msgspec.structs import astuple

from eventstore.clock import format_timestamp, parse_timestamp
from projections.installations import InstallationRow, LinkRow
from projections.model import BaseUrlRow, DescriptorRow, ReimportRow, Row, TenantRow


@dataclass(frozen=True)
class Column:
    name: str  # SQL column
    field: str  # row attribute
    kind: str  # text | bool | int | bigint | time
    json: bool = False  # a text column holding the field's JSON text (a list of keys)


@dataclass(frozen=True)
class TableSpec:
    name: str  # the projection's name and its live table's name
    row_type: type[Any]
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # SQL key columns
    indexes: tuple[str, ...] = ()  # extra index column lists, e.g. "state, client_key"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @cached_property
    def in_field_order(self) -> bool:
        """Whether the columns are the row type's fields, all and in order: then a
        PostgreSQL row is the row's own tuple (``astuple``, one C call per row)."""
        fields = tuple(f.name for f in msgspec.structs.fields(self.row_type))
        plain = not any(c.json for c in self.columns)
        return plain and fields == tuple(c.field for c in self.columns)

    def to_tuple(self, row: Row, sqlite: bool) -> tuple[Any, ...]:
        if not sqlite and self.in_field_order:
            return astuple(row)
        values = []
        for column in self.columns:
            value = getattr(row, column.field)
            if column.json:
                value = _json_encode(value).decode()
            elif sqlite and column.kind == "time" and value is not None:
                value = format_timestamp(value)
            elif sqlite and column.kind == "bool" and value is not None:
                value = int(value)  # a nullable bool: NULL stays NULL (unknown)
            values.append(value)
        return tuple(values)

    def from_tuple(self, values: tuple[Any, ...], sqlite: bool) -> Any:
        fields: dict[str, Any] = {}
        for column, value in zip(self.columns, values, strict=True):
            if column.json:
                value = _decode_keys(value)
            elif column.kind == "time" and isinstance(value, str):
                value = parse_timestamp(value)
            elif column.kind == "bool" and value is not None:
                value = bool(value)
            fields[column.field] = value
        return self.row_type(**fields)


_json_encode: Final = msgspec.json.Encoder().encode
_keys_decoder: Final = msgspec.json.Decoder(tuple[str, ...])


def _decode_keys(value: str | bytes | None) -> tuple[str, ...]:
    """A JSON list-of-text column back to its tuple; () for NULL."""
    return () if value is None else _keys_decoder.decode(value)


def _columns(*spec: tuple[str, str] | tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(s[0], s[2] if len(s) == 3 else s[0], s[1]) for s in spec)


_KINDS: Final[dict[object, str]] = {str: "text", bool: "bool", int: "int", datetime: "time"}


def _kind(annotation: object) -> str:
    """The column kind of a row field's type: ``X | None`` as ``X``, a Literal as text."""
    if get_origin(annotation) is Literal:
        return "text"
    kinds = {_kind(arg) for arg in get_args(annotation) if arg is not type(None)}
    if kinds:
        (kind,) = kinds
        return kind
    return _KINDS[annotation]


def columns_of(row_type: type[msgspec.Struct]) -> tuple[Column, ...]:
    """One column per field of ``row_type``, named like it, in its order."""
    return tuple(Column(f.name, f.name, _kind(f.type)) for f in msgspec.structs.fields(row_type))


TENANTS: Final = TableSpec(
    "tenants",
    TenantRow,
    columns_of(TenantRow),  # the row type is the one declaration of a tenant's shape
    key=("client_key",),
    indexes=("state, client_key", "descriptor_version"),
)

DESCRIPTORS: Final = TableSpec(
    "descriptors",
    DescriptorRow,
    _columns(
        ("version", "text"),
        ("first_seen_at", "time"),
        ("tenants", "int"),
        ("first_seen_position", "bigint"),
    ),
    key=("version",),
)

BASE_URLS: Final = TableSpec(
    "base_urls",
    BaseUrlRow,
    _columns(
        ("base_url", "text"),
        ("client_key", "text"),
        ("valid_from", "time", "from_"),
        ("valid_to", "time", "to"),
        ("from_position", "bigint"),
    ),
    key=("client_key", "base_url", "from_position"),
    indexes=("base_url",),
)

REIMPORTS: Final = TableSpec(
    "reimports",
    ReimportRow,
    _columns(
        ("base_url", "text"),
        ("previous_client_key", "text"),
        ("client_key", "text"),
        ("detected_at", "time"),
        ("kind", "text"),
    ),
    key=("client_key",),
)

INSTALLATIONS: Final = TableSpec(
    "installations",
    InstallationRow,
    (
        *_columns(
            ("installation_id", "text"),
            ("cloud_id", "text"),
            ("product", "text"),
            ("app_version", "text"),
            ("environment_type", "text"),
            ("state", "text"),
            ("license_active", "bool"),
        ),
        # Every linked Connect tenant, oldest link first, as a JSON list (one text column
        # on both databases); a new column set makes ``ensure`` drop and refold the table.
        Column("client_keys", "client_keys", "text", json=True),
        *_columns(
            ("client_key", "text"),
            ("installed_at", "time"),
            ("updated_at", "time"),
            ("last_seen_at", "time"),
            ("version", "int"),
            ("installed_position", "bigint"),
        ),
    ),
    key=("installation_id",),
    indexes=("cloud_id", "client_key"),
)

LINKS: Final = TableSpec(
    "links",
    LinkRow,
    _columns(
        ("link_id", "text"),
        ("kind", "text"),
        ("client_key", "text"),
        ("installation_id", "text"),
        ("previous_installation_id", "text"),
        ("evidence_stream", "text"),
        ("evidence_position", "bigint"),
        ("seen_at", "time"),
    ),
    key=("link_id",),
    indexes=("client_key", "installation_id"),
)

SPECS: Final[dict[str, TableSpec]] = {
    s.name: s for s in (TENANTS, DESCRIPTORS, BASE_URLS, REIMPORTS, INSTALLATIONS, LINKS)
}

# Folds that resume from each other's rows are kept, rebuilt and checkpointed
# together: descriptors counts tenants per version, reimports indexes base_urls.
GROUPS: Final[tuple[tuple[str, ...], ...]] = (
    ("tenants", "descriptors"),
    ("base_urls", "reimports"),
    ("installations", "links"),
)


def group_of(name: str) -> tuple[str, ...]:
    for group in GROUPS:
        if name in group:
            return group
    raise KeyError(f"unknown projection {name!r}; known: {', '.join(SPECS)}")


SQL_TYPES: Final[dict[str, tuple[str, str]]] = {
    # kind: (PostgreSQL, SQLite)
    "text": ("text", "TEXT"),
    "bool": ("boolean", "INTEGER"),
    "int": ("integer", "INTEGER"),
    "bigint": ("bigint", "INTEGER"),
    "time": ("timestamptz", "TEXT"),
}


def create_table_sql(spec: TableSpec, table: str, sqlite: bool) -> list[str]:
    """CREATE TABLE and its indexes. Index names carry a random tag because a rebuilt
    table is renamed into service while its indexes keep their names."""
    pick: Callable[[tuple[str, str]], str] = (lambda t: t[1]) if sqlite else (lambda t: t[0])
    columns = ", ".join(f"{c.name} {pick(SQL_TYPES[c.kind])}" for c in spec.columns)
    statements = [f"CREATE TABLE {table} ({columns}, PRIMARY KEY ({', '.join(spec.key)}))"]
    tag = uuid.uuid4().hex[:8]
    for number, index in enumerate(spec.indexes):
        statements.append(f"CREATE INDEX {spec.name}_ix{number}_{tag} ON {table} ({index})")
    return statements


def upsert_sql(spec: TableSpec, table: str, sqlite: bool) -> str:
    marks = ", ".join(["?" if sqlite else "%s"] * len(spec.columns))
    updates = ", ".join(f"{c} = excluded.{c}" for c in spec.column_names if c not in spec.key)
    return (
        f"INSERT INTO {table} ({', '.join(spec.column_names)}) VALUES ({marks})"
        f" ON CONFLICT ({', '.join(spec.key)}) DO UPDATE SET {updates}"
    )
