"""Pure-fold cost of the four projections, with no database: how many events per
second the folds themselves take, so the rebuild budget (SPEC §9: 1,000,000 events
at >= 200,000 events/s including reading) knows what is left for I/O.

Builds 1,000,000 ``RecordedEvent``s in memory first from the product's synthetic log
(``eventstore.testing.synthetic.RandomLog``, ~250,000 tenants: tenants install, most later
calls confirm, descriptors upgrade, some secrets rotate, some sites rename, uninstall,
reinstall or are reimported), then folds them through all four projections the way the runner
does during a rebuild (batches of 1,000, ``apply_many`` per projection, all changed
rows taken at the end), and also one ``apply`` call per event. For scale it also
times a bare dict lookup per event by stream id in a dict of all tenants: every
fold needs at least that, and at this size its cost is memory latency, which
differs a lot between machines (and with whatever else the machine is running).

Prints the figure as ``RESULT fold_all_events_per_s <n> events/s target 400000
ratio <r>`` (best of ``--repeat`` runs: the fold's cost is the minimum, the rest is
other load on the machine).

Run: ``.venv/bin/python bench/fold_micro.py [--events N] [--tenants N] [--repeat N]``
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _benchkit import cpu_model, load_average, result_line

from eventstore.events import SCHEMA_VERSIONS
from eventstore.testing.synthetic import RandomLog, Synthetic, chain_rows, decoded
from eventstore.values import RecordedEvent
from projections.base_urls import BaseUrlsProjection
from projections.descriptors import DescriptorsProjection
from projections.reimports import ReimportsProjection
from projections.tenants import TenantsProjection

TARGET = 400_000  # events/s for all four folds together (the brief's budget)
BATCH = 1_000
HASH = "0" * 64


def build_log(n_events: int, n_tenants: int, seed: int = 7) -> list[Synthetic]:
    """The product's synthetic log (``eventstore.testing.synthetic.RandomLog``)."""
    log = RandomLog(seed=seed, new_tenant_share=n_tenants / n_events, reuse_share=0.01,
                    vacated_share=0.4)
    return list(log.events(n_events))


def as_read(log: list[Synthetic]) -> list[RecordedEvent]:
    """Events as a reader yields them: encoded, chained and decoded by the store's own
    code, so every event has fresh strings, dicts and structs scattered in memory, and
    dict lookups by stream id compare characters instead of stopping at identity."""
    return list(decoded(chain_rows(log)))


def as_shared(log: list[Synthetic]) -> list[RecordedEvent]:
    """The same events sharing their objects (one stream id string per tenant): a best
    case, e.g. ids interned."""
    return [
        RecordedEvent(n, e.stream_id, e.version, type(e.data).__name__,
                      SCHEMA_VERSIONS[type(e.data).__name__], e.data, e.metadata,
                      e.recorded_at, HASH)
        for n, e in enumerate(log, start=1)
    ]  # fmt: skip


def projections() -> list[Any]:
    return [
        TenantsProjection(),
        DescriptorsProjection(),
        BaseUrlsProjection(),
        ReimportsProjection(),
    ]


def fold_batched(batches: Sequence[list[RecordedEvent]], folds: Sequence[Any]) -> list[Any]:
    """What a rebuild does: every batch through every fold, all rows taken at the end.
    Returns the rows each fold handed over."""
    states = [p.initial_state() for p in folds]
    for batch in batches:
        for i, p in enumerate(folds):
            states[i] = p.apply_many(states[i], batch)
    return [state.take_changes() for state in states]


def fold_one_by_one(events: Sequence[RecordedEvent], folds: Sequence[Any]) -> None:
    states = [p.initial_state() for p in folds]
    appliers = [p.apply for p in folds]
    for event in events:
        for i, apply in enumerate(appliers):
            states[i] = apply(states[i], event)
    for state in states:
        state.take_changes()


def best_rate(label: str, run: Callable[[], Any], n: int, repeat: int) -> float:
    """Best of ``repeat`` runs: the machine may be shared, the fold's cost is the minimum."""
    times = []
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    best = min(times)
    print(
        f"  {label:<44} best {best:6.3f} s {n / best:>11,.0f} events/s"
        f"   (median {sorted(times)[len(times) // 2]:.3f} s of {repeat})"
    )
    return n / best


def rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(events: list[RecordedEvent], repeat: int, detail: bool) -> float:
    n = len(events)
    batches = [events[i : i + BATCH] for i in range(0, n, BATCH)]
    gc.collect()
    gc.freeze()  # the prebuilt log is input, not part of the fold's cost
    if detail:
        before = rss_mb()
        rows = fold_batched(batches, projections())
        print(
            "  rows handed over: "
            + ", ".join(f"{p.name} {len(r):,}" for p, r in zip(projections(), rows, strict=True))
            + f"; +{rss_mb() - before:,.0f} MB RSS for fold states and rows (they share the"
            " log's strings and datetimes)"
        )
        del rows
        index = {e.stream_id: None for e in events}

        def lookups() -> None:
            get = index.get
            for event in events:
                get(event.stream_id)

        best_rate("floor: one dict lookup by stream id", lookups, n, repeat)
        del index
        for projection in projections():
            best_rate(
                f"{projection.name} alone", partial(fold_batched, batches, [projection]), n, repeat
            )
        best_rate(
            "all four, apply() per event", lambda: fold_one_by_one(events, projections()), n, repeat
        )
    if detail:
        own = [
            [[e for e in batch if e.type in p.event_types] for batch in batches]
            for p in projections()
        ]

        def fold_own_types() -> None:
            for p, batches_of_p in zip(projections(), own, strict=True):
                fold_batched(batches_of_p, [p])

        best_rate("all four, each fed only its event_types", fold_own_types, n, repeat)
        del own
    rate = best_rate(
        "all four, apply_many() per batch of 1,000",
        lambda: fold_batched(batches, projections()),
        n,
        repeat,
    )
    gc.unfreeze()
    return rate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--tenants", type=int, default=250_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    print("== fold_micro: the four projections' pure folds, in memory, no database")
    print(
        f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}, {platform.python_implementation()} {platform.python_version()}"
    )
    print(f"load average before the run (1/5/15 min): {load_average()}")
    start = time.perf_counter()
    log = build_log(args.events, args.tenants)
    events = as_read(log)
    n = len(events)
    mix = Counter(e.type for e in events)
    print(
        f"log: {n:,} events, {sum(1 for e in events if e.version == 1):,} tenants, built in "
        f"{time.perf_counter() - start:.1f} s; "
        + ", ".join(f"{t} {c / n:.1%}" for t, c in mix.most_common())
    )
    print("events as a reader decodes them (fresh strings and structs per event):")
    rate = measure(events, args.repeat, detail=True)
    del events
    print("events sharing their strings and structs (best case, e.g. stream ids interned):")
    measure(as_shared(log), args.repeat, detail=False)

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak_mb:,.0f} MB (includes the prebuilt in-memory log)")
    print(f"load average after the run (1/5/15 min): {load_average()}")
    print(result_line("fold_all_events_per_s", rate, "events/s", TARGET))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
