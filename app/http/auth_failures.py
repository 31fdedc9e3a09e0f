"""Failed authentication (SPEC §12), one rule for every credential: the admin API's
bearer token, the console login, and the service API's tokens.

A route that refused a credential calls ``refuse(request, credential, its_401)`` (a JSON
API) or ``auth_failed(request, credential)`` (a page that answers itself) once. The
failure is logged (a warning: remote address, path, which credential, never the value
presented), counted in ``/metrics`` (``ledger_auth_failures_total{credential=…}``) and
counted against the remote address: beyond ``LEDGER_AUTH_FAILURES_PER_MINUTE`` failures
in a minute, the route answers 429 with ``Retry-After`` instead of 401 until the minute
is over. A correct credential is never slowed.

Memory stays bounded under a flood of addresses: at most ``MAX_ADDRESSES`` are
remembered, the least recently failing forgotten first. The counts are per process
(``ledger serve --workers N`` lets an address fail N times as often).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn

from fastapi import HTTPException, Request

log = logging.getLogger("ledger.auth")

MAX_ADDRESSES: Final = 10_000
WINDOW_SECONDS: Final = 60.0


@dataclass(slots=True)
class _Window:
    started: float
    failures: int


class FailureLimiter:
    """Failures per address in fixed windows; pure bookkeeping, the clock injected."""

    def __init__(
        self,
        limit: int,
        window_seconds: float = WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limit, self._window, self._max = limit, window_seconds, max_addresses
        self._clock = clock
        self._seen: OrderedDict[str, _Window] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, address: str) -> int | None:
        """Count a failure of ``address``: the seconds it must wait when it is over the
        limit, else None."""
        now = self._clock()
        with self._lock:
            window = self._seen.pop(address, None)
            if window is None or now - window.started >= self._window:
                window = _Window(now, 0)
            window.failures += 1
            self._seen[address] = window
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        if window.failures <= self._limit:
            return None
        return max(1, math.ceil(window.started + self._window - now))

    def __len__(self) -> int:
        return len(self._seen)


class AuthFailures:
    """What a service process keeps about failed authentication (on ``app.state``)."""

    def __init__(self, limiter: FailureLimiter, count: Callable[[str], None]) -> None:
        self.limiter = limiter
        self._count = count

    def failed(self, remote_addr: str, path: str, credential: str) -> int | None:
        self._count(credential)
        wait = self.limiter.record(remote_addr)
        log.warning(
            f"failed authentication: {credential}",
            extra={
                "remote_addr": remote_addr,
                "path": path,
                "credential": credential,
                "status": 401 if wait is None else 429,
            },
        )
        return wait


def auth_failed(request: Request, credential: str) -> int | None:
    """Record that ``request`` presented a wrong or no ``credential`` (``admin_token``,
    ``console_login``, ``service_token``): the seconds the caller must wait when it has
    failed too often (answer 429, see ``too_many``), else None (answer 401)."""
    failures: AuthFailures = request.app.state.auth_failures
    address = request.client.host if request.client else "unknown"
    return failures.failed(address, request.url.path, credential)


def refuse(request: Request, credential: str, refusal: HTTPException) -> NoReturn:
    """A JSON API's one call on a wrong credential: recorded (``auth_failed``), then
    ``refusal`` (its 401) raised, or 429 with ``Retry-After`` beyond the limit."""
    wait = auth_failed(request, credential)
    raise refusal if wait is None else too_many(wait)


def too_many(wait: int) -> HTTPException:
    return HTTPException(
        status_code=429,
        detail={
            "error": "too_many_failures",
            "detail": f"too many failed authentications from this address; retry in {wait} s",
        },
        headers={"Retry-After": str(wait)},
    )
