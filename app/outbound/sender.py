"""Sending one signed message to one URL over HTTP (the I/O edge, httpx).

A delivery counts when the URL answers 2xx within ``DELIVERY_TIMEOUT_SECONDS``;
anything else is a failure with a short, safe reason (never the URL, which may hold
credentials, and never the answer's body, which is the receiver's). Redirects are not
followed (a 3xx is a failure: a webhook URL names its receiver), and at most
``ANSWER_BYTES_READ`` of an answer are read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx
from standardwebhooks import Webhook

from app.outbound.messages import Message
from projections.health import short_message

DELIVERY_TIMEOUT_SECONDS: Final = 10.0
ANSWER_BYTES_READ: Final = 64 * 1024
USER_AGENT: Final = "tenant-ledger-webhooks/1"


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    error: str | None  # why it failed: "HTTP 500", "timed out", …


def signed_headers(signer: Webhook, message: Message, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed anew each time: receivers
    refuse a timestamp more than a few minutes off)."""
    return {
        "webhook-id": message.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signer.sign(message.id, now, message.body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


class Sender:
    """One URL's HTTP client (kept alive between messages). Not thread-safe."""

    def __init__(self, url: str, secret: str, timeout: float = DELIVERY_TIMEOUT_SECONDS) -> None:
        self.url = url
        self.timeout = timeout
        self._signer = Webhook(secret)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, headers={}
        )

    def send(self, message: Message) -> Attempt:
        started = time.monotonic()
        headers = signed_headers(self._signer, message, datetime.now(UTC))
        try:
            with self._client.stream("POST", self.url, content=message.body, headers=headers) as answer:
                read = 0
                for chunk in answer.iter_raw():
                    read += len(chunk)
                    if read >= ANSWER_BYTES_READ or time.monotonic() - started > self.timeout:
                        break
                status = answer.status_code
        except httpx.TimeoutException:
            return Attempt(False, "timed out")
        except httpx.HTTPError as error:
            return Attempt(False, _transport_reason(error))
        if time.monotonic() - started > self.timeout:
            return Attempt(False, f"answered after more than {self.timeout:.0f} s")
        if 200 <= status < 300:
            return Attempt(True, None)
        return Attempt(False, f"HTTP {status}")

    def close(self) -> None:
        self._client.close()


def _transport_reason(error: httpx.HTTPError) -> str:
    """A transport failure in a few words; the URL taken out in case a message quotes it."""
    cause = error.__cause__ or error.__context__ or error
    text = short_message(cause) or type(error).__name__
    return f"{type(error).__name__}: {text}"
