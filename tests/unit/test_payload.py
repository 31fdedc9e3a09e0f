"""Rule 1 of SPEC §4: the body of a lifecycle call (``app.ingest.connect.body``)."""

from __future__ import annotations

import contextlib
import json
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.ingest.connect.body import (
    MAX_CLIENT_KEY,
    MAX_DESCRIPTOR_VERSION,
    MAX_SECRET,
    MAX_URL,
    READ_FIELDS,
    LifecyclePayload,
    check_descriptor_version,
    claimed_identity,
    host_allowed,
    parse_lifecycle_body,
)
from app.ingest.json_body import MAX_BODY_BYTES, MAX_DEPTH, MAX_STRING, BodyError

APP_KEY = "tenant-ledger"
ALLOW = ("*.atlassian.net", "*.jira.com", "*.jira-dev.com")
DEV = ("localhost", "127.0.0.1")
CLIENT_KEY = "jira:6f1a2b3c-0000-4000-8000-000000000001"
URL = "https://acme.atlassian.net"
SECRET = "shared-secret-value"

_MISSING: Any = object()


def good(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "key": APP_KEY,
        "clientKey": CLIENT_KEY,
        "baseUrl": URL,
        "sharedSecret": SECRET,
        "displayUrl": URL,
        "productType": "jira",
        "description": "Atlassian JIRA at https://acme.atlassian.net",
        "serverVersion": "100236",
        "pluginsVersion": "1001.0.0-SNAPSHOT",
        "eventType": "installed",
    }
    for name, new in changes.items():
        if new is _MISSING:
            value.pop(name, None)
        else:
            value[name] = new
    return value


def encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def parse(
    body: bytes | dict[str, Any],
    content_type: str | None = "application/json",
    *,
    require_secret: bool = True,
    allowed: tuple[str, ...] = ALLOW,
    dev: tuple[str, ...] = DEV,
) -> LifecyclePayload:
    raw = body if isinstance(body, bytes) else encode(body)
    return parse_lifecycle_body(
        raw,
        content_type,
        app_key=APP_KEY,
        allowed_hosts=allowed,
        dev_hosts=dev,
        require_secret=require_secret,
    )


def refused(
    body: bytes | dict[str, Any],
    content_type: str | None = "application/json",
    *,
    require_secret: bool = True,
    allowed: tuple[str, ...] = ALLOW,
) -> BodyError:
    with pytest.raises(BodyError) as raised:
        parse(body, content_type, require_secret=require_secret, allowed=allowed)
    return raised.value


def padded_to(size: int) -> bytes:
    """A valid body of exactly ``size`` bytes (JSON whitespace before the closing brace)."""
    raw = encode(good())
    assert len(raw) <= size
    return raw[:-1] + b" " * (size - len(raw)) + b"}"


# ---------------------------------------------------------------- the good case


def test_good_body_is_parsed() -> None:
    payload = parse(good())

    assert payload.client_key == CLIENT_KEY
    assert payload.base_url == URL
    assert payload.shared_secret == SECRET
    assert payload.fields == {k: v for k, v in good().items() if k != "sharedSecret"}
    assert "sharedSecret" not in payload.fields


def test_unknown_fields_are_kept() -> None:
    extra = {
        "futureField": {"nested": [1, 2.5, None, True, {"deeper": "yes"}]},
        "x-odd name": "",
        "entitlementId": "ent-1",
        "installationId": "ari:cloud:ecosystem::installation/1",
    }
    payload = parse(good(**extra))
    for name, value in extra.items():
        assert payload.fields[name] == value


# ---------------------------------------------------------------- content type


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
        " application/json ; charset=utf-8",
    ],
)
def test_json_content_types_are_accepted(content_type: str) -> None:
    assert parse(good(), content_type).client_key == CLIENT_KEY


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "",
        "text/plain",
        "text/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonp",
        "application/json-patch+json",
        "application/jsonx; charset=utf-8",
    ],
)
def test_other_content_types_are_refused(content_type: str | None) -> None:
    error = refused(good(), content_type)
    assert (error.status, error.code) == (400, "unsupported_media_type")


# ---------------------------------------------------------------- size


def test_body_of_exactly_64_kib_is_accepted() -> None:
    raw = padded_to(MAX_BODY_BYTES)
    assert len(raw) == 64 * 1024
    assert parse(raw).client_key == CLIENT_KEY


