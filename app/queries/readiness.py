"""The projection runner's state as ``/readyz`` shows it (and ``/metrics`` counts it)."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel

from projections.health import stopped_snapshot


class Stalled(BaseModel):
    """A projection stopped at an event its fold fails on (SPEC §6); the others go on."""

    position: int
    type: str
    error: str
    since: str | None = None
    attempts: int | None = None


class ProjectionProgress(BaseModel):
    checkpoint: int
    lag_events: int | None  # head position - checkpoint; None before the head was read
    stalled: Stalled | None = None


class RunnerError(BaseModel):
    type: str
    message: str
    at: str
    position: int | None  # the event the runner is stuck at, when known


class LicenseChecks(BaseModel):
    """The license and presence checks beside the leading runner (SPEC §11)."""

    every_hours: float
    rate_per_second: float  # the most sites started per second
    rounds: int  # finished since this process started
    # The round under way (sites, done, each result's count, reasons, sites_per_second).
    running: dict[str, Any] | None
    last_round: dict[str, Any] | None


class RunnerState(BaseModel):
    role: Literal["leader", "standby", "stopped"]
    degraded: bool = False  # some projection is stalled (see projections[...].stalled)
    # The process whose runner this is: under `ledger serve` a process of its own, not
    # the worker answering; None when no runner has reported.
    pid: int | None
    head: int | None
    lag_events: int | None  # the largest lag of any projection
    projections: dict[str, ProjectionProgress]
    failures: int  # since the process started (`ledger serve`: since it started, deaths of
    # its runner process included)
    consecutive_failures: int  # 0 when the last attempt succeeded
    last_error: RunnerError | None  # kept after recovery, with its time
    observed_at: str | None
    webhooks: list[WebhookProgress] = []  # empty: no LEDGER_WEBHOOK_URLS
    # None when this process's runner has no license checks (off, or not its job).
    license_checks: LicenseChecks | None = None


class WebhookProgress(BaseModel):
    """One webhook URL's deliveries (SPEC §11), as this runner's deliverer sees them."""

    index: int  # its place in LEDGER_WEBHOOK_URLS
    url: str  # without credentials or query
    host: str
    state: Literal["standby", "idle", "delivering", "retrying", "stopped"]
    position: int | None  # the last position delivered
    lag_events: int | None
    delivered: int  # messages accepted (this process)
    failures: int  # attempts failed (this process)
    consecutive_failures: int
    last_attempt_at: str | None
    last_delivered_at: str | None
    last_error: str | None


class Readiness(BaseModel):
    status: str
    # Ready (the store answers), but a projection has stopped at an event: the other
    # read models are current, that one is not (SPEC §6).
    degraded: bool = False
    runner: RunnerState


class RunnerView(Protocol):
    """Where a worker learns the runner's state: its own runner thread
    (``projections.runner.RunnerThread``), or the state file of the runner process of
    its ``ledger serve`` (``projections.health.StateFile``)."""

    def status(self) -> dict[str, Any]: ...


def runner_status(runner: RunnerView | None) -> dict[str, Any]:
    """The runner state this process shows; ``stopped`` when it knows of no runner."""
    return runner.status() if runner is not None else stopped_snapshot()
