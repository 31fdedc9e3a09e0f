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
from app.settings import Settings

METRICS_DIR_PREFIX: Final = "metrics-"


@contextmanager
def metrics_directory(workers: int, settings: Settings) -> Iterator[Path | None]:
    """A per-run metrics directory for ``workers`` processes (None for one process,
    whose metrics stay in memory). Under ``LEDGER_VAR_DIR`` when that is set, else in
    the system's temporary directory (the default ``./var`` may not be writable where
    the store is PostgreSQL). An inherited ``PROMETHEUS_MULTIPROC_DIR`` is replaced for
    the run, then restored."""
    if workers <= 1:
        yield None
        return
    parent = settings.var_dir if "var_dir" in settings.model_fields_set else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=parent))
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