def test_body_one_byte_over_64_kib_is_413() -> None:
    raw = padded_to(MAX_BODY_BYTES + 1)
    assert len(raw) == 64 * 1024 + 1
    error = refused(raw)
    assert (error.status, error.code) == (413, "body_too_large")


def test_huge_body_is_413_before_it_is_decoded() -> None:
    error = refused(b"{" * (MAX_BODY_BYTES * 4))
    assert error.status == 413


# ---------------------------------------------------------------- JSON shape


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b" ",
        b"{",
        b'{"key": "tenant-ledger",}',
        b"{'key': 'tenant-ledger'}",
        b'{"key": "a"} {"key": "b"}',
        b'{"key": NaN}',
        b"\xff\xfe{}",
    ],
)
def test_malformed_json_is_400(raw: bytes) -> None:
    error = refused(raw)
    assert (error.status, error.code) == (400, "malformed_json")


INVALID_UTF8_IN_STRINGS = [
    b'{"key": "\xff"}',
    b'{"clientKey": "jira:\xc3("}',
    b'{"\xed\xa0\x80": 1}',  # an encoded lone surrogate as a field name
]


@pytest.mark.parametrize("raw", INVALID_UTF8_IN_STRINGS)
def test_invalid_utf8_inside_a_string_is_400(raw: bytes) -> None:
    error = refused(raw)
    assert (error.status, error.code) == (400, "malformed_json")


@pytest.mark.parametrize("raw", INVALID_UTF8_IN_STRINGS)
def test_claimed_identity_of_invalid_utf8_is_unknown(raw: bytes) -> None:
    assert claimed_identity(raw) == (None, None)


@pytest.mark.parametrize("value", [[], [good()], "text", 1, 1.5, None, True])
def test_json_that_is_not_an_object_is_400(value: Any) -> None:
    error = refused(encode(value))
    assert (error.status, error.code) == (400, "not_an_object")


@pytest.mark.parametrize("name", ["key", "clientKey", "baseUrl"])
@pytest.mark.parametrize("value", [_MISSING, None])
def test_missing_required_field_is_400(name: str, value: Any) -> None:
    error = refused(good(**{name: value}))
    assert (error.status, error.code) == (400, "missing_field")
    assert name in error.detail


@pytest.mark.parametrize("name", ["key", "clientKey", "baseUrl"])
def test_empty_required_field_is_400(name: str) -> None:
    error = refused(good(**{name: ""}))
    assert (error.status, error.code) == (400, "invalid_field")
    assert name in error.detail


NOT_STRINGS: list[Any] = [0, 1, -1.5, 12345, True, False, [], ["x"], {}, {"a": "b"}]


def test_the_read_fields_are_the_ones_spec_4_names() -> None:
    assert set(READ_FIELDS) == {
        "key", "clientKey", "baseUrl", "displayUrl", "displayUrlServicedeskHelpCenter",
        "productType", "description", "serverVersion", "pluginsVersion",
        "serviceEntitlementNumber", "entitlementId", "entitlementNumber", "oauthClientId",
        "installationId", "sharedSecret", "eventType",
    }  # fmt: skip


@pytest.mark.parametrize("require_secret", [True, False])
@pytest.mark.parametrize("name", READ_FIELDS)
@pytest.mark.parametrize("value", NOT_STRINGS)
def test_a_read_field_that_is_not_a_string_is_400_bad_field_type(
    name: str, value: Any, require_secret: bool
) -> None:
    error = refused(good(**{name: value}), require_secret=require_secret)
    assert (error.status, error.code) == (400, "bad_field_type")
    assert name in error.detail


@pytest.mark.parametrize(
    "name", [n for n in READ_FIELDS if n not in ("key", "clientKey", "baseUrl", "sharedSecret")]
)
def test_an_optional_read_field_may_be_null_or_a_string(name: str) -> None:
    assert parse(good(**{name: None})).fields[name] is None
    assert parse(good(**{name: "text"})).fields[name] == "text"


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text("ab"),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text("ab"), inner, max_size=3)
        ),
        max_leaves=8,
    )
)
def test_other_fields_may_hold_any_json_value_and_are_kept(value: Any) -> None:
    payload = parse(good(extraField=value, licenseDetails=value))
    assert payload.fields["extraField"] == value
    assert payload.fields["licenseDetails"] == value


