"""What ``ledger serve`` sets up around uvicorn's worker processes.

With several workers, the metrics of every worker live in one shared directory
(``app.metrics``). The parent creates a fresh one for each run before the workers
start (they inherit ``PROMETHEUS_MULTIPROC_DIR``), so no count of an earlier run leaks
into this one, and removes it when the last worker has stopped.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from app.metrics import MULTIPROC_ENV

METRICS_DIR_PREFIX: Final = "metrics-"


@contextmanager
def metrics_directory(workers: int) -> Iterator[Path | None]:
    """A per-run metrics directory for ``workers`` processes (None for one process,
    whose metrics stay in memory). Under ``LEDGER_VAR_DIR`` when that is set, else in
    the system's temporary directory."""
    if workers <= 1:
        yield None
        return
    parent = os.environ.get("LEDGER_VAR_DIR")
    if parent:
        Path(parent).mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=parent or None))
    previous = os.environ.get(MULTIPROC_ENV)
    os.environ[MULTIPROC_ENV] = str(directory)
    try:
        yield directory
    finally:
        if previous is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous
        shutil.rmtree(directory, ignore_errors=True)
