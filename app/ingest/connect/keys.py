"""Fetching Atlassian's signed-install public keys by kid (SPEC §4 step 3).

Keys are immutable per kid, so a fetched key is cached for the life of the process.
Failures are never cached: a key server outage must heal by itself, and an unknown
kid may be published later.

Single-flight: when a new kid appears, every install call carrying it arrives at
once (Atlassian fans out); exactly one request per kid reaches the key server.

Bounded under a flood of made-up kids (``app.ingest.connect.keys``): a 404 is remembered for
5 minutes (LRU of 10,000 kids), at most 8 distinct kids are fetched at once, and
kids never seen spend a token of a bucket (16, refilled at 1 per second). Beyond
either bound the call gets ``KeyServerBusy`` (503 ``key_server_busy``, the host
retries), so a flood never exhausts the HTTP client a real new kid needs.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import httpx
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.ingest.connect.tokens import is_valid_kid
from app.ingest.jwt import TokenError, load_rsa_public_key
from app.ingest.key_fetch import (
    MAX_FETCHES_IN_FLIGHT,
    Clock,
    FetchBudget,
    InstallKeyError,
    KeyServerUnavailable,
    UnknownKids,
    read_capped,
)
from app.metrics import UNRECORDED, KeyMetrics

__all__ = [
    "InstallKey",
    "InstallKeyError",
    "InstallKeyFetcher",
    "InvalidKid",
    "KeyServerBusy",
    "KeyServerUnavailable",
    "UnknownKid",
    "read_capped",
]

# A PEM RSA-4096 public key is under 1 KiB; anything far bigger is not a key.
MAX_KEY_BYTES: Final = 16 * 1024


class InvalidKid(InstallKeyError):
    """The kid is not safe to put in a URL; no request was made. → 401."""

    code = "invalid_kid"
    public_detail = "the token's kid is not allowed"


class UnknownKid(InstallKeyError):
    """The key server answered 404 for this kid (now or in the last minutes). → 401."""

    code = "unknown_kid"
    public_detail = "the key server does not know this kid"


class KeyServerBusy(KeyServerUnavailable):
    """Too many distinct kids fetched at once or lately; no request made. → 503."""

    code = "key_server_busy"
    public_detail = "too many install keys are being fetched; retry later"


@dataclass(frozen=True, slots=True)
class InstallKey:
    kid: str
    pem: str
    public_key: RSAPublicKey


class InstallKeyFetcher:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 2.0,
        client: httpx.AsyncClient | None = None,
        clock: Clock = time.monotonic,
        max_in_flight: int = MAX_FETCHES_IN_FLIGHT,
        budget: FetchBudget | None = None,
        metrics: KeyMetrics = UNRECORDED,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout
        self._owns_client = client is None
        # No redirects: the configured key server answers itself, and following a
        # Location header would let whoever controls it point us anywhere.
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=False)
        self._cache: dict[str, InstallKey] = {}
        self._inflight: dict[str, asyncio.Task[InstallKey]] = {}
        self._unknown = UnknownKids(clock)
        self._max_in_flight = max_in_flight
        self._budget = budget or FetchBudget(clock)
        self._metrics = metrics

    async def get(self, kid: str) -> str:
        """The PEM text of the install key named ``kid``."""
        return (await self.get_key(kid)).pem

    async def get_public_key(self, kid: str) -> RSAPublicKey:
        """The loaded key, to spare the verifier a PEM parse per call."""
        return (await self.get_key(kid)).public_key

    async def get_key(self, kid: str) -> InstallKey:
        if not is_valid_kid(kid):
            # The kid is attacker-chosen: keep it out of the message (and the logs).
            raise InvalidKid("the token's kid is not a valid key id")
        cached = self._cache.get(kid)
        if cached is not None:
            self._metrics.hit()
            return cached
        if kid in self._unknown:
            self._metrics.hit()  # answered from memory too: no request
            raise UnknownKid("the key server answered 404 for this kid a moment ago")
        self._metrics.miss()
        task = self._inflight.get(kid)
        if task is None:
            # Joining a fetch in flight is free; a new one must fit both bounds.
            if len(self._inflight) >= self._max_in_flight or not self._budget.take():
                raise KeyServerBusy("too many distinct kids are being fetched")
            task = asyncio.get_running_loop().create_task(self._fetch(kid))
            self._inflight[kid] = task
            task.add_done_callback(lambda done: self._settle(kid, done))
        # shield: one caller giving up (client disconnect) must not cancel the
        # fetch the other callers are waiting on.
        return await asyncio.shield(task)

    def _settle(self, kid: str, task: asyncio.Task[InstallKey]) -> None:
        if self._inflight.get(kid) is task:
            del self._inflight[kid]
        if not task.cancelled():
            # Marks the exception retrieved even if every waiter has gone away.
            task.exception()
        self._metrics.fetched(_fetch_result(task))

    async def _fetch(self, kid: str) -> InstallKey:
        url = f"{self._base_url}/{kid}"
        try:
            # httpx's timeout is per phase (connect, each read); this one bounds
            # the whole exchange, so a server dripping bytes cannot hold us.
            async with (
                asyncio.timeout(self._timeout),
                self._client.stream("GET", url, timeout=self._timeout) as response,
            ):
                if response.status_code == 404:
                    self._unknown.add(kid)
                    raise UnknownKid(f"the key server does not know kid {kid}")
                if response.status_code != 200:
                    raise KeyServerUnavailable(
                        f"the key server answered {response.status_code} for kid {kid}"
                    )
                body = await read_capped(response, MAX_KEY_BYTES)
        except TimeoutError as exc:
            raise KeyServerUnavailable(f"the key server timed out for kid {kid}") from exc
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            raise KeyServerUnavailable(
                f"the key server could not be reached for kid {kid} ({type(exc).__name__})"
            ) from exc
        key = _load_key(kid, body)
        self._cache[kid] = key
        return key

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> InstallKeyFetcher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _fetch_result(task: asyncio.Task[InstallKey]) -> str:
    """How a fetch ended, as ``ledger_key_fetches_total`` counts it."""
    if task.cancelled():
        return "cancelled"
    error = task.exception()
    if error is None:
        return "ok"
    return "unknown" if isinstance(error, UnknownKid) else "error"


def _load_key(kid: str, body: bytes) -> InstallKey:
    try:
        pem = body.decode("ascii")
        public_key = load_rsa_public_key(pem)
    except (UnicodeDecodeError, TokenError):
        # A 200 that is not a key (captive portal, HTML error page) is an outage
        # of the key service, not a verdict on the token: the host should retry.
        raise KeyServerUnavailable(
            f"the key server's answer for kid {kid} is not a PEM RSA public key"
        ) from None
    return InstallKey(kid=kid, pem=pem, public_key=public_key)