@pytest.mark.parametrize(
    "key", ["another-app", "Tenant-Ledger", "tenant-ledger ", " tenant-ledger"]
)
def test_wrong_app_key_is_401(key: str) -> None:
    error = refused(good(key=key))
    assert (error.status, error.code) == (401, "wrong_app_key")


# ---------------------------------------------------------------- baseUrl


@pytest.mark.parametrize(
    "url",
    [
        "https://acme.atlassian.net",
        "https://acme.atlassian.net/",
        "https://acme.atlassian.net/wiki",
        "https://acme.atlassian.net:443/jira?x=1",
        "https://ACME.Atlassian.NET",
        "HTTPS://acme.atlassian.net",
        "https://acme.atlassian.net.",
        "https://deep.sub.atlassian.net",
        "https://acme.jira.com",
        "https://acme.jira-dev.com",
    ],
)
def test_allowed_https_base_urls(url: str) -> None:
    assert parse(good(baseUrl=url)).base_url == url


@pytest.mark.parametrize(
    "url",
    [
        "https://atlassian.net",
        "https://acme.atlassian.net.evil.com",
        "https://evilatlassian.net",
        "https://atlassian.net.evil.com",
        "https://acme.atlassian.network",
        "https://acme.atlassian.com",
        "https://example.com",
        "https://10.0.0.1",
        "https://[::1]",
    ],
)
def test_hosts_outside_the_allowlist_are_refused(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert (error.status, error.code) == (400, "host_not_allowed")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("x.atlassian.net", True),
        ("X.ATLASSIAN.NET", True),
        ("x.atlassian.net.", True),
        ("atlassian.net", False),
        ("x.atlassian.net.evil.com", False),
        ("xatlassian.net", False),
        ("x.jira.com", True),
        ("jira.com", False),
    ],
)
def test_host_allowed(host: str, expected: bool) -> None:
    assert host_allowed(host, ALLOW) is expected


def test_host_allowed_with_an_empty_allowlist() -> None:
    assert not host_allowed("x.atlassian.net", [])


def test_custom_allowlist_replaces_the_default() -> None:
    url = "https://confluence.example.org"
    assert parse(good(baseUrl=url), allowed=("confluence.example.org",)).base_url == url
    assert refused(good(baseUrl=URL), allowed=("confluence.example.org",)).code == (
        "host_not_allowed"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://acme.atlassian.net",
        "http://acme.jira.com/",
        "HTTP://acme.atlassian.net",
    ],
)
def test_plain_http_is_refused_outside_dev_hosts(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert (error.status, error.code) == (400, "insecure_base_url")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://LOCALHOST:8000/app",
        "http://127.0.0.1:9000",
        "https://localhost",
    ],
)
def test_plain_http_is_allowed_for_dev_hosts(url: str) -> None:
    assert parse(good(baseUrl=url)).base_url == url


