"""``ledger rebuild``'s work apart from its options: serialised runs, a progress bar on
a terminal (a line a second otherwise), and the summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from app.cli.output import fail
from eventstore.store import EventStore
from projections.rebuild import RebuildFoldFailed, RebuildReport, RebuildRunning
from projections.rebuild import rebuild as rebuild_once

Progressed = Callable[[int, int], None]


def rebuild_serialised(
    store: EventStore, names: Sequence[str], wait: bool, progress: Progressed
) -> RebuildReport:
    """One rebuild; another one running makes this wait (said on stderr) or exit 1."""

    def waiting() -> None:
        print("waiting for the rebuild already running…", file=sys.stderr, flush=True)

    try:
        return rebuild_once(store, names, wait=wait, on_wait=waiting, progress=progress)
    except RebuildRunning:
        fail(
            "another rebuild is running on this database; run again when it has"
            " finished, or without --no-wait to wait for it"
        )
    except RebuildFoldFailed as failed:
        fail(
            f"rebuild stopped, nothing was swapped in: {failed};"
            " fix the fold and run `ledger rebuild` again"
        )


@contextmanager
def progress_bar(console: Console, names: Sequence[str]) -> Iterator[Progressed]:
    """A Rich bar of events folded out of the log's head, with the rate."""
    started = time.monotonic()
    with Progress(
        TextColumn("rebuilding " + ", ".join(names)),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
        TextColumn("{task.fields[rate]:,.0f} events/s"),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        task = bar.add_task("rebuild", total=None, rate=0.0)

        def show(position: int, head: int) -> None:
            rate = position / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=position, total=max(head, position), rate=rate)

        yield show


def progress_lines(quiet: bool) -> Progressed:
    """A ``rebuild: n/head events`` line at most once a second (none when ``quiet``)."""
    last_print = [0.0]

    def plain(position: int, head: int) -> None:
        now = time.monotonic()
        if now - last_print[0] >= 1.0 and not quiet:
            last_print[0] = now
            print(f"rebuild: {position}/{head} events", flush=True)

    return plain


def summary(report: RebuildReport) -> dict[str, Any]:
    return {
        "projections": list(report.names),
        "events": report.events,
        "position": report.position,
        "rows": report.rows,
        "seconds": round(report.seconds, 3),
        "events_per_second": round(report.events_per_second),
    }
