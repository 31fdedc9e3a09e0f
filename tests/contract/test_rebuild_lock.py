"""Rebuilds are serialised (issue 8 item 7): a second `ledger rebuild` waits for the
running one, or with --no-wait exits 1; either way no empty or half-built table is
ever swapped into service, on both stores."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from eventstore import open_store
from eventstore.store import EventStore
from projections.backends import lock_for, storage_for
from projections.registry import PROJECTIONS, chunks
from projections.runner import ProjectionRunner
from projections.storage.tables import SPECS
from tests.contract.test_runner import snapshot
from tests.log_builder import append_random_calls

LEDGER = str(Path(sys.executable).parent / "ledger")

# A rebuild that holds the lock and then stops mid-fold until the test lets it go on.
HELD_REBUILD = (
    "import os, sys, time\n"
    "from eventstore import open_store\n"
    "from projections.rebuild import rebuild\n"
    "go = sys.argv[2]\n"
    "def hold(position, head):\n"
    "    print('progress', position, flush=True)\n"
    "    while not os.path.exists(go):\n"
    "        time.sleep(0.02)\n"
    "rebuild(open_store(sys.argv[1]), batch_size=50, progress=hold)\n"
)


def folded(store: EventStore) -> dict[str, list[Any]]:
    """The read models as a fold of the whole log in memory, sorted like ``snapshot``."""
    states = {name: PROJECTIONS[name].initial_state() for name in SPECS}
    for batch in chunks(store.read_all(0, 500), 500):
        for name in SPECS:
            states[name] = PROJECTIONS[name].apply_many(states[name], batch)
    return {
        name: sorted(
            states[name].drain_changes(),
            key=lambda r: tuple(str(getattr(r, f)) for f in r.__struct_fields__),
        )
        for name in SPECS
    }


def _start_held_rebuild(url: str, go: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", HELD_REBUILD, url, str(go)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith("progress")  # it holds the lock now
    return process


def _ledger(url: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, LEDGER_DATABASE_URL=url)
    return subprocess.Popen(
        [LEDGER, "rebuild", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _log_with_read_models(url: str) -> int:
    with open_store(url) as store:
        append_random_calls(store, random.Random(8), 250, tenants=40)
        ProjectionRunner(store).run_once()
        return storage_for(store).count("tenants")


def test_a_second_rebuild_waits_and_only_whole_tables_are_ever_served(
    store_url: str, tmp_path: Path
) -> None:
    tenants = _log_with_read_models(store_url)
    go = tmp_path / "go"
    first = _start_held_rebuild(store_url, go)
    second = _ledger(store_url, "--json")
    try:
        assert second.stderr is not None
        assert "waiting for the rebuild already running" in second.stderr.readline()
        go.write_text("go")
        with open_store(store_url) as store:
            storage = storage_for(store)
            # While both run, the live table is never empty or partial (the log only grows).
            while first.poll() is None or second.poll() is None:
                assert storage.count("tenants") >= tenants
        assert first.wait(timeout=60) == 0
        assert second.wait(timeout=60) == 0, second.stderr.read()
        with open_store(store_url) as store:
            assert snapshot(store) == folded(store)
            assert set(storage_for(store).checkpoints().values()) == {store.head().position}
    finally:
        go.write_text("go")
        for process in (first, second):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


def test_no_wait_exits_1_with_a_clear_message_while_a_rebuild_runs(
    store_url: str, tmp_path: Path
) -> None:
    _log_with_read_models(store_url)
    go = tmp_path / "go"
    first = _start_held_rebuild(store_url, go)
    try:
        refused = _ledger(store_url, "--no-wait")
        _, err = refused.communicate(timeout=60)
        assert refused.returncode == 1
        assert "another rebuild is running" in err and "--no-wait" in err
        go.write_text("go")
        assert first.wait(timeout=60) == 0
    finally:
        go.write_text("go")
        if first.poll() is None:
            first.kill()
        first.wait(timeout=30)
    after = _ledger(store_url, "--no-wait")  # nothing runs now: it rebuilds at once
    assert after.wait(timeout=60) == 0
    with open_store(store_url) as store:
        assert snapshot(store) == folded(store)
        assert set(storage_for(store).checkpoints().values()) == {store.head().position}


def test_the_rebuild_lock_is_exclusive_within_a_process_and_separate_from_leadership(
    store: EventStore,
) -> None:
    one, two, runner = (
        lock_for(store, "rebuild"),
        lock_for(store, "rebuild"),
        lock_for(store, "runner"),
    )
    try:
        assert one.try_acquire() and one.try_acquire()  # idempotent while held
        assert not two.try_acquire()
        assert runner.try_acquire()  # rebuilding does not stop the runner (it waits at the swap)
        one.release()
        assert two.try_acquire()
    finally:
        for lock in (one, two, runner):
            lock.release()


def test_a_waiting_rebuild_takes_over_when_the_running_one_is_killed(
    store_url: str, tmp_path: Path
) -> None:
    _log_with_read_models(store_url)
    first = _start_held_rebuild(store_url, tmp_path / "never")
    second = _ledger(store_url)
    try:
        assert second.stderr is not None
        assert "waiting for the rebuild already running" in second.stderr.readline()
        first.kill()  # SIGKILL mid-fold: the lock dies with the process
        first.wait(timeout=30)
        assert second.wait(timeout=60) == 0, second.stderr.read()
        with open_store(store_url) as store:
            assert snapshot(store) == folded(store)
            assert set(storage_for(store).checkpoints().values()) == {store.head().position}
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