def test_dev_hosts_are_configurable() -> None:
    url = "http://localhost:8000"
    with pytest.raises(BodyError) as raised:
        parse(good(baseUrl=url), dev=())
    assert raised.value.code == "insecure_base_url"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://acme.atlassian.net",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "acme.atlassian.net",
        "//acme.atlassian.net",
        "/relative/path",
        "https://",
        "https:///path",
    ],
)
def test_non_https_or_host_less_urls_are_refused(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert (error.status, error.code) == (400, "invalid_base_url")


@pytest.mark.parametrize(
    "url",
    [
        "https://user@acme.atlassian.net",
        "https://user:password@acme.atlassian.net",
        "https://acme.atlassian.net@evil.com",
        "https://evil.com@acme.atlassian.net",
        "https://evil.com:x@acme.atlassian.net",
        "http://user@localhost:8000",
    ],
)
def test_userinfo_in_base_url_is_refused(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert (error.status, error.code) == (400, "invalid_base_url")


@pytest.mark.parametrize(
    "url",
    [
        "https://[acme.atlassian.net",
        "https://acme.atlassian.net]",
        "https://evil.com\uff03.atlassian.net",
        "https://evil.com\ufe6b.atlassian.net",
    ],
)
def test_unparsable_base_url_is_a_400(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert (error.status, error.code) == (400, "invalid_base_url")


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com\\.atlassian.net",
        "https://evil.com%2f.atlassian.net",
        "https://evil com.atlassian.net",
        "https://acme.atlassian.net:notaport",
        "https://acme.atlassian.net\n/",
    ],
)
def test_base_url_that_is_not_a_valid_url_is_refused(url: str) -> None:
    error = refused(good(baseUrl=url))
    assert error.status == 400


# ---------------------------------------------------------------- sharedSecret


@pytest.mark.parametrize("secret", [_MISSING, None, ""])
def test_shared_secret_is_required_for_installed(secret: Any) -> None:
    error = refused(good(sharedSecret=secret), require_secret=True)
    assert (error.status, error.code) == (400, "missing_field")


@pytest.mark.parametrize("secret", [_MISSING, None])
def test_shared_secret_is_optional_otherwise(secret: Any) -> None:
    payload = parse(good(sharedSecret=secret), require_secret=False)
    assert payload.shared_secret is None
    assert "sharedSecret" not in payload.fields


def test_shared_secret_is_passed_on_but_not_kept_in_fields_when_optional() -> None:
    payload = parse(good(), require_secret=False)
    assert payload.shared_secret == SECRET
    assert SECRET not in json.dumps(payload.fields)


@pytest.mark.parametrize("require_secret", [True, False])
@pytest.mark.parametrize("secret", [1, True, ["s"], {"s": "s"}])
def test_non_string_shared_secret_is_400(require_secret: bool, secret: Any) -> None:
    error = refused(good(sharedSecret=secret), require_secret=require_secret)
    assert (error.status, error.code) == (400, "bad_field_type")


def test_shared_secret_length_limit() -> None:
    assert parse(good(sharedSecret="s" * MAX_SECRET)).shared_secret == "s" * MAX_SECRET
    error = refused(good(sharedSecret="s" * (MAX_SECRET + 1)))
    assert (error.status, error.code) == (400, "field_too_long")
    assert "s" * 20 not in error.detail


# ---------------------------------------------------------------- limits on everything kept


def _nested(levels: int, leaf: Any = "x") -> Any:
    value = leaf
    for level in range(levels):
        value = [value] if level % 2 else {"n": value}
    return value


def test_nesting_up_to_the_limit_is_kept() -> None:
    # the body object holds the field, which nests MAX_DEPTH - 1 more containers
    deep = _nested(MAX_DEPTH - 1)
    assert parse(good(futureField=deep)).fields["futureField"] == deep


@pytest.mark.parametrize("levels", [MAX_DEPTH, MAX_DEPTH + 1, 50, 500])
def test_deeper_nesting_is_refused(levels: int) -> None:
    error = refused(good(futureField=_nested(levels)))
    assert (error.status, error.code) == (400, "too_deep")


@pytest.mark.parametrize("levels", [2_000, 30_000])
def test_pathologically_deep_json_is_a_400(levels: int) -> None:
    raw = encode(good())[:-1] + b', "x": ' + b"[" * levels + b"]" * levels + b"}"
    assert len(raw) <= MAX_BODY_BYTES
    error = refused(raw)
    assert error.status == 400


def test_claimed_identity_survives_pathologically_deep_json() -> None:
    raw = encode(good())[:-1] + b', "x": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    # No exception; a body the decoder refuses claims no identity.
    assert claimed_identity(raw) == (None, None)


@pytest.mark.parametrize(
    "extra",
    [
        {"description": "d" * (MAX_STRING + 1)},
        {"futureField": ["ok", "d" * (MAX_STRING + 1)]},
        {"futureField": {"inner": "d" * (MAX_STRING + 1)}},
        {"f" * 257: "value"},
        {"futureField": {"f" * 257: "value"}},
    ],
)
def test_long_strings_anywhere_are_refused(extra: dict[str, Any]) -> None:
    error = refused(good(**extra))
    assert (error.status, error.code) == (400, "field_too_long")


def test_strings_at_the_limits_are_kept() -> None:
    payload = parse(
        good(
            description="d" * MAX_STRING,
            clientKey="c" * MAX_CLIENT_KEY,
            **{"f" * 256: "value"},
        )
    )
    assert payload.fields["description"] == "d" * MAX_STRING
    assert payload.client_key == "c" * MAX_CLIENT_KEY
    assert payload.fields["f" * 256] == "value"


def test_base_url_length_limit() -> None:
    ok = URL + "/" + "p" * (MAX_URL - len(URL) - 1)
    assert len(ok) == MAX_URL
    assert parse(good(baseUrl=ok)).base_url == ok
    error = refused(good(baseUrl=ok + "p"))
    assert (error.status, error.code) == (400, "field_too_long")


@pytest.mark.parametrize(("name", "limit"), [("clientKey", MAX_CLIENT_KEY), ("key", MAX_STRING)])
def test_required_field_length_limits(name: str, limit: int) -> None:
    error = refused(good(**{name: "k" * (limit + 1)}))
    assert (error.status, error.code) == (400, "field_too_long")


@pytest.mark.parametrize("char", ["\x00", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f"])
def test_control_characters_in_client_key_are_refused(char: str) -> None:
    error = refused(good(clientKey=f"jira:abc{char}def"))
    assert (error.status, error.code) == (400, "control_character")
    assert "clientKey" in error.detail


@pytest.mark.parametrize("client_key", ["jira:abc def", "jira:ключ", "a", "x" * 255])
def test_printable_client_keys_are_accepted(client_key: str) -> None:
    assert parse(good(clientKey=client_key)).client_key == client_key


# ---------------------------------------------------------------- claimed_identity


def test_claimed_identity_of_a_good_body() -> None:
    assert claimed_identity(encode(good())) == (CLIENT_KEY, URL)


def test_claimed_identity_of_a_refused_body() -> None:
    assert claimed_identity(encode(good(key="another-app"))) == (CLIENT_KEY, URL)
    assert claimed_identity(encode(good(baseUrl="http://evil.com"))) == (
        CLIENT_KEY,
        "http://evil.com",
    )


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'"x"', b"null", b"\xff", encode([good()])],
)
def test_claimed_identity_of_garbage_is_unknown(raw: bytes) -> None:
    assert claimed_identity(raw) == (None, None)


def test_claimed_identity_of_non_string_fields() -> None:
    assert claimed_identity(encode(good(clientKey=1))) == (None, URL)
    assert claimed_identity(encode(good(baseUrl=["x"]))) == (CLIENT_KEY, None)
    assert claimed_identity(encode({})) == (None, None)


def test_claimed_identity_truncates_long_values() -> None:
    key, url = claimed_identity(encode(good(clientKey="k" * 1000, baseUrl="u" * 5000)))
    assert key == "k" * MAX_CLIENT_KEY
    assert url == "u" * MAX_URL


def test_claimed_identity_of_a_body_over_the_limit_is_unknown() -> None:
    assert claimed_identity(padded_to(MAX_BODY_BYTES)) == (CLIENT_KEY, URL)
    assert claimed_identity(padded_to(MAX_BODY_BYTES + 1)) == (None, None)


# ---------------------------------------------------------------- properties


def _not_a_known_urlsplit_crash(char: str) -> bool:
    """Characters that make urlsplit raise ValueError (covered by the tests above)."""
    if char in "[]":
        return False
    normal = unicodedata.normalize("NFKC", char)
    return normal == char or not any(c in normal for c in "/?#@:")


# What rule 1 lets through: every character but controls (C0, DEL, C1) and bidi overrides.
NON_PRINTABLE = [chr(c) for c in (*range(0x20), *range(0x7F, 0xA0))] + list(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
printable_texts = st.text(
    alphabet=st.characters(exclude_categories=("Cs",), exclude_characters=NON_PRINTABLE),
    max_size=20,
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    printable_texts,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(printable_texts, inner, max_size=4)
    ),
    max_leaves=25,
)
url_texts = st.builds(
    lambda scheme, rest: scheme + rest,
    st.sampled_from(["https://", "http://", "", "ftp://", "https://x.atlassian.net", "//"]),
    st.text(alphabet=st.characters().filter(_not_a_known_urlsplit_crash), max_size=40),
)
maybe = st.one_of


@st.composite
def bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = draw(st.dictionaries(st.text(max_size=12), json_values, max_size=6))
    if draw(st.booleans()):
        body["key"] = draw(maybe(st.just(APP_KEY), json_values))
    if draw(st.booleans()):
        body["clientKey"] = draw(maybe(st.text(max_size=300), json_values))
    if draw(st.booleans()):
        body["baseUrl"] = draw(
            maybe(url_texts, st.sampled_from([URL, "http://localhost:1"]), json_values)
        )
    if draw(st.booleans()):
        body["sharedSecret"] = draw(maybe(st.text(max_size=40), json_values))
    return body


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=bodies(),
    require_secret=st.booleans(),
    content_type=st.sampled_from(["application/json", "application/json; charset=utf-8"]),
)
def test_arbitrary_json_objects_only_ever_raise_body_error(
    body: dict[str, Any], require_secret: bool, content_type: str
) -> None:
    raw = encode(body)
    try:
        payload = parse(raw, content_type, require_secret=require_secret)
    except BodyError as error:
        assert error.status in (400, 401, 413)
        assert error.code
    else:
        assert payload.client_key == body["clientKey"]
        assert payload.base_url == body["baseUrl"]
        assert payload.fields == {k: v for k, v in body.items() if k != "sharedSecret"}
        assert body["key"] == APP_KEY
    key, url = claimed_identity(raw)
    assert key is None or body["clientKey"].startswith(key)
    assert url is None or body["baseUrl"].startswith(url)


