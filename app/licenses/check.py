"""One round of license and presence checks (SPEC §11): the imperative shell.

For each installed tenant (or the one named): read its stream, open its current secret,
sign ``GET <baseUrl>/rest/atlassian-connect/1/addons/<app key>`` as the app
(``app.licenses.sign``), ask, and let ``app.licenses.decider`` decide through the
generic shell what to record.

Bounded, so that a slow or hostile site cannot hold up the round: sites are started at
most ``rate`` a second and at most ``concurrency`` at once; each one has an overall
deadline (``site_seconds``, however slowly it trickles its answer), no redirect is
followed, and an answer larger than ``MAX_ANSWER_BYTES`` is not read. A site that cannot
be reached, times out or answers anything but 200/401/403/404 is counted ``unreachable``
and asked again next round: never recorded, never taken for a refusal.

Nothing here logs or returns a secret or a token: a failure is a reason code.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote, urlsplit

import httpx
from anyio import CapacityLimiter, to_thread

from app.ingest import shell
from app.ingest.connect.body import host_allowed
from app.ingest.connect.decider import fold as connect_fold
from app.licenses.decider import (
    DECIDER,
    REFUSING_STATUSES,
    SOURCE,
    Check,
    Observation,
    SiteAnswered,
    SiteRefusedCheck,
    license_of,
)
from app.licenses.sign import sign_site_request
from app.settings import Settings
from eventstore.clock import format_timestamp, utcnow
from eventstore.crypto import CryptoError, KeyRing, open_secret, secret_ad
from eventstore.errors import StoreError
from eventstore.events import Metadata, stream_id_for
from eventstore.store import EventStore
from projections.backends import storage_for
from projections.model import INSTALLED

__all__ = [
    "MAX_ANSWER_BYTES",
    "RESULTS",
    "Limits",
    "RoundReport",
    "addon_path",
    "run_round",
]

log = logging.getLogger("ledger.licenses")

MAX_ANSWER_BYTES: Final = 64 * 1024
PAGE: Final = 1000
STORE_THREADS: Final = 2
# What one site's check came to: recorded a change, recorded a refusal, the same as
# before, not reached (asked again next round), or not asked (no secret to sign with,
# a base URL no longer allowed, not installed any more).
RESULTS: Final = ("changed", "refused", "same", "unreachable", "skipped")


@dataclass(frozen=True, slots=True)
class Limits:
    rate: float = 5.0  # sites started per second
    concurrency: int = 8  # sites in flight at once
    site_seconds: float = 10.0  # one site's whole exchange, connect to last byte
    connect_seconds: float = 5.0


@dataclass(slots=True)
class RoundReport:
    """What a round did so far (updated as it goes: ``/readyz`` shows it live)."""

    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    sites: int = 0  # tenants found to check (grows while the round lists them)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULTS, 0))
    reasons: dict[str, int] = field(default_factory=dict)  # why unreachable or skipped

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def count(self, result: str, reason: str | None = None) -> None:
        self.counts[result] += 1
        if reason is not None:
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        end = self.finished_at or time.time()
        elapsed = max(end - self.started_at, 1e-6)
        return {
            "started_at": format_timestamp_epoch(self.started_at),
            "finished_at": format_timestamp_epoch(self.finished_at) if self.finished_at else None,
            "sites": self.sites,
            "done": self.done,
            **self.counts,
            "reasons": dict(sorted(self.reasons.items())),
            "sites_per_second": round(self.done / elapsed, 3),
        }


def format_timestamp_epoch(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def addon_path(app_key: str) -> str:
    """The license endpoint, relative to the tenant's base URL."""
    return "/rest/atlassian-connect/1/addons/" + quote(app_key, safe="")


@dataclass(frozen=True, slots=True)
class Target:
    client_key: str
    url: str
    authorization: str = field(repr=False)


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _target(store: EventStore, keyring: KeyRing, settings: Settings, client_key: str) -> Target:
    """The signed request for one tenant (blocking: reads its stream and data key)."""
    stream_id = stream_id_for(client_key)
    state = connect_fold(stream_id, store.read_stream(stream_id))
    if state.row is None or state.row.state != INSTALLED:
        raise _Skip("not_installed")
    if state.forgotten or state.secret is None:
        raise _Skip("no_shared_secret")
    wrapped = store.get_data_key(stream_id)
    if wrapped is None:
        raise _Skip("no_shared_secret")
    try:
        key = keyring.unwrap(stream_id, wrapped)
        secret = open_secret(key, state.secret, secret_ad(stream_id, state.secret_version))
    except CryptoError:
        raise _Skip("secret_unreadable") from None
    base_url = state.row.base_url.rstrip("/")
    if not _allowed(base_url, settings):
        raise _Skip("host_not_allowed")
    path = addon_path(settings.app_key)
    token = sign_site_request(
        secret, app_key=settings.app_key, method="GET", path=path, now=int(time.time())
    )
    return Target(client_key, base_url + path, f"JWT {token}")


def _allowed(base_url: str, settings: Settings) -> bool:
    """Asked only where a lifecycle call could come from today (the allowlist may have
    narrowed since the tenant installed): https, or http for a dev host."""
    parts = urlsplit(base_url)
    host = (parts.hostname or "").lower()
    if host in settings.dev_host_names:
        return parts.scheme in ("http", "https")
    return parts.scheme == "https" and host_allowed(host, settings.allowed_host_patterns)


