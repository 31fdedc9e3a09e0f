"""The cyclic garbage collector set for a serving process.

A full collection walks every tracked object: a started worker holds ~100,000 of them
(modules, FastAPI's routes and models, pydantic's schemas), and walking them takes
~50 ms on a busy core, every call in flight waiting meanwhile. Under load such pauses
came every few seconds and made the ingestion's p99 (bench/README.md, "The tail").
None of those objects is ever garbage, so once the process has started they are moved
out of the collector's sight (``gc.freeze``), and the first generation's threshold is
raised so that the objects of the calls in flight are seldom promoted to the older
generations by a collection that happens while they are still alive (they die young,
by reference counting, and never need the collector).
"""

from __future__ import annotations

import gc
from typing import Final

# gc.set_threshold's three numbers for a serving process (CPython's defaults: 700, 10, 10).
SERVING_THRESHOLDS: Final = (20_000, 20, 10)


def settle() -> None:
    """Collect what start-up left behind, freeze the rest, and collect less often: once
    a process is ready to serve, before its first call."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
