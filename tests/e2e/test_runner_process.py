"""`ledger serve` runs the projection runner in a process of its own: not in the HTTP
workers, one leader across instances, restarted when it dies, gone when serve is."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from app.sim.connect import KeyServer, SimulatedHost, make_install_payload
from projections.health import RunnerHealth, StateFile
from tests.harness import ADMIN_TOKEN, ledger_serve

T = TypeVar("T")
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def until(check: Callable[[], T | None], what: str, seconds: float = 30) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


class Serve:
    """A real `ledger serve` process and what a test reads of it."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, var_dir: Path) -> None:
        self.process = process
        self.url = url
        self.var_dir = var_dir

    def runner(self) -> dict[str, Any]:
        # A new connection per request: the kernel may hand it to any worker.
        answer = httpx.get(f"{self.url}/readyz", timeout=10)
        assert answer.status_code == 200, answer.text
        runner: dict[str, Any] = answer.json()["runner"]
        return runner

    def runner_where(self, what: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        return until(lambda: r if check(r := self.runner()) else None, what)

    def children(self) -> list[int]:
        """The serve's child processes (workers, runner, multiprocessing's helper)."""
        tasks = Path(f"/proc/{self.process.pid}/task")  # each thread lists its own children
        return [
            int(pid) for task in tasks.iterdir() for pid in (task / "children").read_text().split()
        ]

    def worker_pids(self) -> set[int]:
        """Processes that served HTTP: each one's histogram file in the metrics directory
        (the runner process writes none: it has no latency to observe)."""
        [directory] = self.var_dir.glob("metrics-*")
        return {int(p.stem.rpartition("_")[2]) for p in directory.glob("histogram_*.db")}


@contextmanager
def serve(store_url: str, var_dir: Path, keys: KeyServer, workers: int) -> Iterator[Serve]:
    """`ledger serve`, ready (the suite's one launcher); stopped by its PID on the way out."""
    master = base64.b64encode(b"k" * 32).decode()
    with ledger_serve(store_url, var_dir, keys.url, workers, master_key=master) as served:
        yield Serve(served.process, served.url, var_dir)


def install(url: str, host: SimulatedHost, count: int) -> set[str]:
    keys = set()
    for _ in range(count):
        payload = make_install_payload()
        call = host.lifecycle_call("installed", payload, app_base_url=url)
        answer = httpx.post(
            f"{url}{call.url_path_with_query}", content=call.body, headers=call.headers, timeout=10
        )
        assert answer.status_code == 204, answer.text
        keys.add(payload["clientKey"])
    return keys


def listed_tenants(url: str) -> set[str]:
    answer = httpx.get(f"{url}/admin/tenants", headers=ADMIN, params={"limit": 200}, timeout=10)
    return {tenant["client_key"] for tenant in answer.json()["tenants"]}


def gone(pid: int) -> bool:
    """Whether the process has ended (a zombie waiting for its parent counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def test_the_runner_is_a_process_of_its_own_and_ends_with_serve(
    store_url: str, tmp_path: Path
) -> None:
    # With one worker uvicorn serves in the serve process itself; with two, in children.
    count = 2 if store_url.startswith("postgresql") else 1
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        with serve(store_url, tmp_path, keys, workers=count) as service:
            first = service.runner_where(
                "the runner process leads", lambda r: r["role"] == "leader"
            )
            runner_pid = first["pid"]
            assert parent_of(runner_pid) == service.process.pid
            assert Path(f"/proc/{runner_pid}/comm").read_text().strip() == "ledger-runner"
            clients = install(service.url, host, 20)
            until(lambda: listed_tenants(service.url) == clients or None, "read models catch up")
            caught_up = service.runner_where(
                "the runner reports the head folded",
                lambda r: (r["head"] or 0) >= len(clients) and r["lag_events"] == 0,
            )
            workers = service.worker_pids()
            assert len(workers) == count and runner_pid not in workers
            assert (workers - {service.process.pid}) | {runner_pid} <= set(service.children())
            # Every worker shows the one runner process's state.
            seen = {service.runner()["pid"] for _ in range(10)}
            assert seen == {runner_pid} and caught_up["role"] == "leader"
            assert caught_up["failures"] == 0 and caught_up["last_error"] is None
            # The runner process's metrics are in every scrape, with one worker too.
            scrape = httpx.get(f"{service.url}/metrics", timeout=10).text.splitlines()
            assert "ledger_projection_runner_leader 1.0" in scrape
            service.process.terminate()
            assert service.process.wait(timeout=60) == 0
        assert gone(runner_pid)
        assert not list(tmp_path.glob("metrics-*"))


def test_a_second_serve_on_the_same_database_stands_by(
    postgres_databases: Any, tmp_path: Path
) -> None:
    store_url = postgres_databases.create()
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        with serve(store_url, tmp_path / "a", keys, workers=1) as a:
            a.runner_where("the first serve's runner leads", lambda r: r["role"] == "leader")
            with serve(store_url, tmp_path / "b", keys, workers=1) as b:
                standby = b.runner_where("the second runner reports", lambda r: r["pid"])
                assert standby["role"] == "standby"  # the first one still leads
                assert a.runner()["role"] == "leader"
                clients = install(b.url, host, 5)
                for service in (a, b):
                    until(lambda s=service: listed_tenants(s.url) == clients or None, "caught up")
                assert b.runner()["role"] == "standby"
                a.process.terminate()
                assert a.process.wait(timeout=60) == 0
                # Its runner let go of the leadership as it stopped: the other one leads.
                b.runner_where("the second runner takes over", lambda r: r["role"] == "leader")
                more = install(b.url, host, 3)
                until(lambda: listed_tenants(b.url) == clients | more or None, "caught up again")


def test_a_dead_runner_process_is_restarted_and_a_killed_serve_leaves_none(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        with serve(store_url, tmp_path, keys, workers=1) as service:
            first = service.runner_where("the runner leads", lambda r: r["role"] == "leader")
            os.kill(first["pid"], signal.SIGKILL)
            second = service.runner_where(
                "a new runner process leads",
                lambda r: r["pid"] != first["pid"] and r["role"] == "leader",
            )
            # /readyz keeps the death on record after the restart.
            assert second["failures"] == 1
            assert second["last_error"]["type"] == "RunnerProcessDied"
            assert "killed by signal 9" in second["last_error"]["message"]
            clients = install(service.url, host, 3)
            until(lambda: listed_tenants(service.url) == clients or None, "read models catch up")

            children = service.children()
            assert second["pid"] in children
            os.kill(service.process.pid, signal.SIGKILL)
            service.process.wait(timeout=10)
            try:
                until(lambda: gone(second["pid"]) or None, "the runner process ends by itself")
            finally:
                # uvicorn's workers outlive a killed parent (not ours to fix here).
                for pid in children:
                    if not gone(pid):
                        os.kill(pid, signal.SIGTERM)


def test_serve_without_projections_starts_no_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_RUN_PROJECTIONS", "false")
    with KeyServer() as keys, serve(f"sqlite:///{tmp_path / 'l.db'}", tmp_path, keys, 1) as service:
        assert service.runner()["role"] == "stopped" and service.runner()["pid"] is None
        assert not list(tmp_path.glob("metrics-*"))  # one process: metrics in memory


def test_the_state_file_tells_a_dead_runner_and_keeps_its_death_on_record(
    tmp_path: Path,
) -> None:
    state = StateFile(tmp_path / "projection-runner.json")
    assert state.status()["role"] == "stopped" and state.status()["pid"] is None
    dead = subprocess.Popen(["true"])
    dead.wait()
    leader = RunnerHealth()
    leader.set_role("leader")
    state.publish(leader.snapshot() | {"pid": dead.pid})
    assert (state.last() or {}).get("role") == "leader"
    assert state.status()["role"] == "stopped"  # its process is gone
    state.process_failed(dead.pid, -9, 0.5)
    after = state.status()
    assert after["failures"] == after["consecutive_failures"] == 1
    assert after["last_error"]["type"] == "RunnerProcessDied"
    earlier = state.carried_over()
    state.publish(leader.snapshot(), earlier)  # the next runner process, healthy so far
    now = state.status()
    assert now["role"] == "leader" and now["pid"] == os.getpid()
    assert now["failures"] == 1 and now["consecutive_failures"] == 0
    assert now["last_error"]["type"] == "RunnerProcessDied"
