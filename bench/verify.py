"""``ledger verify`` speed (SPEC §9: 1,000,000 events at >= 300,000 events/s), PostgreSQL.

A realistic synthetic log (``eventstore.testing.synthetic.RandomLog``: all nine event types,
secrets sealed with AES-GCM, chain version 2 computed by ``eventstore.chain`` as an
append computes it) is bulk-loaded with the product's ``PostgresEventStore.import_rows``
(binary COPY, guarded: the import itself recomputes the chain), then the store's own
``verify()`` — what ``ledger verify`` runs — is timed over the whole log (best of
``--repeats``, after one warm-up pass that also proves it reports ok), optionally
followed by a cProfile of one more pass.

Run: ``.venv/bin/python bench/verify.py`` (full figure), or quickly:
``.venv/bin/python bench/verify.py --events 20000 --repeats 1 --no-profile``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchkit import (
    load_synthetic,
    print_environment,
    print_profile,
    result_line,
    scratch_database,
)

from eventstore.postgres.store import PostgresEventStore

TARGET = 300_000.0  # events/s


def timed_verify(store: PostgresEventStore, events: int) -> float:
    started = time.perf_counter()
    report = store.verify()
    seconds = time.perf_counter() - started
    if not report.ok or report.events != events:
        raise SystemExit(f"verify did not pass over the bulk-loaded log: {report}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000, help="log size (1000000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; best counts (3)")
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile pass")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print_environment("bench/verify.py: ledger verify (PostgresEventStore.verify)")
    with scratch_database("verify") as url:
        # The import is one COPY that lasts as long as generating the log (minutes at 1M).
        store = PostgresEventStore(url, max_connections=2, statement_timeout=3600.0)
        try:
            load_synthetic(store, args.events, args.seed)
            seconds = timed_verify(store, args.events)
            print(f"   warm-up verify: ok, {args.events:,} events in {seconds:.2f} s")
            rates = [args.events / timed_verify(store, args.events) for _ in range(args.repeats)]
            rate = max(rates)
            print(f"   store.verify(), best of {args.repeats}: {rate:,.0f} events/s"
                  f" (runs: {', '.join(f'{r:,.0f}' for r in rates)})")
            if not args.no_profile:
                print_profile("store.verify()", lambda: store.verify())
            print(result_line("verify_events_per_s", rate, "events/s", TARGET))
        finally:
            store.close()


if __name__ == "__main__":
    main()
