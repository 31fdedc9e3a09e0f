"""What the Connect and Forge lifecycle shells share around one call: its ``Outcome``,
a ``Refusal`` raised before the decision, its log line and its rejection-log entry. The shells decide; the
routes (``app.http.calls``) only translate.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.ingest.jwt import token_sha256
from eventstore.clock import utcnow
from eventstore.errors import StoreError
from eventstore.rejections import Rejection, RejectionLog

log = logging.getLogger("ledger.rejections")

__all__ = ["REFUSAL_REASONS", "Outcome", "Refusal", "log_outcome", "record_refusal"]


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


# Every reason a refused call can be recorded under (``Outcome.code`` of a refusal): the
# token's checks (``app.ingest.jwt.REASON_CODES``), the bodies', the deciders', the
# key fetchers' and the shells'. Readers use it to tell an unknown reason from one that
# simply has no refusal yet (tests/test_cli_terminal.py checks it against the sources).
REFUSAL_REASONS: frozenset[str] = frozenset(
    {
        "app_mismatch",
        "aud_mismatch",
        "bad_field_type",
        "bad_signature",
        "body_token_mismatch",
        "body_too_large",
        "control_character",
        "data_key_unreadable",
        "field_too_long",
        "first_install_not_signed",
        "forge_not_configured",
        "host_not_allowed",
        "insecure_base_url",
        "install_key_error",
        "invalid_base_url",
        "invalid_claim",
        "invalid_field",
        "invalid_installation",
        "invalid_key",
        "invalid_kid",
        "iss_mismatch",
        "jwks_unavailable",
        "key_server_busy",
        "key_server_unavailable",
        "malformed_json",
        "malformed_token",
        "master_key_unavailable",
        "missing_claim",
        "missing_field",
        "missing_token",
        "no_shared_secret",
        "not_an_object",
        "qsh_mismatch",
        "secret_unreadable",
        "stale_call",
        "store_unavailable",
        "token_expired",
        "token_not_yet_valid",
        "token_reused",
        "too_deep",
        "unknown_kid",
        "unknown_tenant",
        "unsupported_alg",
        "unsupported_media_type",
        "wrong_app_key",
    }
)


def record_refusal(
    store: RejectionLog,
    *,
    path: str,
    reason: str,
    status: int,
    subject: str | None,
    site: str | None,
    remote_addr: str | None,
    token: str | None,
    detail: str | None,
    log_fields: dict[str, Any] | None = None,
) -> None:
    """The rejection-log entry of one refused call (SPEC §4), the same for lifecycle
    calls, Forge calls and the tenant authority: what the call claimed (``subject``: a
    clientKey or an installation id; ``site``: a baseUrl or a cloudId), the token only
    as its SHA-256. The log serves the call, never decides it: a store that cannot take
    the entry is a warning line, and the answer stays the call's."""
    entry = Rejection(
        at=utcnow(),
        path=path,
        reason=reason,
        status=status,
        client_key=subject,
        base_url=site,
        remote_addr=remote_addr,
        token_sha256=token_sha256(token) if token else None,
        detail=detail,
    )
    try:
        store.record_rejection(entry)
    except StoreError as error:
        log.warning(
            "rejection not stored: %s",
            type(error).__name__,
            extra={"reason": reason, **(log_fields or {})},
        )
