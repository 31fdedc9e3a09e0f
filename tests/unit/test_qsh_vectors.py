"""Atlassian's own qsh and HS256 interoperability vectors (see tests/vectors/README.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from app.ingest.connect.tokens import (
    canonical_request,
    query_string_hash,
    relative_path,
    verify_shared_secret_token,
)
from app.ingest.jwt import TokenError, parse_unverified

BASE_URL = "https://example.com"
VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "vectors" / "jwt-signed-urls.json").read_text(encoding="utf-8")
)
SECRET: str = VECTORS["secret"]
CASES: list[dict[str, str]] = VECTORS["tests"]


def _request(signed_url: str) -> tuple[str, list[tuple[str, str]], str]:
    """(relative path, decoded query pairs, token) of a signed GET URL."""
    parts = urlsplit(signed_url)
    params = parse_qsl(parts.query, keep_blank_values=True)
    tokens = [value for name, value in params if name == "jwt"]
    assert len(tokens) == 1
    return relative_path(parts.path, BASE_URL), params, tokens[0]


def test_every_vector_is_loaded() -> None:
    # Guards against the parametrisation silently running over an empty list.
    assert len(CASES) >= 70


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_vector(case: dict[str, str]) -> None:
    path, params, token = _request(case["signedUrl"])

    assert canonical_request("GET", path, params) == case["canonicalUrl"]

    qsh = query_string_hash("GET", path, params)
    unverified = parse_unverified(token)
    assert unverified.claims["qsh"] == qsh
    assert unverified.alg == "HS256"
    assert unverified.iss is not None and unverified.iat is not None

    verified = verify_shared_secret_token(
        token,
        SECRET,
        client_key=unverified.iss,
        qsh=qsh,
        now=unverified.iat,
        leeway=0,
    )
    assert verified.iss == unverified.iss
    assert verified.sha256 == unverified.sha256


def test_vector_refused_with_another_secret() -> None:
    path, params, token = _request(CASES[0]["signedUrl"])
    unverified = parse_unverified(token)
    assert unverified.iss is not None and unverified.iat is not None
    with pytest.raises(TokenError) as caught:
        verify_shared_secret_token(
            token,
            SECRET + "x",
            client_key=unverified.iss,
            qsh=query_string_hash("GET", path, params),
            now=unverified.iat,
            leeway=0,
        )
    assert caught.value.code == "bad_signature"


def test_vector_refused_today() -> None:
    path, params, token = _request(CASES[0]["signedUrl"])
    unverified = parse_unverified(token)
    assert unverified.iss is not None
    with pytest.raises(TokenError) as caught:
        verify_shared_secret_token(
            token,
            SECRET,
            client_key=unverified.iss,
            qsh=query_string_hash("GET", path, params),
            now=1_700_000_000,
            leeway=30,
        )
    assert caught.value.code == "token_expired"
