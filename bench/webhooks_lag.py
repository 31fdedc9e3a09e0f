"""Webhook delivery lag while ingesting at full rate (SPEC §9: p99 ≤ 1 s from commit to
the receiver's 2xx).

``ledger serve`` runs on a scratch PostgreSQL database with one webhook URL: a receiver
in a process of its own (``bench/_webhook_receiver.py``) that verifies every signature.
Writer threads append events (a new tenant's ``Installed`` each: the message with the
most to say) as fast as the store takes them for ``--seconds``; the service's runner
process folds them and its deliverer sends each one, in order, to the receiver. Each
message's lag is its arrival at the receiver minus its event's ``recorded_at`` (set
before the commit, so the figure errs on the long side). After the load the bench waits
until every event is delivered; the figure is over every event appended.

Usage: python bench/webhooks_lag.py [--seconds 10] [--writers 2]
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import json

from _benchkit import (
    free_port,
    load_average,
    print_environment,
    result_line,
    scratch_database,
    start_ledger,
)
from _lag import percentile

from app.outbound.config import new_secret
from eventstore import open_store
from eventstore.events import Metadata, stream_id_for
from eventstore.testing.synthetic import installed_data
from eventstore.values import NewEvent

TARGET_P99_MS = 1000.0
ADMIN_TOKEN = "bench-admin-token-0123456789abcdef"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10.0, help="load window (default 10)")
    parser.add_argument("--writers", type=int, default=2, help="appending threads (default 2)")
    parser.add_argument("--settle", type=float, default=120.0,
                        help="how long to wait for the backlog after the load (default 120 s)")
    return parser.parse_args()


def write_load(database_url: str, seconds: float, writers: int) -> tuple[int, float]:
    """Append new tenants' Installed events from ``writers`` threads; (events, seconds)."""
    counts = [0] * writers
    stop = time.monotonic() + seconds

    def writer(index: int) -> None:
        with open_store(database_url, max_connections=1, migrate=False) as store:
            while time.monotonic() < stop:
                key = str(uuid.uuid4())
                data = installed_data(key, f"https://{key[:8]}.atlassian.net", product_type="jira")
                store.append(stream_id_for(key), [NewEvent(data, Metadata(call_id=key))], 0)
                counts[index] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts), time.monotonic() - started


def webhook_state(url: str) -> dict[str, Any] | None:
    """The deliverer's state in /readyz (None until the runner process reports one)."""
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as answer:  # noqa: S310
            hooks = json.load(answer)["runner"].get("webhooks") or []
    except OSError:
        return None
    return hooks[0] if hooks else None


def delivered_through(url: str, head: int, settle: float) -> bool:
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        state = webhook_state(url)
        if state and state["position"] is not None and state["position"] >= head:
            return True
        time.sleep(0.2)
    return False


def wait_until_delivering(url: str, limit: float = 60.0) -> None:
    """Until the runner process leads and its deliverer waits for events (start-up is
    not part of the figure)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        state = webhook_state(url)
        if state and state["state"] == "idle":
            return
        time.sleep(0.1)
    raise SystemExit("the service's deliverer did not start within a minute")


def main() -> None:
    args = parse_args()
    print_environment("webhook delivery lag while ingesting (SPEC §9: p99 <= 1 s)")
    secret = new_secret()
    work = Path(tempfile.mkdtemp(prefix="ledger-bench-webhooks-"))
    out = work / "received.tsv"
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "_webhook_receiver.py"), str(port), secret,
         str(out)],
    )
    hook_url = f"http://127.0.0.1:{port}/hook"
    with scratch_database("webhooks") as database_url:
        open_store(database_url).close()  # the schema, before the service and the writers
        env = {
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "LEDGER_ADMIN_TOKEN": ADMIN_TOKEN,
            "LEDGER_WEBHOOK_URLS": hook_url,
            "LEDGER_WEBHOOK_SECRET": secret,
            "LEDGER_LOG_LEVEL": "warning",
        }
        service = start_ledger(env, free_port(), 1, work)
        try:
            wait_until_delivering(service.url)
            events, seconds = write_load(database_url, args.seconds, args.writers)
            print(f"   appended {events:,} events in {seconds:.1f} s ({events / seconds:,.0f}/s)"
                  f" from {args.writers} writer threads; load average now {load_average()}")
            settled_from = time.monotonic()
            complete = delivered_through(service.url, events, args.settle)
            print(f"   backlog delivered {time.monotonic() - settled_from:.1f} s after the load"
                  + ("" if complete else " (NOT complete: the settle time ran out)"))
        finally:
            service.stop()
            receiver.terminate()
            receiver.wait(timeout=15)
    report(out, events)


def report(out: Path, events: int) -> None:
    lags: dict[int, float] = {}
    for line in out.read_text().splitlines():
        webhook_id, stamp, arrived = line.split("\t")
        parts = webhook_id.split("_")
        if len(parts) == 2:  # evt_<position>: the event's own message
            lags.setdefault(int(parts[1]), float(arrived) - float(stamp))
    missing = events - len(lags)
    values = list(lags.values())
    print(f"   {len(values):,} events delivered ({missing} missing): lag p50"
          f" {percentile(values, 50) * 1e3:.0f} ms, p99 {percentile(values, 99) * 1e3:.0f} ms,"
          f" max {max(values, default=0) * 1e3:.0f} ms")
    # An event never delivered counts as failing the target.
    p99 = percentile(values + [float("inf")] * max(0, missing), 99) * 1e3
    print(result_line("webhook_lag_p99_ms", p99, "ms", TARGET_P99_MS, lower_is_better=True))


if __name__ == "__main__":
    main()
