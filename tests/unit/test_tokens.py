"""Unit and property tests for app.ingest.jwt: every refusal code, the qsh, the kid rule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ingest.connect.tokens import (
    KID_PATTERN,
    canonical_path,
    canonical_query,
    canonical_request,
    is_valid_kid,
    query_string_hash,
    relative_path,
    verify_install_token,
    verify_shared_secret_token,
)
from app.ingest.jwt import REASON_CODES, TokenError, parse_unverified, token_sha256
from app.sim.connect import LifecycleCall, SimulatedHost, make_install_payload

NOW = 1_750_000_000
LEEWAY = 30
APP_BASE_URL = "https://ledger.example.com"
CLIENT_KEY = "b6c1e3a0-1f2d-4c5e-9a8b-7d6e5f4a3b2c"
SECRET = "s3cr3t-that-is-long-enough-for-hs256-0123456789"
KID = "key-2024.01_a"
QSH = query_string_hash("POST", "/installed", [("v", "1")])


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@pytest.fixture(scope="module")
def public_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return _pem(rsa_key)


def _claims(**override: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": CLIENT_KEY,
        "aud": [APP_BASE_URL],
        "qsh": QSH,
        "iat": NOW,
        "exp": NOW + 180,
    }
    for name, value in override.items():
        if value is _DROP:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


_DROP: Any = object()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _seg(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return ".".join(
        [_b64(json.dumps(header).encode()), _b64(json.dumps(claims).encode()), _b64(signature)]
    )


@pytest.fixture
def rs256(rsa_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    def make(*, kid: str | None = KID, key: rsa.RSAPrivateKey | None = None, **claims: Any) -> str:
        # Signed by hand, not by jwt.encode, which refuses some of the odd claims tested.
        header: dict[str, Any] = {"alg": "RS256", "typ": "JWT"}
        if kid is not None:
            header["kid"] = kid
        signing_input = f"{_seg(header)}.{_seg(_claims(**claims))}"
        signature = (key or rsa_key).sign(
            signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64(signature)}"

    return make


def hs256(*, secret: str = SECRET, **claims: Any) -> str:
    body = _claims(**claims)
    body.pop("aud", None)
    return jwt.encode(body, secret, algorithm="HS256")


def install(token: str, pem: str | bytes, **kwargs: Any) -> Any:
    args: dict[str, Any] = {
        "client_key": CLIENT_KEY,
        "app_base_url": APP_BASE_URL,
        "qsh": QSH,
        "now": NOW,
        "leeway": LEEWAY,
    }
    args.update(kwargs)
    return verify_install_token(token, pem, **args)


def shared(token: str, secret: str = SECRET, **kwargs: Any) -> Any:
    args: dict[str, Any] = {"client_key": CLIENT_KEY, "qsh": QSH, "now": NOW, "leeway": LEEWAY}
    args.update(kwargs)
    return verify_shared_secret_token(token, secret, **args)


def refused(code: str, call: Callable[[], object]) -> TokenError:
    assert code in REASON_CODES
    with pytest.raises(TokenError) as caught:
        call()
    assert caught.value.code == code, caught.value.detail
    return caught.value


# --- accepted tokens ---------------------------------------------------------


def test_install_token_accepted(rs256: Callable[..., str], public_pem: str) -> None:
    token = rs256()
    verified = install(token, public_pem)
    assert verified.alg == "RS256"
    assert verified.kid == KID
    assert verified.iss == CLIENT_KEY
    assert (verified.iat, verified.exp) == (NOW, NOW + 180)
    assert verified.sha256 == hashlib.sha256(token.encode()).hexdigest()


def test_install_token_accepts_pem_bytes_and_key_object(
    rs256: Callable[..., str], rsa_key: rsa.RSAPrivateKey, public_pem: str
) -> None:
    token = rs256()
    assert install(token, public_pem.encode()).iss == CLIENT_KEY
    assert install(token, rsa_key.public_key()).iss == CLIENT_KEY  # type: ignore[arg-type]


def test_shared_secret_token_accepted() -> None:
    verified = shared(hs256())
    assert (verified.alg, verified.kid, verified.iss) == ("HS256", None, CLIENT_KEY)


def test_parse_unverified_reads_header_and_claims(rs256: Callable[..., str]) -> None:
    token = rs256()
    parsed = parse_unverified(token)
    assert (parsed.alg, parsed.kid, parsed.iss, parsed.iat) == ("RS256", KID, CLIENT_KEY, NOW)
    assert parsed.sha256 == token_sha256(token) == hashlib.sha256(token.encode()).hexdigest()
    assert parsed.claims["qsh"] == QSH


def test_parse_unverified_tolerates_odd_claim_types() -> None:
    parsed = parse_unverified(_unsigned({"alg": "HS256"}, {"iss": 7, "iat": "soon"}))
    assert (parsed.iss, parsed.iat, parsed.kid) == (None, None, None)


# --- algorithms --------------------------------------------------------------


def test_alg_none_refused_everywhere(public_pem: str) -> None:
    token = jwt.encode(_claims(), None, algorithm="none")  # type: ignore[arg-type]
    assert parse_unverified(token).alg == "none"
    refused("unsupported_alg", lambda: install(token, public_pem))
    refused("unsupported_alg", lambda: shared(token))


@pytest.mark.parametrize("alg", ["None", "NONE", "", "RS512", "PS256", "ES256", "HS512"])
def test_other_algs_refused(alg: str, public_pem: str) -> None:
    token = _unsigned({"alg": alg, "kid": KID}, _claims(), b"sig")
    refused("unsupported_alg", lambda: install(token, public_pem))
    refused("unsupported_alg", lambda: shared(token))


def test_hs256_token_refused_by_install_verifier(public_pem: str) -> None:
    refused("unsupported_alg", lambda: install(hs256(), public_pem))


def test_rs256_token_refused_by_shared_secret_verifier(rs256: Callable[..., str]) -> None:
    refused("unsupported_alg", lambda: shared(rs256()))


def test_key_confusion_hs256_signed_with_public_pem(public_pem: str) -> None:
    # The classic attack: HMAC keyed with the (public) RSA PEM, header says HS256.
    header = _b64(json.dumps({"alg": "HS256", "kid": KID}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(public_pem.encode(), f"{header}.{payload}".encode(), "sha256").digest()
    token = f"{header}.{payload}.{_b64(mac)}"
    refused("unsupported_alg", lambda: install(token, public_pem))


def test_es256_token_refused(public_pem: str) -> None:
    token = jwt.encode(_claims(), ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    refused("unsupported_alg", lambda: install(token, public_pem))


# --- signatures and keys -----------------------------------------------------


def test_rs256_signed_by_another_key(
    rs256: Callable[..., str], other_rsa_key: rsa.RSAPrivateKey, public_pem: str
) -> None:
    refused("bad_signature", lambda: install(rs256(key=other_rsa_key), public_pem))


def test_rs256_verified_with_another_key(
    rs256: Callable[..., str], other_rsa_key: rsa.RSAPrivateKey
) -> None:
    refused("bad_signature", lambda: install(rs256(), _pem(other_rsa_key)))


def test_tampered_payload_refused(rs256: Callable[..., str], public_pem: str) -> None:
    header, _, signature = rs256().split(".")
    forged = f"{header}.{_b64(json.dumps(_claims(iss='attacker')).encode())}.{signature}"
    refused("bad_signature", lambda: install(forged, public_pem, client_key="attacker"))


def test_hs256_with_another_secret() -> None:
    refused("bad_signature", lambda: shared(hs256(secret=SECRET + "!")))


def test_hs256_with_empty_secret() -> None:
    refused("invalid_key", lambda: shared(hs256(), secret=""))


@pytest.mark.parametrize("pem", ["", "not a key", "-----BEGIN PUBLIC KEY-----\nAAAA\n"])
def test_invalid_pem(rs256: Callable[..., str], pem: str) -> None:
    refused("invalid_key", lambda: install(rs256(), pem))


def test_non_rsa_pem_is_invalid_key(rs256: Callable[..., str]) -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    refused("invalid_key", lambda: install(rs256(), pem))


# --- kid -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kid", ["/", "a/b", "../x", "..", ".", "%2e", "%2e%2e", "a b", "k\n", "é", "x" * 129, ""]
)
def test_invalid_kids(kid: str) -> None:
    assert not is_valid_kid(kid)


@pytest.mark.parametrize("kid", ["a", "...", "a.b", "0", "x" * 128, "KEY_1-2.3", "-"])
def test_valid_kids(kid: str) -> None:
    assert is_valid_kid(kid)
    assert KID_PATTERN.fullmatch(kid)


@pytest.mark.parametrize("value", [None, 5, ["a"]])
def test_kid_must_be_a_string(value: object) -> None:
    assert not is_valid_kid(value)


@pytest.mark.parametrize("kid", ["../x", "a/b", "..", ".", "%2e", "x" * 129])
def test_install_token_with_bad_kid(rs256: Callable[..., str], public_pem: str, kid: str) -> None:
    refused("invalid_kid", lambda: install(rs256(kid=kid), public_pem))


def test_install_token_without_kid(rs256: Callable[..., str], public_pem: str) -> None:
    refused("invalid_kid", lambda: install(rs256(kid=None), public_pem))


# --- claims ------------------------------------------------------------------


def test_iss_mismatch(rs256: Callable[..., str], public_pem: str) -> None:
    refused("iss_mismatch", lambda: install(rs256(), public_pem, client_key="someone-else"))
    refused("iss_mismatch", lambda: shared(hs256(), client_key="someone-else"))


@pytest.mark.parametrize(
    ("aud", "app_base_url"),
    [
        ([APP_BASE_URL], APP_BASE_URL),
        (APP_BASE_URL, APP_BASE_URL),
        ([APP_BASE_URL + "/"], APP_BASE_URL),
        ([APP_BASE_URL], APP_BASE_URL + "/"),
        (APP_BASE_URL + "/", APP_BASE_URL + "/"),
        (["https://other.example.com", APP_BASE_URL], APP_BASE_URL),
    ],
)
def test_aud_accepted(
    rs256: Callable[..., str], public_pem: str, aud: Any, app_base_url: str
) -> None:
    assert install(rs256(aud=aud), public_pem, app_base_url=app_base_url).iss == CLIENT_KEY


@pytest.mark.parametrize(
    "aud",
    [
        ["https://other.example.com"],
        "https://other.example.com",
        [],
        [APP_BASE_URL + "/x"],
        ["http://ledger.example.com"],
        [APP_BASE_URL.upper()],
    ],
)
def test_aud_mismatch(rs256: Callable[..., str], public_pem: str, aud: Any) -> None:
    refused("aud_mismatch", lambda: install(rs256(aud=aud), public_pem))


@pytest.mark.parametrize("aud", [7, [APP_BASE_URL, 7], {"url": APP_BASE_URL}])
def test_aud_of_wrong_type(rs256: Callable[..., str], public_pem: str, aud: Any) -> None:
    refused("invalid_claim", lambda: install(rs256(aud=aud), public_pem))


def test_hs256_needs_no_aud() -> None:
    assert "aud" not in parse_unverified(hs256()).claims
    assert shared(hs256()).iss == CLIENT_KEY


def test_qsh_of_another_path(rs256: Callable[..., str], public_pem: str) -> None:
    other = query_string_hash("POST", "/uninstalled", [("v", "1")])
    refused("qsh_mismatch", lambda: install(rs256(qsh=other), public_pem))
    refused("qsh_mismatch", lambda: shared(hs256(qsh=other)))


def test_qsh_of_another_version(rs256: Callable[..., str], public_pem: str) -> None:
    other = query_string_hash("POST", "/installed", [("v", "2")])
    refused("qsh_mismatch", lambda: install(rs256(qsh=other), public_pem))


def test_context_qsh_is_not_a_lifecycle_qsh(rs256: Callable[..., str], public_pem: str) -> None:
    refused("qsh_mismatch", lambda: install(rs256(qsh="context-qsh"), public_pem))


def test_expired(rs256: Callable[..., str], public_pem: str) -> None:
    refused("token_expired", lambda: install(rs256(exp=NOW - LEEWAY), public_pem))
    refused("token_expired", lambda: shared(hs256(exp=NOW - 3600)))


def test_expired_within_leeway_is_accepted(rs256: Callable[..., str], public_pem: str) -> None:
    assert install(rs256(exp=NOW - LEEWAY + 1), public_pem).exp == NOW - LEEWAY + 1
    assert shared(hs256(exp=NOW - LEEWAY + 1)).exp == NOW - LEEWAY + 1


def test_issued_in_the_future(rs256: Callable[..., str], public_pem: str) -> None:
    refused("token_not_yet_valid", lambda: install(rs256(iat=NOW + LEEWAY + 1), public_pem))
    refused("token_not_yet_valid", lambda: shared(hs256(iat=NOW + LEEWAY + 1)))


def test_issued_in_the_future_within_leeway(rs256: Callable[..., str], public_pem: str) -> None:
    assert install(rs256(iat=NOW + LEEWAY), public_pem).iat == NOW + LEEWAY
    assert shared(hs256(iat=NOW + LEEWAY)).iat == NOW + LEEWAY


def test_leeway_zero_is_strict(rs256: Callable[..., str], public_pem: str) -> None:
    refused("token_not_yet_valid", lambda: install(rs256(iat=NOW + 1), public_pem, leeway=0))
    refused("token_expired", lambda: install(rs256(exp=NOW), public_pem, leeway=0))


def test_nbf_in_the_future(rs256: Callable[..., str], public_pem: str) -> None:
    refused("token_not_yet_valid", lambda: install(rs256(nbf=NOW + LEEWAY + 1), public_pem))
    assert install(rs256(nbf=NOW), public_pem).iss == CLIENT_KEY


@pytest.mark.parametrize("claim", ["iss", "qsh", "exp", "iat", "aud"])
def test_missing_claim_install(rs256: Callable[..., str], public_pem: str, claim: str) -> None:
    refused("missing_claim", lambda: install(rs256(**{claim: _DROP}), public_pem))


@pytest.mark.parametrize("claim", ["iss", "qsh", "exp", "iat"])
def test_missing_claim_shared(claim: str) -> None:
    refused("missing_claim", lambda: shared(hs256(**{claim: _DROP})))


@pytest.mark.parametrize(
    ("claim", "value"),
    [("exp", "tomorrow"), ("exp", True), ("iat", [NOW]), ("iss", 42), ("qsh", {"h": 1})],
)
def test_claim_of_wrong_type(
    rs256: Callable[..., str], public_pem: str, claim: str, value: Any
) -> None:
    refused("invalid_claim", lambda: install(rs256(**{claim: value}), public_pem))


def test_non_ascii_iss_compared_safely(rs256: Callable[..., str], public_pem: str) -> None:
    refused("iss_mismatch", lambda: install(rs256(iss="ключ"), public_pem))
    assert install(rs256(iss="ключ"), public_pem, client_key="ключ").iss == "ключ"


# --- malformed ---------------------------------------------------------------


_HS_HEADER = _seg({"alg": "HS256"})
_NAN_CLAIMS = _b64(b'{"exp": NaN}')
_NOT_UTF8 = _b64(b"\xff\xfe")


MALFORMED = {
    "empty": "",
    "one segment": "abc",
    "two segments": "abc.def",
    "four segments": "a.b.c.d",
    "not base64": "!!!.???.***",
    "header not json": f"{_b64(b'{nope')}.{_seg({})}.",
    "header is a list": f"{_seg(['alg'])}.{_seg({})}.",
    "payload is a list": f"{_seg({'alg': 'HS256'})}.{_seg([1, 2])}.",
    "payload is a string": f"{_seg({'alg': 'HS256'})}.{_seg('claims')}.",
    "no alg": f"{_seg({'typ': 'JWT'})}.{_seg({})}.",
    "alg not a string": f"{_seg({'alg': 256})}.{_seg({})}.",
    "kid not a string": f"{_seg({'alg': 'RS256', 'kid': 1})}.{_seg({})}.",
    "padded base64": f"{_seg({'alg': 'HS256'})}.{_seg({'a': 1})}==.",
    "NaN in claims": f"{_HS_HEADER}.{_NAN_CLAIMS}.",
    "not utf-8": f"{_HS_HEADER}.{_NOT_UTF8}.",
    "non-ascii": "é.é.é",
    "too long": f"{_seg({'alg': 'HS256'})}.{'A' * 20000}.",
    "whitespace": f" {_seg({'alg': 'HS256'})}.{_seg({})}.",
}


@pytest.mark.parametrize("token", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed(token: str, public_pem: str) -> None:
    refused("malformed_token", lambda: parse_unverified(token))
    refused("malformed_token", lambda: install(token, public_pem))
    refused("malformed_token", lambda: shared(token))


def test_non_canonical_base64_signature_refused(rs256: Callable[..., str]) -> None:
    # A second spelling of the same signature would dodge replay detection by SHA-256.
    token = rs256()
    head, _, signature = token.rpartition(".")
    raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    assert len(raw) % 3 != 0  # 256 bytes: the last base64 character carries spare bits
    last = signature[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last) ^ 1]
    refused("malformed_token", lambda: parse_unverified(f"{head}.{signature[:-1]}{sibling}"))


def test_non_string_token_is_malformed(public_pem: str) -> None:
    refused("malformed_token", lambda: install(None, public_pem))  # type: ignore[arg-type]


# --- no secrets in errors ----------------------------------------------------


def test_errors_never_echo_token_or_secret(
    rs256: Callable[..., str], other_rsa_key: rsa.RSAPrivateKey, public_pem: str
) -> None:
    cases: list[tuple[str, Callable[[], object]]] = [
        (token := hs256(secret=SECRET + "x"), lambda: shared(token)),
        (t2 := rs256(key=other_rsa_key), lambda: install(t2, public_pem)),
        (t3 := rs256(iss="someone"), lambda: install(t3, public_pem)),
        (t4 := hs256(exp=1), lambda: shared(t4)),
    ]
    for tok, call in cases:
        with pytest.raises(TokenError) as caught:
            call()
        text = f"{caught.value} {caught.value.detail!r} {caught.value.args!r}"
        for fragment in [tok, *tok.split("."), SECRET, "someone"]:
            assert fragment not in text


# --- query string hash -------------------------------------------------------


def test_canonical_request_examples() -> None:
    assert canonical_request("post", "/installed", [("v", "1")]) == "POST&/installed&v=1"
    assert canonical_request("GET", "", []) == "GET&/&"
    assert canonical_request("GET", "/a/", [("jwt", "x")]) == "GET&/a&"
    assert canonical_request("GET", "/a&b", [("b", "2"), ("a", "1")]) == "GET&/a%26b&a=1&b=2"
    assert canonical_query([("q", "a b*~")]) == "q=a%20b%2A~"
    assert canonical_query([("n", "b"), ("n", "a,c")]) == "n=a%2Cc,b"


def test_canonical_path() -> None:
    assert canonical_path("") == "/"
    assert canonical_path("/") == "/"
    assert canonical_path("x") == "/x"
    assert canonical_path("/x/") == "/x"


@pytest.mark.parametrize(
    ("path", "base", "expected"),
    [
        ("/installed", "https://app.example.com", "/installed"),
        ("/installed", "https://app.example.com/", "/installed"),
        ("/app/installed", "https://app.example.com/app", "/installed"),
        ("/app/installed", "https://app.example.com/app/", "/installed"),
        ("/app", "https://app.example.com/app", "/"),
        ("/application/installed", "https://app.example.com/app", "/application/installed"),
        ("", "https://app.example.com", "/"),
    ],
)
def test_relative_path(path: str, base: str, expected: str) -> None:
    assert relative_path(path, base) == expected


def test_qsh_is_sha256_of_canonical_request() -> None:
    expected = hashlib.sha256(b"POST&/installed&v=1").hexdigest()
    assert query_string_hash("POST", "/installed", [("v", "1")]) == expected


names = st.text(min_size=1, max_size=8).filter(lambda name: name != "jwt")
params_strategy = st.lists(st.tuples(names, st.text(max_size=8)), max_size=8)


@given(params=params_strategy, seed=st.integers())
def test_canonical_query_ignores_parameter_order(params: list[tuple[str, str]], seed: int) -> None:
    shuffled = list(params)
    random.Random(seed).shuffle(shuffled)
    assert canonical_query(shuffled) == canonical_query(params)


@given(params=params_strategy, jwt_value=st.text())
def test_jwt_parameter_is_ignored(params: list[tuple[str, str]], jwt_value: str) -> None:
    assert canonical_query([*params, ("jwt", jwt_value)]) == canonical_query(params)


@given(params=params_strategy.filter(bool), data=st.data())
def test_qsh_changes_when_a_value_changes(
    params: list[tuple[str, str]], data: st.DataObject
) -> None:
    index = data.draw(st.integers(0, len(params) - 1))
    name, value = params[index]
    new_value = data.draw(st.text(max_size=8).filter(lambda v: v != value))
    changed = [*params[:index], (name, new_value), *params[index + 1 :]]
    assert query_string_hash("POST", "/installed", changed) != query_string_hash(
        "POST", "/installed", params
    )


@given(params=params_strategy)
def test_canonical_query_decodes_back(params: list[tuple[str, str]]) -> None:
    # Only unreserved characters and %XX survive, and the encoding is reversible:
    # two different parameter sets can never share a qsh by construction.
    text = canonical_query(params)
    assert re.fullmatch(r"[A-Za-z0-9\-._~%=&,]*", text)
    decoded: dict[str, list[str]] = {}
    for pair in text.split("&") if text else []:
        name, _, values = pair.partition("=")
        decoded[unquote(name)] = sorted(unquote(value) for value in values.split(","))
    expected: dict[str, list[str]] = {}
    for name, value in params:
        expected.setdefault(name, []).append(value)
    assert decoded == {name: sorted(values) for name, values in expected.items()}


@given(kid=st.text(max_size=140))
@settings(max_examples=300)
def test_valid_kid_is_a_plain_path_segment(kid: str) -> None:
    if is_valid_kid(kid):
        assert quote(kid, safe="") == kid
        assert kid not in {".", ".."}
        assert 1 <= len(kid) <= 128


@given(kid=st.from_regex(r"[A-Za-z0-9._-]{1,128}", fullmatch=True))
def test_pattern_kids_are_valid_unless_dot_segments(kid: str) -> None:
    assert is_valid_kid(kid) == (kid not in {".", ".."})


# --- tokens as the simulated host signs them ---------------------------------


@pytest.fixture(scope="module")
def site(rsa_key: rsa.RSAPrivateKey) -> SimulatedHost:
    return SimulatedHost(kid=KID, private_key=rsa_key)


def _verify_call(call: LifecycleCall, pem: str, app_base_url: str, now: int) -> Any:
    _, _, token = call.headers["Authorization"].partition("JWT ")
    assert token == call.token
    qsh = query_string_hash(call.method, relative_path(call.path, app_base_url), call.query)
    client_key = json.loads(call.body)["clientKey"]
    if parse_unverified(token).alg == "RS256":
        return verify_install_token(
            token, pem, client_key=client_key, app_base_url=app_base_url, qsh=qsh, now=now, leeway=0
        )
    secret = json.loads(call.body)["sharedSecret"]
    return verify_shared_secret_token(
        token, secret, client_key=client_key, qsh=qsh, now=now, leeway=0
    )


def test_hostsim_signed_install_verifies(site: SimulatedHost, public_pem: str) -> None:
    payload = make_install_payload(base_url="https://acme.atlassian.net")
    call = site.lifecycle_call("installed", payload, app_base_url=APP_BASE_URL, iat=NOW)
    assert (call.method, call.path, call.query) == ("POST", "/installed", [("v", "1")])
    assert call.url_path_with_query == "/installed?v=1"
    assert call.headers["Content-Type"] == "application/json"
    assert json.loads(call.body) == payload
    verified = _verify_call(call, public_pem, APP_BASE_URL, NOW)
    assert (verified.alg, verified.kid, verified.iss) == ("RS256", KID, payload["clientKey"])
    assert verified.exp == NOW + 180


def test_hostsim_hs256_call_verifies(site: SimulatedHost, public_pem: str) -> None:
    payload = make_install_payload(eventType="enabled")
    call = site.lifecycle_call(
        "enabled", payload, app_base_url=APP_BASE_URL, alg="HS256", descriptor_version="7", iat=NOW
    )
    assert "aud" not in parse_unverified(call.token).claims
    assert call.url_path_with_query == "/enabled?v=7"
    assert _verify_call(call, public_pem, APP_BASE_URL, NOW).alg == "HS256"


def test_hostsim_app_base_path(site: SimulatedHost, public_pem: str) -> None:
    base = "https://apps.example.com/ledger/"
    call = site.lifecycle_call(
        "uninstalled", make_install_payload(), app_base_url=base, descriptor_version=None, iat=NOW
    )
    assert (call.path, call.query, call.url_path_with_query) == (
        "/ledger/uninstalled",
        [],
        "/ledger/uninstalled",
    )
    assert _verify_call(call, public_pem, base, NOW).iat == NOW


def test_hostsim_overrides(site: SimulatedHost, public_pem: str) -> None:
    call = site.lifecycle_call(
        "installed",
        make_install_payload(),
        app_base_url=APP_BASE_URL,
        iat=NOW,
        claims_override={"exp": None, "aud": "https://elsewhere.example.com"},
        headers_override={"Content-Type": "text/plain", "X-Extra": "1"},
    )
    claims = parse_unverified(call.token).claims
    assert "exp" not in claims
    assert claims["aud"] == "https://elsewhere.example.com"
    assert call.headers["Content-Type"] == "text/plain"
    assert call.headers["X-Extra"] == "1"
    refused("missing_claim", lambda: _verify_call(call, public_pem, APP_BASE_URL, NOW))


def test_hostsim_calls_in_the_same_second_differ(site: SimulatedHost) -> None:
    payload = make_install_payload()
    first = site.lifecycle_call("installed", payload, app_base_url=APP_BASE_URL, iat=NOW)
    second = site.lifecycle_call("installed", payload, app_base_url=APP_BASE_URL, iat=NOW)
    assert token_sha256(first.token) != token_sha256(second.token)


def test_hostsim_alg_none_and_hs256_without_secret(site: SimulatedHost, public_pem: str) -> None:
    call = site.lifecycle_call(
        "installed", make_install_payload(), app_base_url=APP_BASE_URL, alg="none"
    )
    refused("unsupported_alg", lambda: _verify_call(call, public_pem, APP_BASE_URL, NOW))
    payload = make_install_payload()
    del payload["sharedSecret"]
    with pytest.raises(ValueError):
        site.lifecycle_call("enabled", payload, app_base_url=APP_BASE_URL, alg="HS256")


def test_make_install_payload() -> None:
    one, two = make_install_payload(), make_install_payload(productType="confluence", extra=1)
    assert one["clientKey"] != two["clientKey"]
    assert one["sharedSecret"] != two["sharedSecret"]
    assert one["key"] == "tenant-ledger"
    assert one["baseUrl"].startswith("https://") and one["baseUrl"].endswith(".atlassian.net")
    assert (two["productType"], two["extra"]) == ("confluence", 1)
    fixed = make_install_payload("ck", "https://x.atlassian.net", "s" * 40, key="other")
    assert (fixed["clientKey"], fixed["baseUrl"], fixed["sharedSecret"], fixed["key"]) == (
        "ck",
        "https://x.atlassian.net",
        "s" * 40,
        "other",
    )
