"""What every lifecycle call's body shares, Connect and Forge alike (SPEC §4 rule 1,
§10 rule 1): ``application/json``, at most ``MAX_BODY_BYTES``, valid JSON, an object,
within the size, depth and character limits. Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

import msgspec

MAX_BODY_BYTES: Final = 64 * 1024
MAX_STRING: Final = 8192
MAX_DEPTH: Final = 8


_decoder = msgspec.json.Decoder()



# What a hostile body can make the decoder raise besides DecodeError: invalid UTF-8
# inside a string, and nesting deep enough to exhaust the recursion limit.
DECODE_ERRORS = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)



# Characters no lifecycle field has a use for, refused in every string (names too):
# C0 controls (NUL, tabs and newlines included), DEL, C1 controls, and the bidi
# overrides and isolates that make a printed identifier read as another one. A NUL
# cannot even be stored by PostgreSQL; the rest would corrupt logs, tables and pages.
_NON_PRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")



@dataclass(frozen=True, slots=True)
class BodyError(Exception):
    status: int
    code: str
    detail: str



def parse_json_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    """Rule 1's common part for Connect and Forge: ``application/json``, at most
    ``MAX_BODY_BYTES``, valid JSON, an object, within the size and character limits."""
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise BodyError(400, "unsupported_media_type", "the body must be application/json")
    if len(body) > MAX_BODY_BYTES:
        raise BodyError(413, "body_too_large", f"the body exceeds {MAX_BODY_BYTES} bytes")
    try:
        value = _decoder.decode(body)
    except DECODE_ERRORS:
        raise BodyError(400, "malformed_json", "the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BodyError(400, "not_an_object", "the body must be a JSON object")
    check_sizes(value, 0)
    return value



def check_sizes(value: Any, depth: int, where: str = "the body") -> None:
    """Unknown fields are kept, so they too get limits: string length, nesting depth
    and no non-printable character, in values and in names."""
    if depth > MAX_DEPTH:
        raise BodyError(400, "too_deep", f"the body nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            raise BodyError(
                400, "field_too_long", f"a string is longer than {MAX_STRING} characters"
            )
        refuse_non_printable(value, where)
    elif isinstance(value, dict):
        for name, item in value.items():
            if len(name) > 256:
                raise BodyError(400, "field_too_long", "a field name is too long")
            refuse_non_printable(name, "a field name")
            check_sizes(item, depth + 1, _field_label(name) if depth == 0 else where)
    elif isinstance(value, list):
        for item in value:
            check_sizes(item, depth + 1, where)



def refuse_non_printable(text: str, where: str) -> None:
    if _NON_PRINTABLE.search(text):
        raise BodyError(
            400, "control_character", f"{where} holds a control or non-printable character"
        )



def _field_label(name: str) -> str:
    """A top-level field's name for a message: it was checked printable; keep it short."""
    return name if len(name) <= 64 else name[:61] + "..."



def decode_body(body: bytes) -> Any:
    """The body as a JSON value; raises what ``DECODE_ERRORS`` lists."""
    return _decoder.decode(body)
