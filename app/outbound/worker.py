"""The deliverers: one thread per webhook URL, delivering while this process's
projection runner leads (SPEC §11).

Order per URL: a message is sent only after every message before it was accepted; a
failure is retried with back-off (1 s doubling to 10 min) and holds up only its own
URL. The checkpoint (``checkpoints.py``) moves by whole events, at least every
``SAVE_SECONDS`` and at the end of each batch: after a crash or a takeover a few
events may be delivered twice (at least once; receivers deduplicate by
``webhook-id``), never skipped. ``ledger webhooks replay`` bumps the row's generation;
the deliverer notices within a poll (or a second of a back-off) and starts again there.

Memory is bounded: a batch of events at a time per URL, and the source's bounded caches.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from app.outbound.checkpoints import DeliveryCheckpoints, DeliveryRow
from app.outbound.config import url_host, url_id, url_label
from app.outbound.messages import Message
from app.outbound.sender import Attempt, Sender
from app.outbound.source import MessageSource
from eventstore.clock import format_timestamp, utcnow
from projections.health import backoff_delay, short_message

if TYPE_CHECKING:
    from projections.runner import RunnerThread

log = logging.getLogger("ledger.webhooks")

RETRY_INITIAL_SECONDS: Final = 1.0
RETRY_MAX_SECONDS: Final = 600.0
BATCH_EVENTS: Final = 200
POLL_SECONDS: Final = 0.05
SAVE_SECONDS: Final = 0.5
# While backing off, how often the deliverer looks for a stop, a lost lead or a replay.
WAKE_SECONDS: Final = 1.0


def retry_delay(failures: int) -> float:
    """Seconds before the next attempt after ``failures`` failures in a row."""
    return backoff_delay(failures, RETRY_INITIAL_SECONDS, RETRY_MAX_SECONDS)


class DeliveryMetrics(Protocol):
    """What the deliverers count (``app.metrics``); by URL index and host, never the URL."""

    def delivered(self, index: int, host: str) -> None: ...

    def failed(self, index: int, host: str) -> None: ...

    def lag(self, index: int, host: str, events: int) -> None: ...


class _Uncounted:
    def delivered(self, index: int, host: str) -> None:
        pass

    def failed(self, index: int, host: str) -> None:
        pass

    def lag(self, index: int, host: str, events: int) -> None:
        pass


@dataclass
class UrlStatus:
    """One URL's state as /readyz, /metrics and the console show it."""

    index: int
    url: str  # the label: no credentials, no query
    host: str
    state: str = "standby"  # standby, idle, delivering, retrying, stopped
    position: int | None = None
    head: int | None = None
    delivered: int = 0
    failures: int = 0
    consecutive_failures: int = 0
    last_attempt_at: datetime | None = None
    last_delivered_at: datetime | None = None
    last_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            lag = (
                max(0, self.head - self.position)
                if self.head is not None and self.position is not None
                else None
            )
            return {
                "index": self.index,
                "url": self.url,
                "host": self.host,
                "state": self.state,
                "position": self.position,
                "lag_events": lag,
                "delivered": self.delivered,
                "failures": self.failures,
                "consecutive_failures": self.consecutive_failures,
                "last_attempt_at": _time(self.last_attempt_at),
                "last_delivered_at": _time(self.last_delivered_at),
                "last_error": self.last_error,
            }

    def update(self, **values: Any) -> None:
        with self._lock:
            for name, value in values.items():
                setattr(self, name, value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


class _Interrupted(Exception):
    """Stop, lost lead or replay: leave the batch; the next pass starts from the row."""


class UrlDeliverer:
    """One URL's thread."""

    def __init__(
        self,
        index: int,
        url: str,
        sender: Sender,
        source: MessageSource,
        checkpoints: DeliveryCheckpoints,
        leading: threading.Event,
        metrics: DeliveryMetrics,
        retry: Callable[[int], float] = retry_delay,
    ) -> None:
        self.url_id = url_id(url)
        self.label = url_label(url)
        self.sender = sender
        self.source = source
        self.checkpoints = checkpoints
        self.leading = leading
        self.metrics = metrics
        self.retry = retry
        self.status = UrlStatus(index, self.label, url_host(url))
        self._stop = threading.Event()
        self._generation: int | None = None
        self._position = 0
        self._synced_at = 0.0
        self._thread = threading.Thread(target=self._run, name=f"webhooks-{index}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        self.sender.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            if not self.leading.is_set():
                self.status.update(state="standby")
                self._generation = None  # a new lead starts from the row
                self._stop.wait(0.2)
                continue
            try:
                self._pass()
                failures = 0
            except _Interrupted:
                pass
            except Exception as error:  # the store, most likely: log, back off, go on
                failures += 1
                delay = backoff_delay(failures, 0.5, 30.0)
                message = short_message(error)
                self.status.update(last_error=f"{type(error).__name__}: {message}")
                log.error(
                    f"webhook deliveries to URL {self.status.index} failed"
                    f" ({type(error).__name__}: {message}); retrying in {delay:.1f} s"
                )
                self._generation = None
                self._stop.wait(delay)
        self.status.update(state="stopped")

    def _sync(self) -> DeliveryRow:
        """Take the row's position when it is new to us or a replay moved it."""
        row = self.checkpoints.load(self.url_id, self.label)
        if row.generation != self._generation:
            self._generation, self._position = row.generation, row.position
            self.status.update(consecutive_failures=row.failures, last_error=row.last_error)
        else:
            self._position = max(self._position, row.position)
        return row

    def _pass(self) -> None:
        if self._generation is None or time.monotonic() - self._synced_at >= WAKE_SECONDS:
            self._sync()  # at least once a second: a replay is noticed within about that
            self._synced_at = time.monotonic()
        ready = self.source.ready_position()
        head = self.source.head()
        self.status.update(position=self._position, head=head)
        self.metrics.lag(self.status.index, self.status.host, max(0, head - self._position))
        if self._position >= ready:
            self.status.update(state="idle")
            self._stop.wait(POLL_SECONDS)
            return
        self.status.update(state="delivering")
        done, saved_at = self._position, time.monotonic()
        try:
            events = self.source.events(self._position, ready, BATCH_EVENTS)
            for event, messages in zip(events, self.source.messages(events), strict=True):
                for message in messages:
                    self._deliver(message)
                done = event.position
                self.status.update(position=done)
                if time.monotonic() - saved_at >= SAVE_SECONDS:
                    self._save(done)
                    saved_at = time.monotonic()
        finally:
            if done > self._position:
                with contextlib.suppress(Exception):  # the store may be what failed
                    self._save(done)

    def _save(self, position: int) -> None:
        if self.checkpoints.delivered(self.url_id, self._generation or 0, position, utcnow()):
            self._position = position
        else:
            self._generation = None  # replayed meanwhile: the next pass reads the row
            raise _Interrupted

    def _deliver(self, message: Message) -> None:
        """Send until accepted; raise _Interrupted on a stop, a lost lead or a replay."""
        while True:
            if self._stop.is_set() or not self.leading.is_set():
                raise _Interrupted
            attempt = self.sender.send(message)
            now = utcnow()
            if attempt.ok:
                self.status.update(
                    delivered=self.status.delivered + 1, consecutive_failures=0,
                    last_attempt_at=now, last_delivered_at=now, last_error=None,
                )
                self.metrics.delivered(self.status.index, self.status.host)
                return
            self._failed(message, attempt, now)

    def _failed(self, message: Message, attempt: Attempt, now: datetime) -> None:
        failures = self.status.consecutive_failures + 1
        error = attempt.error or "failed"
        self.status.update(
            state="retrying", failures=self.status.failures + 1,
            consecutive_failures=failures, last_attempt_at=now, last_error=error,
        )
        self.metrics.failed(self.status.index, self.status.host)
        self.checkpoints.failed(self.url_id, self._generation or 0, failures, error, now)
        delay = self.retry(failures)
        log.warning(
            f"webhook {message.id} to URL {self.status.index} ({self.status.host}) failed:"
            f" {error}; attempt {failures}, retrying in {delay:.0f} s"
        )
        deadline = time.monotonic() + delay
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, WAKE_SECONDS)) or not self.leading.is_set():
                raise _Interrupted
            if self.checkpoints.load(self.url_id, self.label).generation != self._generation:
                raise _Interrupted  # replayed: start again where it says
        self.status.update(state="delivering")


