"""One JSON object per log line. Only whitelisted fields are written, so a secret or a
token handed to a logger by mistake in ``extra`` never reaches the output."""

from __future__ import annotations

import logging
import sys
from typing import Any, Final

import msgspec

from eventstore.clock import format_timestamp, utcnow

SAFE_FIELDS: Final = (
    "call_id",
    "endpoint",
    "outcome",
    "reason",
    "status",
    "client_key",
    "installation_id",
    "events",
    "duration_ms",
    "remote_addr",
    "position",
    "projection",
    "path",
    "credential",
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": format_timestamp(utcnow()),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in SAFE_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: messages of library errors can quote inputs.
            entry["error"] = record.exc_info[0].__name__
        return msgspec.json.encode(entry).decode()


def configure_logging(level: int | str = logging.INFO, stream: Any = None) -> None:
    """JSON lines on ``stream`` (stderr) from ``level`` up (a number, or a name such as
    ``LEDGER_LOG_LEVEL``'s "debug")."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ledger")
    root.handlers[:] = [handler]
    root.setLevel(level.upper() if isinstance(level, str) else level)
    root.propagate = False
