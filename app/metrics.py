"""Prometheus metrics of the service, true when several worker processes serve it.

Two modes, chosen once per process (never per request):

* **several workers** (``ledger serve --workers N``, N > 1): ``app.serve`` gives the
  workers a fresh shared directory in ``PROMETHEUS_MULTIPROC_DIR`` before they start.
  prometheus-client then keeps every value in a memory-mapped file per process, and a
  scrape answered by any worker sums the files of all of them (``MultiProcessCollector``).
  A worker that stops marks itself dead (its live gauges leave the sum); one that starts
  does the same for workers that died without stopping (killed, crashed).
* **one process** (``make run``, the tests' embedded service): values live in memory and
  each app has its own registry, so two apps in one process never mix their counts.

The hot path pays one dict lookup per call and prometheus-client's own lock per value.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final, Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from app.settings import MULTIPROC_ENV
from eventstore.rejections import rejection_log_counters
from projections.health import LastError, RunnerHealth, lag_events, process_alive

__all__ = [
    "CONTENT_TYPE",
    "MULTIPROC_ENV",
    "UNRECORDED",
    "KeyMetrics",
    "Metrics",
    "WebhookMetrics",
    "multiprocess_directory",
    "new_metrics",
    "reap_dead_processes",
    "runner_process_health",
]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS: Final = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_PID_FILE: Final = re.compile(r"_(\d+)\.db$")

# `*_created` series exist in one mode only (the multiprocess collector has none):
# without them both modes answer the same series.
disable_created_metrics()


class CallOutcome(Protocol):
    """What a route knows about the call it answered (Connect's and Forge's Outcome)."""

    @property
    def status(self) -> int: ...

    @property
    def code(self) -> str: ...

    @property
    def events(self) -> int: ...

    @property
    def refused(self) -> bool: ...


class KeyMetrics(Protocol):
    """Counts of one key source: lookups served from its cache or not, and fetches."""

    def hit(self) -> None: ...

    def miss(self) -> None: ...

    def fetched(self, result: str) -> None: ...


class _Unrecorded:
    """For a key fetcher built without metrics (unit tests, tools)."""

    def hit(self) -> None:
        pass

    def miss(self) -> None:
        pass

    def fetched(self, result: str) -> None:
        pass


UNRECORDED: Final[KeyMetrics] = _Unrecorded()


class _KeySource:
    def __init__(self, lookups: Counter, fetches: Counter, source: str) -> None:
        self._hit = lookups.labels(source, "hit")
        self._miss = lookups.labels(source, "miss")
        self._fetches = fetches
        self._source = source

    def hit(self) -> None:
        self._hit.inc()

    def miss(self) -> None:
        self._miss.inc()

    def fetched(self, result: str) -> None:
        self._fetches.labels(self._source, result).inc()


class _RejectionLogSync:
    """Carries this process's rejection-log counts (kept by the stores, outside any
    metrics library) into counters, by the difference since the last carry."""

    def __init__(self, coalesced: Counter, purged: Counter) -> None:
        self._lock = threading.Lock()
        self._coalesced, self._purged = coalesced, purged
        self._seen = (0, 0)

    def __call__(self) -> None:
        with self._lock:
            now = (rejection_log_counters.coalesced, rejection_log_counters.purged)
            if now == self._seen:
                return
            self._coalesced.inc(now[0] - self._seen[0])
            self._purged.inc(now[1] - self._seen[1])
            self._seen = now


class Metrics:
    """Every metric of one service process. ``registry`` holds them in one-process
    mode; with a ``directory`` (several workers) they live in its files instead."""

    def __init__(self, registry: CollectorRegistry | None, directory: Path | None) -> None:
        r = registry
        self._directory = directory
        self._add_call_metrics(r)
        self._add_key_metrics(r)
        self._add_auth_metrics(r)
        self._runner = _RunnerMetrics(r)
        self.webhooks = WebhookMetrics(r)
        self._registry = r
        self._license_checks: LicenseCheckMetrics | None = None  # made when a checker runs here
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._scraped = registry if directory is None else _multiprocess_registry(directory)

    def _add_call_metrics(self, r: CollectorRegistry | None) -> None:
        """Lifecycle calls: counts, latency, group-commit batches, the rejection log."""
        self._calls = Counter(
            "ledger_calls",
            "Lifecycle calls by endpoint, outcome and status.",
            ("endpoint", "outcome", "status"),
            registry=r,
        )
        self._rejections = Counter(
            "ledger_rejections", "Refused lifecycle calls by reason code.", ("reason",), registry=r
        )
        self._duration = Histogram(
            "ledger_call_duration_seconds",
            "Lifecycle call latency, from the first byte of the body read to the answer.",
            ("endpoint", "outcome"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self._append_batches = Histogram(
            "ledger_append_batch_size",
            "Appends committed together in one transaction (1 until group commit).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self._sync_rejection_log = _RejectionLogSync(
            Counter(
                "ledger_rejections_coalesced",
                "Refusals folded into an identical row.",
                registry=r,
            ),
            Counter(
                "ledger_rejections_purged",
                "Rejection rows purged after the retention period.",
                registry=r,
            ),
        )

    def _add_key_metrics(self, r: CollectorRegistry | None) -> None:
        """Signing keys (install keys, Forge JWKS): lookups and fetches by source."""
        self._key_lookups = Counter(
            "ledger_key_lookups",
            "Signing-key lookups by source, served from the cache (hit) or not (miss).",
            ("source", "result"),
            registry=r,
        )
        self._key_fetches = Counter(
            "ledger_key_fetches",
            "HTTP fetches of signing keys by source and result.",
            ("source", "result"),
            registry=r,
        )

    def _add_auth_metrics(self, r: CollectorRegistry | None) -> None:
        """Failed authentications, and the tenant authority's calls by service."""
        self._auth_failures = Counter(
            "ledger_auth_failures",
            "Failed authentications by credential (admin_token, console_login, service_token).",
            ("credential",),
            registry=r,
        )
        self._service_calls = Counter(
            "ledger_service_calls",
            "Tenant authority calls (/auth/*) by service token name, endpoint and outcome.",
            ("service", "endpoint", "outcome", "status"),
            registry=r,
        )
        self._service_auth_failures = Counter(
            "ledger_service_auth_failures",
            "Calls to /auth/* refused before a service token let them in, by reason.",
            ("endpoint", "reason"),
            registry=r,
        )

    def observe_call(self, endpoint: str, outcome: CallOutcome, seconds: float) -> None:
        key = (endpoint, outcome.code, outcome.status)
        children = self._children.get(key)
        if children is None:
            children = self._children.setdefault(
                key,
                (self._calls.labels(*key), self._duration.labels(endpoint, outcome.code)),
            )
        children[0].inc()
        children[1].observe(seconds)
        if outcome.refused:
            self._rejections.labels(outcome.code).inc()
            self._sync_rejection_log()  # a refusal is what coalesces or purges rows

    def observe_auth_failure(self, credential: str) -> None:
        self._auth_failures.labels(credential).inc()

    def observe_service_call(
        self, service: str, endpoint: str, outcome: str, status: int, seconds: float
    ) -> None:
        """One tenant authority call let in by the service token named ``service``."""
        self._service_calls.labels(service, endpoint, outcome, str(status)).inc()
        self._duration.labels(endpoint, outcome).observe(seconds)

    def service_auth_failed(self, endpoint: str, reason: str) -> None:
        self._service_auth_failures.labels(endpoint, reason).inc()

    def observe_append_batch(self, appends: int) -> None:
        self._append_batches.observe(appends)

    def key_source(self, source: str) -> KeyMetrics:
        """The counters a key fetcher increments (``install_keys``, ``forge_jwks``)."""
        return _KeySource(self._key_lookups, self._key_fetches, source)

    def runner_health(self) -> RunnerHealth:
        """A runner health record that also sets the projection metrics."""
        return _MeteredHealth(self._runner)

    def license_checks(self) -> LicenseCheckMetrics:
        """The license checks' metrics (SPEC §11), for a checker run in this process (made
        then only: a worker of `ledger serve` runs none and writes no file for them)."""
        if self._license_checks is None:
            self._license_checks = LicenseCheckMetrics(self._registry)
        return self._license_checks

    def render(self) -> bytes:
        self._sync_rejection_log()
        assert self._scraped is not None
        return generate_latest(self._scraped)

    def process_exiting(self) -> None:
        """This worker's live gauges leave the sum (counters stay: they were counted)."""
        if self._directory is not None:
            mark_process_dead(os.getpid(), str(self._directory))