class Deliveries:
    """Every URL's deliverer; they deliver while ``on_role`` says this runner leads."""

    def __init__(
        self,
        urls: tuple[str, ...],
        secret: str,
        source: MessageSource,
        checkpoints: DeliveryCheckpoints,
        metrics: DeliveryMetrics | None = None,
        retry: Callable[[int], float] = retry_delay,
    ) -> None:
        self.leading = threading.Event()
        counted = metrics or _Uncounted()
        self.deliverers = [
            UrlDeliverer(
                index, url, Sender(url, secret), source, checkpoints, self.leading, counted, retry
            )
            for index, url in enumerate(urls)
        ]

    def start(self) -> Deliveries:
        for deliverer in self.deliverers:
            deliverer.start()
        return self

    def on_role(self, role: str) -> None:
        if role == "leader":
            self.leading.set()
        else:
            self.leading.clear()

    def stop(self, timeout: float = 15.0) -> None:
        self.leading.clear()
        for deliverer in self.deliverers:
            deliverer.stop()
        for deliverer in self.deliverers:
            deliverer.join(timeout)

    def status(self) -> list[dict[str, Any]]:
        return [deliverer.status.as_dict() for deliverer in self.deliverers]


class RunnerWithDeliveries:
    """A projection runner thread and the deliverers beside it, as one runner view:
    its status is the runner's with ``webhooks`` (each URL's progress) added."""

    def __init__(self, runner: RunnerThread, deliveries: Deliveries | None) -> None:
        self.runner = runner
        self.deliveries = deliveries

    @property
    def role(self) -> str:
        return self.runner.role

    def is_alive(self) -> bool:
        return self.runner.is_alive()

    def status(self) -> dict[str, Any]:
        snapshot = self.runner.status()
        snapshot["webhooks"] = self.deliveries.status() if self.deliveries else []
        return snapshot

    def stop(self, timeout: float = 10) -> None:
        if self.deliveries is not None:
            self.deliveries.stop()
        self.runner.stop(timeout)
