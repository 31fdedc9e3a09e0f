"""Downloads of a console list: every row of the page's own query, streamed as CSV or
JSON. Rows are the admin API's objects (``app.queries.reads``), so a download says
what the API says; no secret was ever in them.

CSV: a header line of field names, nested values as compact JSON, and a text cell
that a spreadsheet would take for a formula (``= + - @``, tab, carriage return) led
by an apostrophe, so opening a download never runs what a tenant or a caller sent.
JSON: one array of objects, written as the rows are read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

import msgspec
from fastapi.responses import StreamingResponse

from app.queries.evidence import cell
from eventstore.clock import utcnow

FORMATS: Final = ("csv", "json")
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
_CHUNK: Final = 200  # rows per write


def safe_cell(value: Any) -> str:
    text = cell(value)
    if isinstance(value, str) and text.startswith(_FORMULA_START):
        return "'" + text
    return text


def csv_lines(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    for index, row in enumerate(rows, 1):
        writer.writerow([safe_cell(row.get(name)) for name in columns])
        if index % _CHUNK == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def json_lines(rows: Iterable[Mapping[str, Any]]) -> Iterator[bytes]:
    encoder = msgspec.json.Encoder()
    yield b"["
    for index, row in enumerate(rows):
        yield (b",\n" if index else b"\n") + encoder.encode(row)
    yield b"\n]\n"


def download(
    name: str, fmt: str, rows: Iterable[Mapping[str, Any]], columns: Sequence[str],
    headers: Mapping[str, str],
) -> StreamingResponse:
    """``name-<UTC time>.csv`` or ``.json`` as an attachment, streamed."""
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    body = csv_lines(rows, columns) if fmt == "csv" else json_lines(rows)
    media = "text/csv; charset=utf-8" if fmt == "csv" else "application/json"
    return StreamingResponse(
        body,
        media_type=media,
        headers={
            **headers,
            "Content-Disposition": f'attachment; filename="{name}-{stamp}.{fmt}"',
        },
    )
