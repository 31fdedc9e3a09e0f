"""The projection runner in a process of its own, started and kept running by `ledger serve`.

Folding the log into the read models costs CPU, and in a worker it also holds the GIL that
ingestion needs: under `ledger serve` the runner (``projections.runner.RunnerThread``,
unchanged: leader or hot standby, batch reads, backoff, leadership released on failure)
runs here instead, and the HTTP workers run none.

What the workers see: this process publishes the runner's snapshot a few times a second
in a state file (``projections.health.StateFile``, in the serve's run directory), which
their ``/readyz`` reads; its metrics go to the serve's shared prometheus-client directory,
so a scrape of any worker sums them in.

How it ends: when its parent closes the stop pipe (serve is stopping) or dies (the kernel
closes the pipe then: a killed `ledger serve` never leaves its runner behind), or on
SIGTERM: exit code 0. SIGINT is ignored: Ctrl-C reaches the whole process group, and the
parent stops the workers first, then this process. Exit code 1 when the runner thread
ended by itself or the store could not be opened; the parent restarts it with backoff.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Final

from app.bootstrap import service_store, start_runner, store_for
from app.logs import configure_logging
from app.metrics import WebhookMetrics, runner_process_health
from app.settings import Settings
from projections.health import StateFile, short_message

if TYPE_CHECKING:
    from app.licenses.periodic import LicenseChecks
    from app.outbound.worker import RunnerWithDeliveries
    from app.queries.readiness import RunnerView

log = logging.getLogger("ledger.projections")

PROCESS_NAME: Final = b"ledger-runner"
PR_SET_NAME: Final = 15  # <linux/prctl.h>
RUNNER_CONNECTIONS: Final = 4
# How often the snapshot is published: what /readyz may lag behind the runner by.
PUBLISH_SECONDS: Final = 0.25
RUNNER_NICENESS: Final = 10
# After a batch, how long appends may gather before the next (the runner's CPU per event
# falls as batches grow; SPEC §9 allows a projection lag of 1 s).
GATHER_SECONDS: Final = 0.1


def run(stop_pipe: Connection) -> None:
    """The process's entry point (a 'spawn' process: nothing inherited but the pipe)."""
    _name_process(PROCESS_NAME)
    with contextlib.suppress(OSError):
        # Background work: when the cores are busy, the HTTP workers go first (the
        # projections may lag by up to a second, SPEC §9; a caller waits on a worker).
        os.nice(RUNNER_NICENESS)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signal, _frame: stop.set())
    threading.Thread(
        target=_until_parent_lets_go, args=(stop_pipe, stop), name="parent-watch", daemon=True
    ).start()
    settings = Settings()
    configure_logging(settings.log_level)
    if not serve_projections(settings, stop):
        sys.exit(1)


def _name_process(name: bytes) -> None:
    """Show the process as ``name`` in ps and /proc/<pid>/comm (Linux), so it can be told
    apart from the workers, whose command line is the same ('spawn')."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def _until_parent_lets_go(pipe: Connection, stop: threading.Event) -> None:
    with contextlib.suppress(EOFError, OSError):
        pipe.recv()  # nothing is ever sent: this returns when the other end closes
    stop.set()


def serve_projections(settings: Settings, stop: threading.Event) -> bool:
    """Run the projections until ``stop``; whether they ended as asked."""
    if settings.projection_state_file is None:
        raise RuntimeError("the runner process needs LEDGER_PROJECTION_STATE_FILE")
    state = StateFile(settings.projection_state_file)
    earlier = state.carried_over()  # /readyz keeps counting this serve's runner deaths
    health, exiting = runner_process_health()
    try:
        # One thread uses it: a reading cursor and a writing transaction at most at once.
        store = service_store(
            settings,
            # and one more for each webhook URL's deliverer (app.outbound).
            max_connections=RUNNER_CONNECTIONS + len(settings.webhook_url_list),
        )
    except Exception as error:
        log.error(f"the projection runner process cannot open the store: {short_message(error)}")
        exiting()
        return False
    thread = start_runner(
        settings, store, health, WebhookMetrics(None), gather_seconds=GATHER_SECONDS
    )
    view, checks = _with_license_checks(settings, thread)
    try:
        while not stop.wait(PUBLISH_SECONDS) and thread.is_alive():
            state.publish(view.status(), earlier)
        return stop.is_set()
    finally:
        if checks is not None:
            checks.stop()
            checks.store.close()
        thread.stop()
        state.publish(view.status(), earlier)  # its last word: stopped
        store.close()
        exiting()


def _with_license_checks(
    settings: Settings, thread: RunnerWithDeliveries
) -> tuple[RunnerView, LicenseChecks | None]:
    """The license checks (SPEC §11) beside the runner, asking only while it leads, on a
    store of their own (the runner's connections are the runner's)."""
    from app.licenses.periodic import RunnerWithChecks, license_checks_for
    from app.metrics import LicenseCheckMetrics

    if settings.license_check_hours <= 0:
        return thread, None
    try:
        checks = license_checks_for(
            settings,
            store_for(settings, max_connections=2, existing=True),
            lambda: thread.role == "leader",
            LicenseCheckMetrics(None),
        )
    except Exception as error:  # the check is an extra: the projections run regardless
        log.error(f"the license checks cannot start: {short_message(error)}")
        return thread, None
    if checks is None:
        return thread, None
    return RunnerWithChecks(thread, checks), checks
