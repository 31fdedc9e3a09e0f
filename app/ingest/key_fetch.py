"""What fetching verification keys shares, for Connect's install keys and Forge's JWKS:
the errors, an answer read with a size cap, and the bounds under a flood of made-up
kids (issue 8 §5; pure: the clock is passed in).

- ``UnknownKids``: kids the key server answered 404 for, remembered for a while
  (an LRU of bounded size), so a repeated bogus kid costs no request.
- ``FetchBudget``: a token bucket for requests to the key server. A kid never seen is
  fetched only with a token; a flood of distinct bogus kids therefore costs at most
  ``burst + rate * seconds`` requests, whatever its size.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import ClassVar, Final

import httpx

Clock = Callable[[], float]

UNKNOWN_KID_TTL_SECONDS: Final = 300.0
UNKNOWN_KID_CACHE_SIZE: Final = 10_000
MAX_FETCHES_IN_FLIGHT: Final = 8
FETCH_BURST: Final = 16
FETCH_RATE_PER_SECOND: Final = 1.0


class UnknownKids:
    def __init__(
        self,
        clock: Clock,
        ttl: float = UNKNOWN_KID_TTL_SECONDS,
        max_size: int = UNKNOWN_KID_CACHE_SIZE,
    ) -> None:
        self._clock = clock
        self._ttl = ttl
        self._max_size = max_size
        self._expiry: OrderedDict[str, float] = OrderedDict()

    def add(self, kid: str) -> None:
        self._expiry[kid] = self._clock() + self._ttl
        self._expiry.move_to_end(kid)
        while len(self._expiry) > self._max_size:
            self._expiry.popitem(last=False)  # the least recently refused goes first

    def __contains__(self, kid: object) -> bool:
        if not isinstance(kid, str):
            return False
        expiry = self._expiry.get(kid)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._expiry[kid]  # it may have been published since
            return False
        self._expiry.move_to_end(kid)
        return True

    def __len__(self) -> int:
        return len(self._expiry)


class FetchBudget:
    def __init__(
        self, clock: Clock, burst: int = FETCH_BURST, rate: float = FETCH_RATE_PER_SECOND
    ) -> None:
        self._clock = clock
        self._burst = float(burst)
        self._rate = rate
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """Spend one request if the budget allows it now."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class InstallKeyError(Exception):
    """A key (Connect install key or Forge JWKS) could not be had; ``code`` names why."""

    code: ClassVar[str] = "install_key_error"
    # Words for the answer and the rejection log: never the kid (attacker-chosen).
    public_detail: ClassVar[str] = "the install key could not be had"



class KeyServerUnavailable(InstallKeyError):
    """Unreachable, timed out, non-200 or not a key: the host should retry. → 503."""

    code = "key_server_unavailable"
    public_detail = "the install key server cannot be reached; retry later"



async def read_capped(response: httpx.Response, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise KeyServerUnavailable(f"the key server's answer exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