# Bytes that are not valid UTF-8 inside a JSON string are covered by the tests above;
# arbitrary bytes here either are valid UTF-8 or hold no string at all.
raw_bodies = st.one_of(
    st.binary(max_size=200).filter(lambda raw: b'"' not in raw),
    st.text(max_size=200).map(str.encode),
    st.lists(st.sampled_from(list('{}[]:,"0 \\tnulrefa-1e.')), max_size=60).map(
        lambda chars: "".join(chars).encode()
    ),
)


@settings(max_examples=300, deadline=None)
@given(raw=raw_bodies, content_type=st.one_of(st.none(), st.text(max_size=30)))
def test_arbitrary_bytes_only_ever_raise_body_error(raw: bytes, content_type: str | None) -> None:
    with contextlib.suppress(BodyError):
        parse(raw, content_type)
    with contextlib.suppress(BodyError):
        parse(raw, "application/json")
    key, url = claimed_identity(raw)
    assert key is None or isinstance(key, str)
    assert url is None or isinstance(url, str)


@settings(max_examples=200, deadline=None)
@given(
    extra=st.dictionaries(
        printable_texts.filter(lambda k: k not in READ_FIELDS),
        json_values,
        max_size=6,
    )
)
def test_unknown_fields_of_sane_size_are_always_kept(extra: dict[str, Any]) -> None:
    payload = parse(good(**extra))
    for name, value in extra.items():
        assert payload.fields[name] == value


