"""What ``ledger serve`` runs: uvicorn's workers (with one, uvicorn serves in the serve
process itself), and the projection runner in a process of its own beside them.

**The runner process.** Folding takes CPU and GIL time that ingestion needs, so the HTTP
workers run no runner: ``RunnerSupervisor`` starts ``app.serve.runner_process`` (a 'spawn'
process) and keeps it running. It restarts it after a crash or a kill, after a backoff
(0.5 s doubling to 30 s; the streak ends once a process has run for a minute), and stops
it when serve stops. A runner process that exits 0 was asked to stop (SIGTERM) and is
not restarted. Across instances nothing changes: each serve's runner process is one
candidate for the leadership lock, so two serves on one database still have one leader.

**Run directory.** With several processes, the metrics of each live in one shared
directory (``app.metrics``). The parent creates a fresh one for each run before any
child starts (they inherit ``PROMETHEUS_MULTIPROC_DIR``), so no count of an earlier run
leaks into this one, and removes it when the last child has stopped. The runner
process's state file (``projections.health.StateFile``) lives there too; the workers
find it through ``LEDGER_PROJECTION_STATE_FILE``, which also tells them to run no
runner thread themselves.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Final

from app.settings import MULTIPROC_ENV, Settings
from projections.health import StateFile, backoff_delay

# Nothing here imports prometheus-client at module level: it chooses between memory and
# files once, when first imported, and with one worker uvicorn serves in this process,
# which must import it only after PROMETHEUS_MULTIPROC_DIR is set.

log = logging.getLogger("ledger.serve")

METRICS_DIR_PREFIX: Final = "metrics-"
STATE_FILE_ENV: Final = "LEDGER_PROJECTION_STATE_FILE"
STATE_FILE_NAME: Final = "projection-runner.json"
# A runner process that ran this long ends a streak of crashes (the backoff restarts).
STABLE_SECONDS: Final = 60.0
STOP_SECONDS: Final = 15.0


@contextmanager
def metrics_directory(processes: int, settings: Settings) -> Iterator[Path | None]:
    """A per-run metrics directory for ``processes`` processes (None for one process,
    whose metrics stay in memory). Under ``LEDGER_VAR_DIR`` when that is set, else in
    the system's temporary directory (the default ``./var`` may not be writable where
    the store is PostgreSQL). An inherited ``PROMETHEUS_MULTIPROC_DIR`` is replaced for
    the run, then restored."""
    if processes <= 1:
        yield None
        return
    parent = settings.var_dir if "var_dir" in settings.model_fields_set else None
    if parent is not None:
        parent.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX, dir=parent))
    try:
        with _environment(MULTIPROC_ENV, str(directory)):
            yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name`` set to ``value`` for the processes started meanwhile, then restored."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def run_service(host: str, port: int, workers: int, settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM: ``workers`` HTTP processes (one: uvicorn serves in
    this process), plus the projection runner's own process unless
    ``LEDGER_RUN_PROJECTIONS`` is false."""
    import uvicorn

    processes = workers + (1 if settings.run_projections else 0)
    # uvicorn re-raises a SIGTERM it handled once it has shut down: then end through
    # the cleanup below (the runner stopped, the directory removed), not at once.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    with metrics_directory(processes, settings) as directory, ExitStack() as running:
        if settings.run_projections and directory is not None:
            _check_metrics_mode(directory)
            state_file = directory / STATE_FILE_NAME
            running.enter_context(_environment(STATE_FILE_ENV, str(state_file)))
            running.callback(RunnerSupervisor(state_file, directory).start().stop)
        uvicorn.run(
            # The app, its collector settled once it is built (app.serve.worker).
            "app.serve.worker:serving_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            # Access logs would print query strings, and a token may travel as ?jwt=.
            access_log=False,
            log_level="warning",
            proxy_headers=False,
        )


def _exit_on_sigterm(_signal: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def _check_metrics_mode(directory: Path) -> None:
    """With one worker, this process serves: its metrics must go to ``directory`` too,
    or a scrape would miss the runner process's."""
    from app.metrics import multiprocess_directory

    if multiprocess_directory() != directory:
        raise RuntimeError(f"prometheus-client was imported before {MULTIPROC_ENV} was set")


class RunnerSupervisor:
    """Starts the runner process, restarts it when it dies, stops it on ``stop()``."""

    def __init__(self, state_file: Path, metrics_dir: Path) -> None:
        self.state = StateFile(state_file)
        self.metrics_dir = metrics_dir
        self._spawn_context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()  # no process starts once stop() has begun
        self._stopping = threading.Event()
        self._process: BaseProcess | None = None
        self._stop_pipe: Connection | None = None
        self._thread = threading.Thread(target=self._supervise, name="runner-supervisor")
        self._thread.daemon = True

    def start(self) -> RunnerSupervisor:
        self._thread.start()
        return self

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        """Ask the runner process to stop (it releases the leadership) and wait for it;
        SIGTERM, then SIGKILL, if it does not stop in time. Only the supervising thread
        joins the process (two joiners would race to reap it)."""
        with self._lock:
            self._stopping.set()
            process = self._process
            if self._stop_pipe is not None:
                self._stop_pipe.close()  # the runner process sees the pipe end and stops
        self._thread.join(timeout)
        if process is not None and self._thread.is_alive():
            log.warning(f"the projection runner process {process.pid} did not stop; ending it")
            process.terminate()
            self._thread.join(5)
            if self._thread.is_alive():
                process.kill()
                self._thread.join()

    def _spawn(self) -> tuple[BaseProcess, Connection] | None:
        with self._lock:
            if self._stopping.is_set():
                return None
            from app.serve import runner_process

            receive, send = self._spawn_context.Pipe(duplex=False)
            process = self._spawn_context.Process(
                target=runner_process.run, args=(receive,), name="ledger-projections"
            )
            process.daemon = True  # multiprocessing ends it if this process exits first
            process.start()
            receive.close()  # only the child reads; this process holds the end that stops it
            self._process, self._stop_pipe = process, send
            return process, send

    def _supervise(self) -> None:
        failures = 0
        while (spawned := self._spawn()) is not None:
            process, pipe = spawned
            started = time.monotonic()
            process.join()
            with self._lock:
                if self._stopping.is_set():
                    return
                pipe.close()
            assert process.pid is not None and process.exitcode is not None  # it ran and ended
            _metrics_of_dead_process(process.pid, self.metrics_dir)
            if process.exitcode == 0:
                log.warning(
                    f"the projection runner process {process.pid} was stopped; not restarted"
                )
                return
            failures = 1 if time.monotonic() - started >= STABLE_SECONDS else failures + 1
            delay = backoff_delay(failures)
            self.state.process_failed(process.pid, process.exitcode, delay)
            log.error(
                f"the projection runner process {process.pid} died (exit code"
                f" {process.exitcode}); restarting in {delay:.1f} s (failure {failures})"
            )
            if self._stopping.wait(delay):
                return


def _metrics_of_dead_process(pid: int, directory: Path) -> None:
    """Its live gauges (leader, lag) leave the sum; its counters stay."""
    from prometheus_client.multiprocess import mark_process_dead

    mark_process_dead(pid, str(directory))