class _RunnerMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        # Every runner (leader or standby: the runner process of `ledger serve`, or a
        # thread of the one process) observes the shared checkpoints; the most recent
        # observation of a live process is the truest one.
        self.lag = Gauge(
            "ledger_projection_lag_events",
            "Events in the log not yet folded, by projection.",
            ("projection",),
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.failures = Counter(
            "ledger_projection_failures",
            "Projection runner failures (each one retried).",
            registry=registry,
        )
        self.stalled = Gauge(
            "ledger_projection_stalled",
            "1 while a projection is stopped at an event its fold fails on (SPEC §6; the"
            " event and the error are in /readyz), else 0.",
            ("projection",),
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.leader = Gauge(
            "ledger_projection_runner_leader",
            "Processes whose projection runner leads (1 across all instances on one database;"
            " per serve: 1 if its runner process leads, else 0).",
            multiprocess_mode="livesum",
            registry=registry,
        )


class _MeteredHealth(RunnerHealth):
    """The runner's own health record, also written to the metrics as it changes (a
    scrape may reach a worker whose runner is not the one that folds)."""

    def __init__(self, metrics: _RunnerMetrics) -> None:
        super().__init__()
        self._metrics = metrics
        self._lags: dict[str, Gauge] = {}

    def set_role(self, role: str) -> None:
        super().set_role(role)
        self._metrics.leader.set(1 if role == "leader" else 0)

    def observed(
        self,
        head: int,
        checkpoints: Mapping[str, int],
        stalled: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        super().observed(head, checkpoints, stalled)
        for name, checkpoint in checkpoints.items():
            gauge = self._lags.get(name) or self._lags.setdefault(
                name, self._metrics.lag.labels(name)
            )
            gauge.set(lag_events(head, checkpoint))
            self._metrics.stalled.labels(name).set(1 if stalled and name in stalled else 0)

    def stalled(self, error: LastError) -> None:
        self._metrics.failures.inc()
        super().stalled(error)

    def failed(self, error: LastError, *, store_failure: bool) -> float:
        self._metrics.failures.inc()
        return super().failed(error, store_failure=store_failure)


class WebhookMetrics:
    """Webhook deliveries (SPEC §11) by URL: labelled by its index in
    LEDGER_WEBHOOK_URLS and its host, never the URL (it may hold credentials)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ("webhook", "host")
        self._lag = Gauge(
            "ledger_webhook_lag_events",
            "Events in the log not yet delivered to the webhook URL.",
            labels,
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self._delivered = Counter(
            "ledger_webhook_deliveries",
            "Webhook messages the URL accepted (2xx within 10 s).",
            labels,
            registry=registry,
        )
        self._failed = Counter(
            "ledger_webhook_failures",
            "Webhook attempts that failed (each one retried with back-off).",
            labels,
            registry=registry,
        )

    def delivered(self, index: int, host: str) -> None:
        self._delivered.labels(str(index), host).inc()

    def failed(self, index: int, host: str) -> None:
        self._failed.labels(str(index), host).inc()

    def lag(self, index: int, host: str, events: int) -> None:
        self._lag.labels(str(index), host).set(events)


class _Round(Protocol):
    """A finished license check round (``app.licenses.check.RoundReport``)."""

    sites: int
    started_at: float
    finished_at: float | None

    @property
    def done(self) -> int: ...


class LicenseCheckMetrics:
    """The license and presence checks (SPEC §11): each site's result, each round's
    progress and rate (``app.licenses.periodic.CheckMetrics``)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.checks = Counter(
            "ledger_license_checks",
            "Sites asked by the license check, by result (changed, refused, same,"
            " unreachable: asked again next round; skipped: not asked) and reason.",
            ("result", "reason"),
            registry=registry,
        )
        self.rounds = Counter(
            "ledger_license_check_rounds", "License check rounds finished.", registry=registry
        )
        self.sites = Gauge(
            "ledger_license_check_round_sites",
            "Sites in the last license check round.",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.done = Gauge(
            "ledger_license_check_round_done",
            "Sites of the running (or last) license check round done so far.",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.rate = Gauge(
            "ledger_license_check_sites_per_second",
            "Sites checked per second in the last license check round.",
            multiprocess_mode="livemostrecent",
            registry=registry,
        )

    def started(self) -> None:
        self.done.set(0)

    def result(self, result: str, reason: str | None) -> None:
        self.checks.labels(result, reason or "").inc()
        self.done.inc()

    def round(self, report: _Round) -> None:
        self.rounds.inc()
        self.sites.set(report.sites)
        self.done.set(report.done)
        elapsed = max((report.finished_at or time.time()) - report.started_at, 1e-6)
        self.rate.set(report.done / elapsed)


def runner_process_health() -> tuple[RunnerHealth, Callable[[], None]]:
    """For the runner process of `ledger serve`: a health record that writes only the
    projection metrics into the serve's shared directory (a scrape of any worker sums
    them in), and what to call when the process exits."""
    directory = multiprocess_directory()
    if directory is None:
        raise RuntimeError(f"the runner process needs {MULTIPROC_ENV} (set by ledger serve)")
    reap_dead_processes(directory)  # a runner process that died before this one
    health = _MeteredHealth(_RunnerMetrics(None))
    return health, lambda: mark_process_dead(os.getpid(), str(directory))


def multiprocess_directory() -> Path | None:
    """The shared directory, when prometheus-client writes values to files (it decided
    so from the environment when first imported)."""
    if values.ValueClass is values.MutexValue:
        return None
    return Path(os.environ[MULTIPROC_ENV])


def new_metrics() -> Metrics:
    """The metrics of a new app: its own in one process; the process's with workers."""
    directory = multiprocess_directory()
    if directory is None:
        return Metrics(CollectorRegistry(), None)
    return _process_metrics(directory)


@functools.cache
def _process_metrics(directory: Path) -> Metrics:
    # One set per process: two objects for one file key would overwrite each other.
    reap_dead_processes(directory)
    return Metrics(None, directory)


def _multiprocess_registry(directory: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))
    return registry


def reap_dead_processes(directory: Path) -> list[int]:
    """Mark dead the processes that left files but no longer run (a worker killed or
    crashed, then restarted by uvicorn); the pids marked."""
    pids = {int(m.group(1)) for f in directory.glob("*.db") if (m := _PID_FILE.search(f.name))}
    dead = sorted(pid for pid in pids if not process_alive(pid))
    for pid in dead:
        mark_process_dead(pid, str(directory))
    return dead
