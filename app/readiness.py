"""The projection runner's state as ``/readyz`` shows it (and ``/metrics`` counts it)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from projections.health import stopped_snapshot
from projections.runner import RunnerThread


class ProjectionProgress(BaseModel):
    checkpoint: int
    lag_events: int | None  # head position - checkpoint; None before the head was read


class RunnerError(BaseModel):
    type: str
    message: str
    at: str
    position: int | None  # the event the runner is stuck at, when known


class RunnerState(BaseModel):
    role: Literal["leader", "standby", "stopped"]
    head: int | None
    lag_events: int | None  # the largest lag of any projection
    projections: dict[str, ProjectionProgress]
    failures: int  # since the process started
    consecutive_failures: int  # 0 when the last attempt succeeded
    last_error: RunnerError | None  # kept after recovery, with its time
    observed_at: str | None


class Readiness(BaseModel):
    status: str
    runner: RunnerState


def runner_status(runner: RunnerThread | None) -> dict[str, Any]:
    """This process's runner state; ``stopped`` when it runs no projections."""
    return runner.status() if runner is not None else stopped_snapshot()
