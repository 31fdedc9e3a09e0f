"""What the Connect and Forge lifecycle shells share around one call: its ``Outcome``,
a ``Refusal`` raised before the decision, and its log line. The shells decide; the
routes (``app.http.calls``) only translate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["Outcome", "Refusal", "log_outcome"]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    code: str  # "accepted", "duplicate" or a refusal reason
    call_id: str
    detail: str | None = None
    subject: str | None = None  # the clientKey (Connect) or installation id (Forge)
    events: int = 0
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.code not in ("accepted", "duplicate")


class Refusal(Exception):
    """A call refused before its decision (body, token, key): an ``Outcome`` to be."""

    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.detail, self.retry_after = status, code, detail, retry_after


def log_outcome(
    log: logging.Logger, message: str, subject_field: str, endpoint: str, outcome: Outcome,
    elapsed: float,
) -> None:  # fmt: skip
    """One line per call; ``subject_field`` names the subject (client_key, installation_id).

    An accepted call's line is at DEBUG level (``LEDGER_LOG_LEVEL=debug`` shows it): the
    ledger itself records every accepted call, and a line written per call cost the hot
    path about a twentieth of its CPU. A refused call's line is at INFO."""
    level = logging.INFO if outcome.refused else logging.DEBUG
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        message,
        extra={
            "call_id": outcome.call_id,
            "endpoint": endpoint,
            "outcome": "refused" if outcome.refused else outcome.code,
            "reason": outcome.code if outcome.refused else None,
            "status": outcome.status,
            subject_field: outcome.subject,
            "events": outcome.events,
            "duration_ms": round(elapsed * 1000, 3),
        },
    )


