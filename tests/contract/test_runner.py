"""The projection runner and rebuild (SPEC §6), on every store."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import open_store
from eventstore.store import EventStore
from projections.backends import storage_for
from projections.model import BaseUrlRow, DescriptorRow
from projections.rebuild import rebuild, with_dependencies
from projections.runner import Leadership, ProjectionRunner, RunnerThread, wait_for_position
from projections.storage.tables import SPECS
from tests.log_builder import append_random_calls


def snapshot(store: EventStore) -> dict[str, list[Any]]:
    storage = storage_for(store)
    return {
        name: sorted(
            storage.load_rows(name),
            key=lambda r: tuple(str(getattr(r, f)) for f in r.__struct_fields__),
        )
        for name in SPECS
    }


def test_runner_folds_new_events_and_resumes_after_a_restart(store: EventStore) -> None:
    rng = random.Random(7)
    append_random_calls(store, rng, 60)
    first = ProjectionRunner(store)
    assert first.run_once() == store.head().position
    assert first.run_once() == 0
    append_random_calls(store, rng, 40)
    # A new runner (a restart) resumes from the persisted rows and checkpoints.
    second = ProjectionRunner(store)
    second.run_once()
    assert set(storage_for(store).checkpoints().values()) == {store.head().position}
    incremental = snapshot(store)
    rebuild(store)
    assert snapshot(store) == incremental
    assert incremental["tenants"], "the log produced tenants"


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(seed=st.integers(0, 2**32), cuts=st.lists(st.integers(1, 40), min_size=1, max_size=4))
def test_incremental_runs_equal_a_full_rebuild(
    seed: int, cuts: list[int], store_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A fresh database per example.
    if store_url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / f'h{time.monotonic_ns()}.db'}"
    else:
        url = request.getfixturevalue("postgres_databases").create()
    rng = random.Random(seed)
    with open_store(url) as store:
        runner = ProjectionRunner(store, batch_size=7)
        for calls in cuts:
            append_random_calls(store, rng, calls)
            runner.run_once()
        incremental = snapshot(store)
        rebuild(store, batch_size=5)
        assert snapshot(store) == incremental


def test_rebuild_while_events_are_appended(store_url: str) -> None:
    with open_store(store_url) as store:
        append_random_calls(store, random.Random(1), 300, tenants=40)
        ProjectionRunner(store).run_once()
        stop = threading.Event()

        def writer() -> None:
            with open_store(store_url) as own:
                rng = random.Random(2)
                while not stop.is_set():
                    append_random_calls(own, rng, 5, tenants=40)

        thread = threading.Thread(target=writer)
        thread.start()
        try:
            time.sleep(0.2)
            report = rebuild(store)
            time.sleep(0.2)
        finally:
            stop.set()
            thread.join()
        runner = ProjectionRunner(store)
        runner.run_once()
        assert report.position >= 300
        after_swap = snapshot(store)
        rebuild(store)
        assert snapshot(store) == after_swap  # nothing lost, nothing counted twice
        assert set(storage_for(store).checkpoints().values()) == {store.head().position}


def test_runner_notices_a_rebuild_and_reloads(store: EventStore) -> None:
    rng = random.Random(3)
    append_random_calls(store, rng, 50)
    runner = ProjectionRunner(store)
    runner.run_once()
    append_random_calls(store, rng, 20)
    rebuild(store, ["tenants"])  # moves the tenants group's checkpoints under the runner
    append_random_calls(store, rng, 20)
    runner.run_once()  # stale: reloads instead of overwriting
    runner.run_once()
    current = snapshot(store)
    rebuild(store)
    assert snapshot(store) == current


def test_rebuild_names_bring_their_dependencies() -> None:
    assert with_dependencies(["tenants"]) == ("tenants", "descriptors")
    assert with_dependencies(["reimports"]) == ("base_urls", "reimports")
    assert with_dependencies([]) == tuple(SPECS)
    with pytest.raises(KeyError):
        with_dependencies(["nope"])


def test_rebuild_killed_halfway_leaves_the_live_tables_and_a_rerun_finishes(store_url: str) -> None:
    with open_store(store_url) as store:
        append_random_calls(store, random.Random(4), 200, tenants=30)
        ProjectionRunner(store).run_once()
        before = snapshot(store)
    env = dict(os.environ, LEDGER_DATABASE_URL=store_url)
    # Slow the rebuild down enough to kill it mid-fold: many small batches.
    script = (
        "import sys, time\n"
        "from eventstore import open_store\n"
        "from projections.rebuild import rebuild\n"
        "store = open_store(sys.argv[1])\n"
        "def slow(position, head):\n"
        "    print('progress', position, flush=True); time.sleep(0.05)\n"
        "rebuild(store, batch_size=5, progress=slow)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script, store_url], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    for _ in range(5):
        assert process.stdout.readline().startswith("progress")
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    with open_store(store_url) as store:
        assert snapshot(store) == before  # the live tables never saw the half-built ones
        report = rebuild(store)
        assert report.position == store.head().position
        assert snapshot(store) == before


def _runner_process(url: str, role_file: str, stop_file: str) -> None:
    thread = RunnerThread(
        open_store(url),
        poll_seconds=0.05,
        standby_seconds=0.2,
        on_state=lambda role: Path(role_file).write_text(role),
    )
    thread.start()
    while not Path(stop_file).exists():
        time.sleep(0.05)
    thread.stop()


def test_two_runners_one_active_and_the_standby_takes_over(store_url: str, tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    roles = [tmp_path / "a.role", tmp_path / "b.role"]
    stop = tmp_path / "stop"
    with open_store(store_url) as store:
        storage_for(store).ensure()
        first = context.Process(target=_runner_process, args=(store_url, str(roles[0]), str(stop)))
        first.start()
        deadline = time.monotonic() + 30
        while not (roles[0].exists() and roles[0].read_text() == "leader"):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = context.Process(target=_runner_process, args=(store_url, str(roles[1]), str(stop)))
        second.start()
        while not roles[1].exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert roles[1].read_text() == "standby"
        written = append_random_calls(store, random.Random(5), 30)
        assert wait_for_position(storage_for(store), store.head().position, 10)
        assert written > 0
        first.kill()  # the leader dies without cleaning up
        first.join()
        while roles[1].read_text() != "leader":
            assert time.monotonic() < deadline + 30, "the standby did not take over"
            time.sleep(0.05)
        append_random_calls(store, random.Random(6), 30)
        assert wait_for_position(storage_for(store), store.head().position, 10)
        stop.write_text("stop")
        second.join(timeout=20)
        assert second.exitcode == 0
        current = snapshot(store)
        rebuild(store)
        assert snapshot(store) == current


def test_leadership_is_exclusive_within_a_process_too(store: EventStore) -> None:
    one, two = Leadership(store), Leadership(store)
    try:
        assert one.acquire() is True
        assert two.acquire() is False
        one.release()
        assert two.acquire() is True
    finally:
        one.release()
        two.release()


def test_processes_starting_at_once_create_the_tables_once(store_url: str) -> None:
    """Several service workers call ensure() on a fresh database at the same moment."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            with open_store(store_url) as own:
                storage = storage_for(own)
                barrier.wait(timeout=60)
                storage.ensure()
        except BaseException as error:
            errors.append(error)
            barrier.abort()  # the others stop waiting: the test fails, it never hangs

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    with open_store(store_url) as store:
        assert set(storage_for(store).checkpoints()) == set(SPECS)


