"""Projection lag under load (SPEC §9): from commit to read model, sampled.

A thread polls, every ``interval`` seconds, the log's head position (the store's own
``head()``) and then the projections' checkpoints (``storage_for(store).checkpoints()``,
the rows the runner moves in the same transaction as its read model). Each new head
position seen is remembered with the time it was first seen; its lag is the time from
then until the first poll at which the tenants projection's checkpoint had reached it
(and, for information, every projection's). A position was committed before it was
first seen, and reached before the poll that sees it, so each lag is exact to about
one ``interval`` either way.

After the load, ``stop()`` keeps polling until the positions seen are all reached (or
``settle`` seconds pass: those left count with the time they had waited by then).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

from eventstore import open_store
from projections.backends import storage_for

TARGET_P99_S = 1.0  # SPEC §9: p99 ≤ 1 s from commit to read model


@dataclass
class LagResult:
    tenants: list[float] = field(default_factory=list)  # seconds, one per head position seen
    slowest: list[float] = field(default_factory=list)  # the slowest projection's
    unreached: int = 0
    polls: int = 0
    errors: int = 0


class LagSampler:
    def __init__(self, database_url: str, interval: float = 0.025, settle: float = 30.0) -> None:
        self.interval = interval
        self.settle = settle
        # migrate=False: the service owns the schema; this only reads.
        self._store = open_store(database_url, max_connections=2, migrate=False)
        self._storage = storage_for(self._store)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lag-sampler", daemon=True)
        self.result = LagResult()
        self._pending_tenants: list[tuple[int, float]] = []
        self._pending_all: list[tuple[int, float]] = []
        self._last_head = -1

    def start(self) -> LagSampler:
        self._thread.start()
        return self

    def stop(self) -> LagResult:
        """Stop after the load: poll until every position seen is reached (or ``settle``)."""
        deadline = time.monotonic() + self.settle
        while (self._pending_tenants or self._pending_all) and time.monotonic() < deadline:
            time.sleep(self.interval)
        self._stop.set()
        self._thread.join(timeout=10)
        self.result.unreached = len(self._pending_tenants)
        now = time.monotonic()
        self.result.tenants += [now - seen for _, seen in self._pending_tenants]
        self.result.slowest += [now - seen for _, seen in self._pending_all]
        self._store.close()
        return self.result

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._poll()
            except Exception:  # a failed poll is counted, not fatal: the load goes on
                self.result.errors += 1
            self._stop.wait(self.interval)

    def _poll(self) -> None:
        seen = time.monotonic()
        head = self._store.head().position
        if head > self._last_head:
            self._pending_tenants.append((head, seen))
            self._pending_all.append((head, seen))
            self._last_head = head
        checkpoints = self._storage.checkpoints()
        reached = time.monotonic()
        self.result.polls += 1
        self._pending_tenants = _settle(self._pending_tenants, checkpoints.get("tenants", 0),
                                        reached, self.result.tenants)
        lowest = min(checkpoints.values(), default=0)
        self._pending_all = _settle(self._pending_all, lowest, reached, self.result.slowest)


def _settle(pending: list[tuple[int, float]], checkpoint: int, now: float,
            lags: list[float]) -> list[tuple[int, float]]:
    """Record the lag of every pending position ``checkpoint`` has reached; the rest wait."""
    waiting = []
    for position, seen in pending:
        if position <= checkpoint:
            lags.append(now - seen)
        else:
            waiting.append((position, seen))
    return waiting


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


def describe(result: LagResult, interval: float) -> str:
    t, s = result.tenants, result.slowest
    return (
        f"projection lag (commit -> read model), {len(t):,} head positions seen in"
        f" {result.polls:,} polls every {interval * 1e3:.0f} ms (exact to about one poll):"
        f" tenants p50 {percentile(t, 50) * 1e3:.0f} ms, p99 {percentile(t, 99) * 1e3:.0f} ms,"
        f" max {max(t, default=0) * 1e3:.0f} ms; slowest projection p50"
        f" {percentile(s, 50) * 1e3:.0f} ms, p99 {percentile(s, 99) * 1e3:.0f} ms"
        + (f"; {result.unreached} positions not reached when the sampler stopped"
           if result.unreached else "")
        + (f"; {result.errors} polls failed" if result.errors else "")
    )