class _Unreachable(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


async def _ask(client: httpx.AsyncClient, target: Target, limits: Limits) -> Observation:
    """What the site said, within the site's deadline; ``_Unreachable`` otherwise."""
    try:
        async with asyncio.timeout(limits.site_seconds):
            return await _exchange(client, target)
    except TimeoutError:
        raise _Unreachable("timeout") from None
    except httpx.HTTPError:
        raise _Unreachable("connection") from None


async def _exchange(client: httpx.AsyncClient, target: Target) -> Observation:
    headers = {"Authorization": target.authorization, "Accept": "application/json"}
    async with client.stream("GET", target.url, headers=headers) as response:
        if response.status_code in REFUSING_STATUSES:
            return SiteRefusedCheck(response.status_code)
        if response.status_code != 200:
            raise _Unreachable(f"status_{response.status_code // 100}xx")
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_ANSWER_BYTES:
                raise _Unreachable("answer_too_large")
    try:
        answer = json.loads(bytes(body))
    except ValueError:
        raise _Unreachable("not_json") from None
    if not isinstance(answer, dict):
        raise _Unreachable("not_json")
    return SiteAnswered(license_of(answer))


def _record(store: EventStore, client_key: str, seen: Observation, path: str) -> str:
    """Decide and append (blocking); the result's name (``RESULTS``)."""
    metadata = Metadata(
        call_id=uuid.uuid4().hex,
        received_at=format_timestamp(utcnow()),
        path=path,
        source=SOURCE,
    )
    result = shell.run_blocking(DECIDER, store, stream_id_for(client_key), Check(seen, metadata))
    if not result.appended:
        decision = result.decision
        return "skipped" if isinstance(decision, shell.Skip) and decision.code != "same" else "same"
    return "refused" if isinstance(seen, SiteRefusedCheck) else "changed"


Counted = Callable[[str, str | None], None]


async def _check_one(
    client: httpx.AsyncClient,
    context: _Context,
    client_key: str,
) -> None:
    settings = context.settings
    try:
        target = await to_thread.run_sync(
            _target, context.store, context.keyring, settings, client_key, limiter=context.db
        )
        seen = await _ask(client, target, context.limits)
        result = await to_thread.run_sync(
            _record,
            context.store,
            client_key,
            seen,
            addon_path(settings.app_key),
            limiter=context.db,
        )
        context.counted(result, None)
    except _Skip as skip:
        context.counted("skipped", skip.reason)
    except _Unreachable as unreachable:
        context.counted("unreachable", unreachable.reason)
    except (StoreError, shell.Contention) as error:
        # The store's trouble, not the site's: nothing recorded, asked again next round.
        log.warning("license check not recorded: %s", type(error).__name__)
        context.counted("unreachable", "store")
    except Exception as error:  # one site's surprise never ends the round (its type only:
        # an exception's words could quote a URL or a header)
        log.error("license check failed: %s", type(error).__name__)
        context.counted("unreachable", "error")


@dataclass(slots=True)
class _Context:
    settings: Settings
    store: EventStore
    keyring: KeyRing
    limits: Limits
    report: RoundReport
    on_result: Counted | None
    # The store is asked by at most this many threads at once, whatever the sites do.
    db: CapacityLimiter = field(default_factory=lambda: CapacityLimiter(STORE_THREADS))

    def counted(self, result: str, reason: str | None) -> None:
        self.report.count(result, reason)
        if self.on_result is not None:
            self.on_result(result, reason)


def installed_client_keys(store: EventStore) -> Iterator[str]:
    """Every installed tenant's clientKey, from the tenants read model, page by page."""
    storage = storage_for(store)
    after: str | None = None
    while True:
        page = storage.list_tenants(state=INSTALLED, after=after, limit=PAGE)
        for row in page:
            if row.forgotten_at is None:
                yield row.client_key
        if len(page) < PAGE:
            return
        after = page[-1].client_key


async def run_round(
    settings: Settings,
    store: EventStore,
    keyring: KeyRing,
    *,
    client_keys: list[str] | None = None,
    limits: Limits | None = None,
    report: RoundReport | None = None,
    on_result: Counted | None = None,
    stop: Callable[[], bool] = lambda: False,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RoundReport:
    """Check every installed tenant (or ``client_keys``) once; what it came to."""
    limits = limits or Limits(rate=settings.license_check_rate)
    report = report or RoundReport()
    context = _Context(settings, store, keyring, limits, report, on_result)
    gate = asyncio.Semaphore(limits.concurrency)
    timeout = httpx.Timeout(limits.site_seconds, connect=limits.connect_seconds)
    keys = (
        client_keys
        if client_keys is not None
        else await to_thread.run_sync(lambda: list(installed_client_keys(store)))
    )
    report.sites = len(keys)
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=False, transport=transport
    ) as client:

        async def one(client_key: str) -> None:
            try:
                await _check_one(client, context, client_key)
            finally:
                gate.release()

        tasks: list[asyncio.Task[None]] = []
        began = time.monotonic()
        for index, client_key in enumerate(keys):
            if stop():
                break
            # At most `rate` a second: the index-th site starts no sooner than index/rate.
            delay = began + index / limits.rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await gate.acquire()
            tasks.append(asyncio.create_task(one(client_key)))
        await asyncio.gather(*tasks)
    report.finished_at = time.time()
    return report
