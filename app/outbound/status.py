"""Each webhook URL's deliveries as the CLI and the console show them, from the
checkpoint rows (what every runner wrote) and the log's head: pure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.outbound.checkpoints import DeliveryRow
from app.outbound.config import url_id, url_label


def webhooks_answer(
    urls: Sequence[str], rows: Sequence[DeliveryRow], head: int
) -> dict[str, Any]:
    """``{"head", "webhooks": [...]}``: the configured URLs in order (index, label,
    position = the last delivered, lag, last attempt, failures in a row, last error),
    then rows of URLs no longer configured (index None)."""
    by_id = {row.url_id: row for row in rows}
    shown: list[dict[str, Any]] = []
    for index, url in enumerate(urls):
        shown.append(_entry(index, url_label(url), by_id.pop(url_id(url), None), head))
    for row in by_id.values():
        shown.append(_entry(None, row.label, row, head))
    return {"head": head, "webhooks": shown}


def _entry(index: int | None, label: str, row: DeliveryRow | None, head: int) -> dict[str, Any]:
    position = row.position if row is not None else 0
    return {
        "index": index,
        "url": label,
        "configured": index is not None,
        "position": position,
        "lag_events": max(0, head - position),
        "last_attempt_at": row.attempted_at if row else None,
        "last_delivered_at": row.delivered_at if row else None,
        "failures": row.failures if row else 0,
        "last_error": row.last_error if row else None,
    }
