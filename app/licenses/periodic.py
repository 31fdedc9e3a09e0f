"""The periodic license check (SPEC §11): rounds every ``LEDGER_LICENSE_CHECK_HOURS``,
run only while this process's projection runner leads (one leader per database, so
one checker asks the sites), in a daemon thread with an event loop of its own.

The first round starts ``first_round_seconds`` after this process became able to lead
(a restart does not ask every site at once on boot); a round that is cut short (the
leadership moved, the process stops) is simply run again by the next leader. What it
did shows in ``status()`` (``/readyz``) and in the metrics it is given.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final, Protocol

from app.licenses.check import RoundReport, run_round
from app.settings import Settings
from eventstore.crypto import KeyRing
from eventstore.store import EventStore

__all__ = ["CheckMetrics", "LicenseChecks", "RunnerWithChecks", "license_checks_for"]

log = logging.getLogger("ledger.licenses")

FIRST_ROUND_SECONDS: Final = 60.0
IDLE_SECONDS: Final = 1.0  # how often a standby (or an early leader) looks again


class CheckMetrics(Protocol):
    """What the checker tells ``/metrics`` (``app.metrics.LicenseCheckMetrics``)."""

    def started(self) -> None: ...

    def result(self, result: str, reason: str | None) -> None: ...

    def round(self, report: RoundReport) -> None: ...


class LicenseChecks:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        keyring: KeyRing,
        is_leader: Callable[[], bool],
        metrics: CheckMetrics | None = None,
        first_round_seconds: float | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.is_leader = is_leader
        self.metrics = metrics
        self.every_seconds = settings.license_check_hours * 3600
        first = FIRST_ROUND_SECONDS if first_round_seconds is None else first_round_seconds
        self._next = time.monotonic() + first
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._current: RoundReport | None = None
        self._last: RoundReport | None = None
        self._rounds = 0
        self._thread = threading.Thread(target=self._main, name="license-checks", daemon=True)

    def start(self) -> LicenseChecks:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def status(self) -> dict[str, Any]:
        """The checks as ``/readyz`` shows them."""
        with self._lock:
            current, last, rounds = self._current, self._last, self._rounds
        return {
            "every_hours": self.settings.license_check_hours,
            "rate_per_second": self.settings.license_check_rate,
            "rounds": rounds,
            "running": current.as_dict() if current is not None else None,
            "last_round": last.as_dict() if last is not None else None,
        }

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        while not self._stop.is_set():
            if time.monotonic() < self._next or not self.is_leader():
                # In a thread, so that stop() ends the wait at once.
                await asyncio.to_thread(self._stop.wait, IDLE_SECONDS)
                continue
            self._next = time.monotonic() + self.every_seconds
            try:
                await self._round()
            except Exception as error:  # the store, say: the next round tries again
                log.error("license check round failed: %s", type(error).__name__)

    async def _round(self) -> None:
        report = RoundReport()
        with self._lock:
            self._current = report
        if self.metrics is not None:
            self.metrics.started()
        try:
            await run_round(
                self.settings,
                self.store,
                self.keyring,
                report=report,
                on_result=self.metrics.result if self.metrics is not None else None,
                stop=lambda: self._stop.is_set() or not self.is_leader(),
            )
        finally:
            with self._lock:
                self._current = None
                self._last = report
                self._rounds += 1
            if self.metrics is not None:
                self.metrics.round(report)
        log.info(
            "license check round: %d sites, %s",
            report.sites,
            ", ".join(f"{name} {count}" for name, count in report.counts.items()),
        )


def license_checks_for(
    settings: Settings,
    store: EventStore,
    is_leader: Callable[[], bool],
    metrics: CheckMetrics | None = None,
) -> LicenseChecks | None:
    """The started checker of a process that runs the projections; None when the check
    is off (``LEDGER_LICENSE_CHECK_HOURS=0``)."""
    if settings.license_check_hours <= 0:
        return None
    keyring = KeyRing(store, settings.master_keys())
    return LicenseChecks(settings, store, keyring, is_leader, metrics).start()


class RunnerWithChecks:
    """A runner's state with its process's license checks beside it (``/readyz``)."""

    def __init__(self, runner: Any, checks: LicenseChecks) -> None:
        self.runner = runner
        self.checks = checks

    def status(self) -> dict[str, Any]:
        return {**self.runner.status(), "license_checks": self.checks.status()}
