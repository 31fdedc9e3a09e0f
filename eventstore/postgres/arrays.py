"""One-dimensional PostgreSQL arrays in binary, for the append's parameters
and the projection runner's upserts.

psycopg dumps a Python list by looking for its element type, choosing an element
dumper and calling it once per element, all in Python: for the twelve small arrays of
a group commit's one statement that was a tenth of an accepted call's CPU. The append
knows every array's element type, so it wraps each list in one of these classes,
whose dumper writes PostgreSQL's binary array format in one pass (``array_send``:
dimensions, a null flag, the element type, then each element's length and bytes).

Importing this module registers them for every connection the process opens (they
are this module's own classes: nothing else is dumped differently).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import psycopg
from psycopg.adapt import AdaptersMap, Dumper
from psycopg.postgres import types as pg_types
from psycopg.pq import Format

_HEADER = struct.Struct("!iiIii")  # ndim, has_null, element oid, length, lower bound
_EMPTY = struct.Struct("!iiI")  # ndim 0, has_null 0, element oid
_LENGTH = struct.Struct("!i")
_NULL = _LENGTH.pack(-1)
_INT8 = struct.Struct("!iq")  # length 8, value
_EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class _Array(list[Any]):
    """A list whose elements are all of one PostgreSQL type, ``element``. Only its
    subclasses are registered and ever dumped; each writes its own elements."""

    element: ClassVar[str]

    @classmethod
    def element_bytes(cls, value: Any) -> bytes:
        """One non-NULL element: its 4-byte length, then its bytes (``array_send``)."""
        raise NotImplementedError(f"{cls.__name__} is abstract: use one of ARRAY_TYPES")


class TextArray(_Array):
    """``text[]`` of ``str`` or UTF-8 ``bytes`` (or None)."""

    element = "text"

    @classmethod
    def element_bytes(cls, value: str | bytes) -> bytes:
        raw = value.encode() if isinstance(value, str) else value
        return _LENGTH.pack(len(raw)) + raw


class ByteaArray(_Array):
    """``bytea[]`` of ``bytes`` (or None)."""

    element = "bytea"

    @classmethod
    def element_bytes(cls, value: bytes) -> bytes:
        return _LENGTH.pack(len(value)) + value


class _FixedWidth(_Array):
    """Elements of one width: each is its length and its value, in ``packed``."""

    packed: ClassVar[struct.Struct]  # "!i" (the length) and the value's own format

    @classmethod
    def element_bytes(cls, value: Any) -> bytes:
        return cls.packed.pack(cls.packed.size - 4, value)


class Int2Array(_FixedWidth):
    element, packed = "int2", struct.Struct("!ih")


class Int4Array(_FixedWidth):
    element, packed = "int4", struct.Struct("!ii")


class Int8Array(_FixedWidth):
    element, packed = "int8", _INT8


class BoolArray(_FixedWidth):
    element, packed = "bool", struct.Struct("!i?")


class TimestamptzArray(_Array):
    """``timestamptz[]`` of timezone-aware datetimes (microseconds since 2000 UTC)."""

    element = "timestamptz"

    @classmethod
    def element_bytes(cls, value: datetime) -> bytes:
        if value.tzinfo is None:
            raise ValueError("a timestamptz needs a timezone-aware datetime")
        return _INT8.pack(8, (value - _EPOCH_2000) // _MICROSECOND)


def encode(array: _Array) -> bytes:
    """``array`` in PostgreSQL's binary array format."""
    element_oid = _ELEMENT_OIDS[array.element]  # a dict: pg_types' lookup cost ~1 µs
    if not array:
        return _EMPTY.pack(0, 0, element_oid)
    has_null = None in array
    to_bytes = array.element_bytes
    body = b"".join([_NULL if v is None else to_bytes(v) for v in array])  # a list: faster
    return _HEADER.pack(1, int(has_null), element_oid, len(array), 1) + body


def _dumper_for(cls: type[_Array]) -> type[Dumper]:
    class ArrayDumper(Dumper):
        format = Format.BINARY
        oid = pg_types[cls.element].array_oid

        def dump(self, obj: Any) -> bytes:
            return encode(obj)

    ArrayDumper.__name__ = f"{cls.__name__}Dumper"
    return ArrayDumper


ARRAY_TYPES: tuple[type[_Array], ...] = (
    TextArray,
    ByteaArray,
    Int4Array,
    Int2Array,
    Int8Array,
    BoolArray,
    TimestamptzArray,
)


# Each element type's OID, looked up once (the builtin types' OIDs never change).
_ELEMENT_OIDS: dict[str, int] = {
    cls.element: pg_types[cls.element].oid for cls in ARRAY_TYPES
}


def register(adapters: AdaptersMap) -> None:
    """Dump these classes with their one-pass dumpers on the connections of ``adapters``."""
    for cls in ARRAY_TYPES:
        adapters.register_dumper(cls, _dumper_for(cls))


register(psycopg.adapters)
