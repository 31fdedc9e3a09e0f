"""Shared plumbing of the PostgreSQL benchmarks (``bench/*.py``).

What the run is on (CPU, cores, PostgreSQL version and durability settings), throw-away
databases with unique names, the one ``RESULT`` line format every figure ends with, a
synthetic log bulk-loaded through the store's own ``import_rows``, a cProfile summary,
and ``ledger serve`` started and stopped as a child process.
"""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import platform
import pstats
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from eventstore.store import EventStore
from eventstore.values import Head

if TYPE_CHECKING:
    from eventstore.testing.synthetic import RandomLog

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    """The maintenance database used to create and drop the benchmark's own databases."""
    return os.environ.get("LEDGER_BENCH_SERVER_URL", DEFAULT_SERVER_URL)


def database_url(name: str) -> str:
    base = server_url().rsplit("/", 1)[0]
    return f"{base}/{name}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def print_environment(title: str) -> dict[str, str]:
    """Print what the benchmark runs on; refuse to run unless fsync and synchronous_commit are on."""
    with psycopg.connect(server_url(), autocommit=True) as conn:
        settings: dict[str, str] = {}
        for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method",
                     "shared_buffers", "full_page_writes"):
            row = conn.execute(f"SHOW {name}").fetchone()
            settings[name] = str(row[0]) if row else "?"
        version_row = conn.execute("SELECT version()").fetchone()
    print(f"== {title}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} "
          f"{platform.release()}, Python {platform.python_version()}")
    print(f"load average before the run (1/5/15 min): {load_average()}")
    print(f"PostgreSQL: {version_row[0] if version_row else settings['server_version']}")
    print(
        f"SHOW fsync = {settings['fsync']}; SHOW synchronous_commit = "
        f"{settings['synchronous_commit']}; wal_sync_method = {settings['wal_sync_method']};"
        f" full_page_writes = {settings['full_page_writes']};"
        f" shared_buffers = {settings['shared_buffers']}"
    )
    if settings["fsync"] != "on" or settings["synchronous_commit"] != "on":
        raise SystemExit("fsync and synchronous_commit must both be on for these figures")
    return settings


@contextmanager
def scratch_database(label: str) -> Iterator[str]:
    """A fresh, uniquely named database for the duration of the block (dropped after)."""
    name = f"ledger_bench_{label}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield database_url(name)
    finally:
        with psycopg.connect(server_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def result_line(
    name: str, value: float, unit: str, target: float, *, lower_is_better: bool = False
) -> str:
    """``RESULT <name> <value> <unit> target <target> ratio <r>``; r >= 1.0 means met."""
    ratio = (target / value if value > 0 else float("inf")) if lower_is_better else value / target
    return f"RESULT {name} {_number(value)} {unit} target {_number(target)} ratio {ratio:.3f}"


def _number(value: float) -> str:
    if float(value).is_integer():
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.2f}"


def load_synthetic(store: EventStore, events: int, seed: int = 7,
                   log: RandomLog | None = None, spread_events: int = 0) -> Head:
    """Generate a realistic log and bulk-load it with the store's own ``import_rows``
    (which recomputes the chain as it goes); print the time and the mix."""
    from eventstore.testing.synthetic import (  # AES-GCM: not in light children
        RandomLog,
        chain_rows,
        mix,
    )

    started = time.perf_counter()
    counts: Counter[str] = Counter()
    generator = log if log is not None else RandomLog(seed=seed)
    rows = chain_rows(generator.events(events, spread_events), store.head())
    head = store.import_rows(mix(rows, counts))
    seconds = time.perf_counter() - started
    with psycopg.connect(store.url, autocommit=True) as conn:
        conn.execute("VACUUM (FREEZE, ANALYZE)")  # as a long-lived log would be: all-visible
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))"
                            ).fetchone()
    shares = ", ".join(f"{k} {v / max(1, events):.1%}" for k, v in counts.most_common())
    print(f"   generated and imported {events:,} events with store.import_rows in"
          f" {seconds:.1f} s (database {size[0] if size else '?'}); mix: {shares}")
    return head


def print_profile(label: str, run: Callable[[], Any], top: int = 14) -> None:
    """One more run of ``run`` under cProfile; the top functions by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(run)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    print(f"   cProfile of {label}, by own time (cProfile slows the run down):")
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    for line in lines[start : start + top + 1]:
        print("     " + line[:150])


# ---------------------------------------------------------------- ``ledger serve`` under test

ROOT = Path(__file__).resolve().parent.parent
# The ``ledger`` script of the Python running this (its virtualenv), else the project's.
_SIBLING = Path(sys.executable).with_name("ledger")
LEDGER = _SIBLING if _SIBLING.exists() else ROOT / ".venv/bin/ledger"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def worker_pids(self) -> list[int]:
        """uvicorn's worker processes (not multiprocessing's resource tracker)."""
        pids = []
        for pid in children_of(self.process.pid):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"resource_tracker" not in command:
                pids.append(pid)
        return pids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def serving(pids: list[int], port: int) -> list[int]:
    """The processes among ``pids`` whose event loop waits on the socket listening on
    ``port`` (an epoll of theirs holds it: Linux's /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    found = []
    for pid in pids:
        listening, polls = set(), []
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target in inodes:
                    listening.add(fd)
                elif target == "anon_inode:[eventpoll]":
                    polls.append(fd)
            watched = {tfd for fd in polls for tfd in re.findall(
                r"tfd:\s+(\d+)", Path(f"/proc/{pid}/fdinfo/{fd}").read_text())}
            if listening & watched:
                found.append(pid)
    return found


def start_ledger(env: dict[str, str], port: int, workers: int, log_dir: Path,
                 limit: float = 60.0) -> Service:
    """``ledger serve`` with ``env`` added, until /healthz answers 200 and every worker is
    up. A service that exits during start-up is returned as it is (check ``process``)."""
    log_path = log_dir / f"service-{time.time_ns()}.log"
    command = [str(LEDGER) if LEDGER.exists() else "ledger", "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    # The code beside this bench, whichever checkout the venv's editable install names
    # (LEDGER_BENCH_CODE names another checkout: an A/B of the service with one bench).
    code = os.environ.get("LEDGER_BENCH_CODE") or str(ROOT)
    paths = [code, *filter(None, [os.environ.get("PYTHONPATH")])]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": os.pathsep.join(paths),
                                                 **env}, stdout=log,
                                   stderr=subprocess.STDOUT, cwd=log_dir, start_new_session=True)
    service = Service(process, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + limit
    while process.poll() is None:
        try:
            with urllib.request.urlopen(service.url + "/healthz", timeout=1) as answer:  # noqa: S310
                # One worker runs in the service's own process; more are its children,
                # each serving only once it waits on the listening socket (a worker still
                # starting, e.g. loading the authority's tenants, would leave the first
                # connections of a load to the other).
                if answer.status == 200 and (
                    workers == 1 or len(serving(service.worker_pids(), port)) >= workers
                ):
                    return service
        except OSError:
            pass
        if time.monotonic() > deadline:
            service.stop()
            raise SystemExit(f"ledger serve did not answer /healthz within {limit:.0f} s")
        time.sleep(0.1)
    return service
