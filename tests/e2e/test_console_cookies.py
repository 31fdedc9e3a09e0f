"""Garbage session cookies over real HTTP: every console page answers with the login
redirect, never a 500 (issue 17: "No input reaches a 500").

The cookie header goes out as raw bytes: Starlette reads a header as Latin-1, so the
byte 0xB2 arrives as "²", which ``str.isdigit`` calls a digit and ``int`` refuses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.http.console import auth
from tests.harness import RunningService, running_service

PAGES = (
    "/console",
    "/console/tenants/client-a",
    "/console/descriptors",
    "/console/installations",
    "/console/presumed-gone",
    "/console/rejections",
    "/console/integrity",
)

LATER = str(int(time.time()) + 3600)
GARBAGE: dict[str, bytes] = {
    "superscript digits": "²³".encode("latin-1"),
    "superscript expiry with a mac": "²³.deadbeef".encode("latin-1"),
    "superscript digit in a real expiry": f"{LATER}²".encode("latin-1") + b".ab",
    "Arabic-Indic digits (UTF-8)": "١٢٣٤٥٦٧٨٩٠.deadbeef".encode(),
    "mathematical bold digits (UTF-8)": ("\U0001d7d7" * 10 + ".00").encode(),
    "fullwidth digits (UTF-8)": ("\uff19" * 10 + ".00").encode(),
    "a bare byte 0xFF": b"\xff\xfe.\xff",
    "only a dot": b".",
    "no expiry": b".deadbeef",
    "a negative expiry": b"-1.deadbeef",
    "a signed expiry": b"+9999999999.deadbeef",
    "an expiry with spaces": b" 9999999999 .deadbeef",
    "an expiry with underscores": b"9_999_999_999.deadbeef",
    "a hexadecimal expiry": b"0x10.deadbeef",
    "a float expiry": b"9999999999.5.deadbeef",
    "thirteen digits": b"9" * 13 + b".deadbeef",
    "a long value": b"9" * 8000,
    "a quoted value": b'"9999999999.deadbeef"',
    "escapes in quotes": b'"\\262\\263.ab"',
    "a NUL byte escape": b"9999999999.%00",
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    path: Path = tmp_path_factory.mktemp("cookies") / "ledger.db"
    with running_service(f"sqlite:///{path}") as running:
        yield running


@pytest.mark.parametrize("name", GARBAGE)
def test_a_garbage_session_cookie_gets_the_login_never_a_500(
    service: RunningService, name: str
) -> None:
    cookie = auth.COOKIE.encode() + b"=" + GARBAGE[name]
    for page in PAGES:
        response = service.client.get(page, headers={"Cookie": cookie})
        assert response.status_code == 303, (name, page, response.status_code, response.text)
        assert response.headers["location"].startswith("/console/login?next=%2Fconsole")


def test_only_ascii_digits_make_an_expiry() -> None:
    from app.settings import Settings

    settings = Settings(admin_token="a-token-for-the-session-check-0000")
    good = auth.session_value(settings)
    assert auth.valid_session(settings, good)
    expires, _, mac = good.partition(".")
    arabic = expires.translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))
    for value in ("²³", "²³." + mac, f"{arabic}.{mac}", f"{expires}².{mac}"):
        assert not auth.valid_session(settings, value), value
