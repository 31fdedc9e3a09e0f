"""Prometheus text metrics, kept in process (each service process answers for itself)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Final

from eventstore.rejections import rejection_log_counters

LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[tuple[str, str, int], int] = defaultdict(int)
        self._buckets: dict[str, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
        self._sums: dict[str, float] = defaultdict(float)
        self._rejections: dict[str, int] = defaultdict(int)
        # The projection runner's state (projections.health snapshot), set by the service.
        self.runner_status: Callable[[], dict[str, Any]] | None = None

    def observe_call(
        self, endpoint: str, outcome: str, status: int, seconds: float, refused: bool
    ) -> None:
        with self._lock:
            self._calls[(endpoint, outcome, status)] += 1
            self._buckets[endpoint][bisect_left(LATENCY_BUCKETS, seconds)] += 1
            self._sums[endpoint] += seconds
            if refused:
                self._rejections[outcome] += 1

    def render(self) -> str:
        lines = [
            "# HELP ledger_calls_total Lifecycle calls by endpoint, outcome and status.",
            "# TYPE ledger_calls_total counter",
        ]
        with self._lock:
            for (endpoint, outcome, status), count in sorted(self._calls.items()):
                lines.append(
                    f'ledger_calls_total{{endpoint="{endpoint}",outcome="{outcome}",status="{status}"}} {count}'
                )
            lines += [
                "# HELP ledger_rejections_total Refused lifecycle calls by reason code.",
                "# TYPE ledger_rejections_total counter",
            ]
            for reason, count in sorted(self._rejections.items()):
                lines.append(f'ledger_rejections_total{{reason="{reason}"}} {count}')
            lines += _rejection_log_lines()
            lines += [
                "# HELP ledger_call_duration_seconds Lifecycle call latency.",
                "# TYPE ledger_call_duration_seconds histogram",
            ]
            for endpoint, buckets in sorted(self._buckets.items()):
                cumulative = 0
                for bound, count in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
                    cumulative += count
                    le = "+Inf" if bound == float("inf") else repr(bound)
                    lines.append(
                        f'ledger_call_duration_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {cumulative}'
                    )
                lines.append(
                    f'ledger_call_duration_seconds_sum{{endpoint="{endpoint}"}} {self._sums[endpoint]}'
                )
                lines.append(
                    f'ledger_call_duration_seconds_count{{endpoint="{endpoint}"}} {cumulative}'
                )
        if self.runner_status is not None:
            lines += _runner_lines(self.runner_status())
        return "\n".join(lines) + "\n"


def _runner_lines(status: dict[str, Any]) -> list[str]:
    lines = [
        "# HELP ledger_projection_lag_events Events in the log not yet folded, by projection.",
        "# TYPE ledger_projection_lag_events gauge",
    ]
    for name, progress in status["projections"].items():
        if progress["lag_events"] is not None:
            lines.append(
                f'ledger_projection_lag_events{{projection="{name}"}} {progress["lag_events"]}'
            )
    lines += [
        "# HELP ledger_projection_failures_total Projection runner failures (each one retried).",
        "# TYPE ledger_projection_failures_total counter",
        f"ledger_projection_failures_total {status['failures']}",
    ]
    return lines


def _rejection_log_lines() -> list[str]:
    """The rejection log's own upkeep, counted by the stores of this process."""
    return [
        "# HELP ledger_rejections_coalesced_total Refusals folded into an identical row.",
        "# TYPE ledger_rejections_coalesced_total counter",
        f"ledger_rejections_coalesced_total {rejection_log_counters.coalesced}",
        "# HELP ledger_rejections_purged_total Rejection rows purged after the retention period.",
        "# TYPE ledger_rejections_purged_total counter",
        f"ledger_rejections_purged_total {rejection_log_counters.purged}",
    ]