@settings(max_examples=200, deadline=None)
@given(
    field=st.sampled_from(["clientKey", "description", "displayUrl", "somethingNew"]),
    nested=st.booleans(),
    before=printable_texts,
    char=st.sampled_from(NON_PRINTABLE),
    after=printable_texts,
)
def test_a_non_printable_character_anywhere_is_refused(
    field: str, nested: bool, before: str, char: str, after: str
) -> None:
    text = before + char + after
    value: Any = {"deeper": [text]} if nested else text
    error = refused(good(**{field: value}))
    assert (error.status, error.code) == (400, "control_character")
    assert field in error.detail


@pytest.mark.parametrize("char", ["\x00", "\n", "\x85", "\u202e"])
def test_a_non_printable_character_in_a_field_name_is_refused(char: str) -> None:
    error = refused(good(**{f"odd{char}name": "value"}))
    assert (error.status, error.code) == (400, "control_character")
    assert char not in error.detail


@pytest.mark.parametrize("text", ["Jira — ключ 鍵 🔑", "a\u00a0b", "zero\u200dwidth joiner"])
def test_printable_unicode_is_kept(text: str) -> None:
    assert parse(good(description=text)).fields["description"] == text


def test_the_descriptor_version_parameter_is_bounded_and_printable() -> None:
    check_descriptor_version([("v", "1.2.3"), ("other", "\x00")])
    for bad in ("1\x00", "x" * (MAX_DESCRIPTOR_VERSION + 1)):
        with pytest.raises(BodyError) as caught:
            check_descriptor_version([("v", bad)])
        assert caught.value.status == 400