def test_a_batch_upserts_rows_in_one_go_last_version_of_a_key_wins(store: EventStore) -> None:
    """``commit_batch`` writes every changed row (PostgreSQL: one statement per table),
    replaces rows it wrote before, keeps NULLs, and moves only the named checkpoints."""
    storage = storage_for(store)
    storage.ensure()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    open_row = BaseUrlRow("https://a.example", "k1", t0, None, 1)
    other = BaseUrlRow("https://b.example", "k2", t0, None, 2)
    assert storage.commit_batch({"base_urls": 0}, {"base_urls": [open_row, other]}, {"base_urls": 2})
    closed = BaseUrlRow("https://a.example", "k1", t0, t0 + timedelta(days=1), 1)
    stale = DescriptorRow("1.0", t0, 1, 3)
    fresh = DescriptorRow("1.0", t0, 2, 3)
    changes = {"base_urls": [closed], "descriptors": [stale, fresh]}
    assert storage.commit_batch(
        {"base_urls": 2, "descriptors": 0}, changes, {"base_urls": 3, "descriptors": 3}
    )
    assert sorted(storage.load_rows("base_urls"), key=lambda r: r.base_url) == [closed, other]
    assert storage.load_rows("descriptors") == [fresh]
    checkpoints = storage.checkpoints()
    assert (checkpoints["base_urls"], checkpoints["descriptors"], checkpoints["tenants"]) == (
        3,
        3,
        0,
    )
    # A checkpoint moved by someone else: nothing is written.
    assert not storage.commit_batch({"base_urls": 2}, {"base_urls": [open_row]}, {"base_urls": 4})
    assert sorted(storage.load_rows("base_urls"), key=lambda r: r.base_url) == [closed, other]


def test_after_a_batch_the_runner_lets_appends_gather(store: EventStore) -> None:
    """``gather_seconds`` (the runner process's 0.1 s): after folding a batch the runner
    waits before the next, so what arrives meanwhile is folded as one batch; it is never
    a reason to stop folding."""
    storage = storage_for(store)
    storage.ensure()
    thread = RunnerThread(store, poll_seconds=0.05, gather_seconds=2.0).start()
    try:
        rng = random.Random(11)
        while store.head().position == 0:
            append_random_calls(store, rng, 3)
        first = store.head().position
        assert wait_for_position(storage, first, 10)  # folded at once
        while store.head().position == first:
            append_random_calls(store, rng, 3)
        second = store.head().position
        time.sleep(0.5)
        assert min(storage.checkpoints().values()) < second  # gathering, not folding
        assert wait_for_position(storage, second, 10)  # then folded, in one batch
    finally:
        thread.stop()
