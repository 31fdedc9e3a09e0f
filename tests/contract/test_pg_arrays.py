"""The append's binary arrays (eventstore.postgres.arrays) read back by PostgreSQL itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore.postgres import arrays as pg_arrays
from eventstore.postgres.arrays import (
    BoolArray,
    ByteaArray,
    Int2Array,
    Int4Array,
    Int8Array,
    TextArray,
    TimestamptzArray,
)


@pytest.fixture(scope="module")
def conn(postgres_databases: Any) -> Any:
    with psycopg.connect(postgres_databases.create(), autocommit=True) as connection:
        yield connection


def echo(conn: psycopg.Connection[Any], array: Any, cast: str) -> Any:
    row = conn.execute(f"SELECT %b::{cast}", [array]).fetchone()
    assert row is not None
    return row[0]


texts = st.lists(
    st.none()
    | st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")),
    max_size=8,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=texts)
def test_text_arrays_round_trip_str_and_utf8_bytes(conn: Any, values: list[str | None]) -> None:
    assert echo(conn, TextArray(values), "text[]") == values
    as_bytes = [None if v is None else v.encode() for v in values]
    assert echo(conn, TextArray(as_bytes), "text[]") == values


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fours=st.lists(st.integers(-(2**31), 2**31 - 1), max_size=6),
    twos=st.lists(st.none() | st.integers(-(2**15), 2**15 - 1), max_size=6),
    blobs=st.lists(st.none() | st.binary(max_size=40), max_size=6),
    eights=st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=6),
    flags=st.lists(st.none() | st.booleans(), max_size=6),
)
def test_number_and_bytea_arrays_round_trip(
    conn: Any,
    fours: list[int],
    twos: list[int | None],
    blobs: list[bytes | None],
    eights: list[int | None],
    flags: list[bool | None],
) -> None:
    assert echo(conn, Int4Array(fours), "int4[]") == fours
    assert echo(conn, Int2Array(twos), "int2[]") == twos
    assert echo(conn, ByteaArray(blobs), "bytea[]") == blobs
    assert echo(conn, Int8Array(eights), "int8[]") == eights
    assert echo(conn, BoolArray(flags), "bool[]") == flags


def test_timestamptz_arrays_keep_the_instant_to_the_microsecond(conn: Any) -> None:
    instants = [
        datetime(2026, 12, 3, 6, 30, 1, 123456, tzinfo=UTC),
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-5))),
        None,
    ]
    assert echo(conn, TimestamptzArray(instants), "timestamptz[]") == instants
    with pytest.raises(ValueError):
        pg_arrays.encode(TimestamptzArray([datetime(2026, 1, 1)]))  # naive: refused
