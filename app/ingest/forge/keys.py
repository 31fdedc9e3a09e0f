"""Forge's signing keys, from one or more JWKS documents (SPEC §10 rule 3).

The ``kid`` of a token is only a key into the documents' keys: it never reaches a
URL. Each document is fetched over HTTP with a short timeout, a size limit and no
redirects, then kept:

* for 10 minutes (``FRESH_SECONDS``); the next call after that refreshes it, and a
  refresh that fails keeps the keys already known;
* a ``kid`` found in no document makes each document be fetched again, but at most
  once a minute per document (``UNKNOWN_KID_SECONDS``), so a flood of made-up kids
  costs a bounded number of fetches;
* a fetch that failed may be tried again after 5 seconds (``RETRY_SECONDS``).

Fetches are single-flight per document: callers arriving meanwhile wait for the one
fetch in progress. When a ``kid`` is found nowhere, the answer depends on whether
every document answered: then the kid is unknown (401); else some document could not
be read and the caller should retry (503).
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

import httpx
import msgspec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from app.ingest.key_fetch import KeyServerUnavailable, read_capped
from app.metrics import UNRECORDED, KeyMetrics

__all__ = ["JwksFetcher", "JwksUnavailable", "UnknownKid", "parse_jwks"]

FRESH_SECONDS: Final = 600.0
UNKNOWN_KID_SECONDS: Final = 60.0
RETRY_SECONDS: Final = 5.0
MAX_DOCUMENT_BYTES: Final = 256 * 1024
MAX_KEYS: Final = 100


class UnknownKid(Exception):
    """No document holds the kid, and every document answered. → 401."""


class JwksUnavailable(Exception):
    """No reachable document holds the kid, and some document could not be read. → 503."""


class _DocumentDown(Exception):
    pass


@dataclass(slots=True)
class _Document:
    url: str
    keys: dict[str, RSAPublicKey] = field(default_factory=dict)
    loaded_at: float | None = None  # last successful fetch
    attempted_at: float | None = None  # last fetch, whatever its end
    down: bool = False  # the last fetch could not read the document
    inflight: asyncio.Task[None] | None = None


def _b64_int(text: str) -> int:
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return int.from_bytes(raw, "big")


def parse_jwks(body: bytes) -> dict[str, RSAPublicKey]:
    """RSA signing keys by kid. Keys of other types or uses are skipped; a document
    that is not a JWKS raises ValueError."""
    document = msgspec.json.decode(body)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list):
        raise ValueError("not a JWKS document")
    found: dict[str, RSAPublicKey] = {}
    for jwk in keys[:MAX_KEYS]:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        kid, n, e = jwk.get("kid"), jwk.get("n"), jwk.get("e")
        if jwk.get("use", "sig") != "sig" or jwk.get("alg", "RS256") != "RS256":
            continue
        if not (isinstance(kid, str) and isinstance(n, str) and isinstance(e, str)):
            continue
        try:
            found[kid] = RSAPublicNumbers(_b64_int(e), _b64_int(n)).public_key()
        except (ValueError, TypeError):
            continue  # one bad key does not spoil the document
    return found


class JwksFetcher:
    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout: float = 2.0,
        client: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
        metrics: KeyMetrics = UNRECORDED,
    ) -> None:
        self._documents = [_Document(url) for url in urls]
        self._timeout = timeout
        self._owns_client = client is None
        # No redirects: a Location header would let whoever answers point us anywhere.
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._clock = clock
        self.fetches = 0  # HTTP requests made, for tests and metrics
        self._metrics = metrics

    async def key(self, kid: str) -> RSAPublicKey:
        now = self._clock()
        waited = await self._fetch_where(lambda d: self._stale(d, now))
        found = self._lookup(kid)
        if found is None:
            waited = await self._fetch_where(lambda d: self._may_look_again(d, now)) or waited
            found = self._lookup(kid)
        if waited:  # a miss waited for a fetch; a hit answered from the documents held
            self._metrics.miss()
        else:
            self._metrics.hit()
        if found is not None:
            return found
        if any(d.down for d in self._documents):
            raise JwksUnavailable("a JWKS document could not be read")
        raise UnknownKid("no JWKS document holds this kid")

    def _lookup(self, kid: str) -> RSAPublicKey | None:
        for document in self._documents:
            key = document.keys.get(kid)
            if key is not None:
                return key
        return None

    def _retry_allowed(self, document: _Document, now: float) -> bool:
        at = document.attempted_at
        return at is None or not document.down or now - at >= RETRY_SECONDS

    def _stale(self, document: _Document, now: float) -> bool:
        loaded = document.loaded_at
        due = loaded is None or now - loaded >= FRESH_SECONDS
        return due and self._retry_allowed(document, now)

    def _may_look_again(self, document: _Document, now: float) -> bool:
        at = document.attempted_at
        if document.down:
            return self._retry_allowed(document, now)
        return at is None or now - at >= UNKNOWN_KID_SECONDS

    async def _fetch_where(self, wanted: Callable[[_Document], bool]) -> bool:
        """Fetch the wanted documents (or join their fetches); whether it waited for any."""
        tasks = []
        for document in self._documents:
            if document.inflight is not None:
                tasks.append(document.inflight)  # single flight: wait for that one
            elif wanted(document):
                document.attempted_at = self._clock()
                task = asyncio.get_running_loop().create_task(self._refresh(document))
                document.inflight = task
                tasks.append(task)
        if tasks:
            # shield: a caller that goes away must not cancel a fetch others wait on.
            await asyncio.shield(asyncio.gather(*tasks, return_exceptions=True))
        return bool(tasks)

    async def _refresh(self, document: _Document) -> None:
        try:
            keys = await self._download(document.url)
        except _DocumentDown:
            self._metrics.fetched("error")
            document.down = True  # keeps the keys it had
        else:
            self._metrics.fetched("ok" if keys is not None else "refused")
            if keys is not None:  # a 4xx keeps the keys it had, like any failed refresh
                document.keys = keys
            document.loaded_at = self._clock()
            document.down = False
        finally:
            document.inflight = None

    async def _download(self, url: str) -> dict[str, RSAPublicKey] | None:
        """The document's keys; None when it answered 4xx; _DocumentDown when unreadable."""
        self.fetches += 1
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("GET", url, timeout=self._timeout) as response,
            ):
                status = response.status_code
                if status >= 500 or 300 <= status < 400:
                    raise _DocumentDown  # a redirect is not followed: misconfigured or moved
                if status != 200:
                    return None  # it answered, and holds nothing for us
                body = await read_capped(response, MAX_DOCUMENT_BYTES)
        except (TimeoutError, httpx.HTTPError, httpx.InvalidURL, OSError, KeyServerUnavailable):
            raise _DocumentDown from None
        try:
            return parse_jwks(body)
        except (ValueError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            raise _DocumentDown from None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()
