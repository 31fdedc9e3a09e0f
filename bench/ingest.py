"""Verified first installs over HTTP (SPEC §9): ``ledger serve --workers 2`` on PostgreSQL.

Every call is a distinct tenant's first ``installed``, signed RS256 by a simulated
Atlassian host (``app.sim.connect.SimulatedHost``) whose public key this process serves
through a ``KeyServer``; the service fetches it once per worker and caches it. All
calls are pre-signed before the clock starts (RSA-2048 signing is ~1 ms a call, done
by a few worker processes), with ``exp_in=600`` so none expires during the run.

The service is a separate process tree (``.venv/bin/ledger serve --workers 2``, the
production entry point) and the load comes from another process: ``wrk`` with a Lua
script that walks a file of pre-signed requests, each sent exactly once (distinct
path query, Authorization header and body), counting answers by status. A 2 s
warm-up with its own requests, then 10 s measured. Without ``wrk`` (and when
``apt-get install wrk`` is not possible) a Python multi-process keep-alive load
generator does the same job.

Afterwards the bench waits for the service to go idle and checks that the ledger
holds exactly as many ``Installed`` events as there were 204 answers (calls cut off
in flight when the load generator stops are accounted for separately), then sends
every call a second time: each must answer 204 (a duplicate), and the ledger must
then hold exactly one ``Installed`` per distinct call sent.

While the load runs, a thread samples projection lag (``bench/_lag.py``: commit → the
tenants projection's checkpoint), and with ``--profile`` py-spy samples the service's
processes (``bench/_profile.py``: CPU by area). Then the same kind of load, pre-signed
again for its base URL, goes to the peer, atlassian-connect-express 11.5.3
(``bench/_ace.py``, the app in ``bench/ace/``), installed from the npm registry into a
temporary folder; without Node or npm, or when it fails, one ``PEER skipped`` line says
why (``--no-peer`` or ``LEDGER_BENCH_NO_PEER=1`` skips it).

Run: ``.venv/bin/python bench/ingest.py`` (full figures), or quicker:
``.venv/bin/python bench/ingest.py --calls 6000 --seconds 4 --warmup 1 --no-peer``.
"""

from __future__ import annotations

import argparse
import base64
import collections
import concurrent.futures
import http.client
import multiprocessing
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _ace  # noqa: E402
import _lag  # noqa: E402
import _profile  # noqa: E402
import psycopg  # noqa: E402
from _benchkit import (  # noqa: E402
    Service,
    children_of,
    free_port,
    print_environment,
    result_line,
    scratch_database,
    start_ledger,
)
from cryptography.hazmat.primitives import serialization  # noqa: E402

from app.sim.connect import KeyServer, SimulatedHost, make_install_payload  # noqa: E402

CALLS_TARGET = 3000.0  # SPEC §9
P99_TARGET_MS = 25.0
ACE_RATIO_TARGET = 10.0  # SPEC §9: >= 10x atlassian-connect-express, same machine and load

# One pre-signed call: path with query, Authorization header value, JSON body.
Call = tuple[str, str, bytes]


# ---------------------------------------------------------------- pre-signing


def _sign_range(args: tuple[bytes, str, str, int, int]) -> list[Call]:
    pem, kid, app_base_url, start, count = args
    private_key = serialization.load_pem_private_key(pem, password=None)
    host = SimulatedHost(kid=kid, private_key=private_key)  # type: ignore[arg-type]
    calls: list[Call] = []
    for n in range(start, start + count):
        payload = make_install_payload(base_url=f"https://bench-{n:07d}-{os.getpid()}.atlassian.net")
        call = host.lifecycle_call("installed", payload, app_base_url=app_base_url, exp_in=600)
        calls.append((call.url_path_with_query, call.headers["Authorization"], call.body))
    return calls


def presign(host: SimulatedHost, app_base_url: str, count: int, processes: int) -> list[Call]:
    pem = host.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    chunk = 500
    jobs = [(pem, host.kid, app_base_url, start, min(chunk, count - start))
            for start in range(0, count, chunk)]
    context = multiprocessing.get_context("fork")
    calls: list[Call] = []
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        for part in pool.map(_sign_range, jobs):
            calls.extend(part)
    return calls


def write_request_file(path: Path, calls: Sequence[Call]) -> None:
    with path.open("wb") as handle:
        for target, authorization, body in calls:
            if b"\t" in body or b"\n" in body:
                raise ValueError("a body must be compact JSON on one line")
            handle.write(target.encode() + b"\t" + authorization.encode() + b"\t" + body + b"\n")


# ---------------------------------------------------------------- the service


def start_service(database_url: str, port: int, key_server_url: str, workers: int,
                  log_dir: Path, attempts: int = 3) -> Service:
    """Start ``ledger serve`` and wait until every worker answers; retry a failed start.

    A start is retried (at most ``attempts`` times, loudly) when the service dies during
    start-up, e.g. when two workers race to create the projection tables at once.
    """
    for attempt in range(1, attempts + 1):
        service = _start_service_once(database_url, port, key_server_url, workers, log_dir)
        # A worker that fails start-up takes the whole service down a moment later.
        time.sleep(1.5)
        if service.process.poll() is None and len(service.worker_pids()) >= workers:
            return service
        stop_service(service)
        errors = [line for line in service.log_path.read_text().splitlines()
                  if "Error" in line or "ERROR" in line or "error" in line]
        print(f"   WARNING: ledger serve died during start-up (attempt {attempt}/{attempts});"
              f" last errors: {errors[-3:]}")
    raise SystemExit("ledger serve did not start")


def _start_service_once(database_url: str, port: int, key_server_url: str, workers: int,
                        log_dir: Path) -> Service:
    env = {
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_APP_BASE_URL": f"http://127.0.0.1:{port}",
        "LEDGER_INSTALL_KEYS_URL": key_server_url,
        "LEDGER_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    return start_ledger(env, port, workers, log_dir)


def stop_service(service: Service) -> None:
    service.stop()


# ---------------------------------------------------------------- CPU accounting


def _clock_ticks() -> int:
    return os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def postgres_cpu_seconds(database: str) -> float:
    """CPU of PostgreSQL's background processes and of the backends serving ``database``
    (backends of other databases, e.g. someone else's tests, are left out)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("postgres"):
                continue
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        # A backend's title: "postgres: 15/main: <user> <database> <client> <state>".
        parts = title.split()
        is_backend = len(parts) >= 5 and "(" in parts[4]
        if not is_backend or parts[3] == database:
            total += process_cpu_seconds(int(entry.name))
    return total


def total_cpu_seconds() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, in seconds."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / _clock_ticks(), sum(values) / _clock_ticks()


@dataclass
class CpuSample:
    workers: float
    postgres: float
    machine_busy: float
    machine_total: float
    children: float

    @classmethod
    def take(cls, service: Service, database: str) -> CpuSample:
        busy, total = total_cpu_seconds()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return cls(
            workers=sum(process_cpu_seconds(p) for p in service.worker_pids()),
            postgres=postgres_cpu_seconds(database),
            machine_busy=busy,
            machine_total=total,
            children=usage.ru_utime + usage.ru_stime,
        )


def describe_cpu(before: CpuSample, after: CpuSample, seconds: float) -> str:
    cores = os.cpu_count() or 1
    machine = after.machine_busy - before.machine_busy
    workers = after.workers - before.workers
    postgres = after.postgres - before.postgres
    loadgen = after.children - before.children
    other = machine - workers - postgres - loadgen
    return (
        f"CPU during the measured window ({cores} cores x {seconds:.1f} s = "
        f"{cores * seconds:.1f} core-s): service workers {workers:.1f}, PostgreSQL (its"
        f" backends and background processes) {postgres:.1f}, load generator {loadgen:.1f},"
        " everything else (other processes on the machine) "
        f"{max(other, 0.0):.1f}; machine busy {machine / (cores * seconds):.0%}"
    )


# ---------------------------------------------------------------- load: wrk

LUA_SCRIPT = r"""
-- Walks a file of pre-signed calls (path \t authorization \t body), one line each,
-- each sent exactly once. Thread n of N takes lines n, n+N, n+2N, ...
threads = {}
local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
   table.insert(threads, thread)
end

n204, n2xx, n4xx, n5xx, nother, sent, exhausted = 0, 0, 0, 0, 0, 0, 0
local reqs = {}
local index = 0
local fallback

function init(args)
   local path, nthreads = args[1], tonumber(args[2])
   local tid = wrk.thread:get("tid")
   local i = 0
   for line in io.lines(path) do
      if i % nthreads == tid then
         local target, auth, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
         reqs[#reqs + 1] = wrk.format("POST", target,
            {["Authorization"] = auth, ["Content-Type"] = "application/json"}, body)
      end
      i = i + 1
   end
   fallback = wrk.format("GET", "/healthz")
end

function request()
   index = index + 1
   if index > #reqs then
      exhausted = exhausted + 1
      return fallback
   end
   sent = sent + 1
   return reqs[index]
end

function response(status, headers, body)
   if status == 204 then n204 = n204 + 1
   elseif status >= 200 and status < 300 then n2xx = n2xx + 1
   elseif status >= 400 and status < 500 then n4xx = n4xx + 1
   elseif status >= 500 then n5xx = n5xx + 1
   else nother = nother + 1 end
end

function done(summary, latency, requests)
   local keys = {"n204", "n2xx", "n4xx", "n5xx", "nother", "sent", "exhausted"}
   for _, key in ipairs(keys) do
      local total = 0
      for _, t in ipairs(threads) do total = total + (t:get(key) or 0) end
      io.write(string.format("BENCH %s %d\n", key, total))
   end
   for i, t in ipairs(threads) do
      io.write(string.format("BENCH sent_t%d %d\n", i - 1, t:get("sent") or 0))
   end
   io.write(string.format("BENCH duration_us %d\n", summary.duration))
   io.write(string.format("BENCH requests %d\n", summary.requests))
   for _, name in ipairs({"connect", "read", "write", "status", "timeout"}) do
      io.write(string.format("BENCH err_%s %d\n", name, summary.errors[name]))
   end
   for _, p in ipairs({50, 90, 99, 99.9}) do
      io.write(string.format("BENCH p%s_us %d\n", tostring(p), latency:percentile(p)))
   end
   io.write(string.format("BENCH mean_us %d\n", latency.mean))
   io.write(string.format("BENCH max_us %d\n", latency.max))
end
"""


@dataclass
class LoadResult:
    seconds: float
    sent: int
    status: dict[str, int]
    errors: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    mean_ms: float
    max_ms: float
    exhausted: int
    sent_per_part: list[int] = field(default_factory=list)  # part i sent calls[i::parts][:n]
    raw: str = field(default="", repr=False)

    def sent_calls(self, calls: Sequence[Call]) -> list[Call]:
        """The calls actually sent: part i walks calls[i::parts] in order."""
        parts = len(self.sent_per_part)
        return [c for i, n in enumerate(self.sent_per_part) for c in calls[i::parts][:n]]

    @property
    def ok(self) -> int:
        return self.status.get("204", 0) + self.status.get("2xx", 0)

    @property
    def answered(self) -> int:
        return sum(self.status.values())

    @property
    def failed(self) -> int:
        """Non-2xx answers plus calls that got no answer through a socket error or timeout."""
        refused = self.answered - self.ok
        return refused + sum(self.errors.values())


def find_wrk(allow_install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not allow_install or os.geteuid() != 0:
        return found
    print("   wrk not found: trying `apt-get install -y wrk` (quietly)")
    for command in (["apt-get", "install", "-y", "-qq", "wrk"],
                    ["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False, timeout=300, env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        found = shutil.which("wrk")
        if found:
            return found
    return None


def run_wrk(wrk: str, url: str, request_file: Path, script: Path, seconds: float,
            connections: int, threads: int) -> LoadResult:
    command = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds:g}s",
               "--timeout", "10s", "--latency", "-s", str(script), url, "--",
               str(request_file), str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          timeout=seconds + 120)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed ({done.returncode}): {done.stderr}\n{done.stdout}")
    values: dict[str, float] = {}
    for line in done.stdout.splitlines():
        match = re.match(r"BENCH (\S+) (-?\d+)", line)
        if match:
            values[match.group(1)] = float(match.group(2))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", done.stdout)
    status = {
        "204": int(values["n204"]),
        "2xx": int(values["n2xx"]),
        "4xx": int(values["n4xx"]),
        "5xx": int(values["n5xx"]),
        "other": int(values["nother"]),
    }
    if non_2xx and int(non_2xx.group(1)) != status["4xx"] + status["5xx"] + status["other"]:
        print(f"   note: wrk's own non-2xx count is {non_2xx.group(1)}")
    return LoadResult(
        seconds=values["duration_us"] / 1e6,
        sent=int(values["sent"]),
        status=status,
        errors={k: int(values[f"err_{k}"]) for k in ("connect", "read", "write", "timeout")},
        p50_ms=values["p50_us"] / 1e3,
        p90_ms=values["p90_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
        p999_ms=values["p99.9_us"] / 1e3,
        mean_ms=values["mean_us"] / 1e3,
        max_ms=values["max_us"] / 1e3,
        exhausted=int(values["exhausted"]),
        sent_per_part=[int(values[f"sent_t{t}"]) for t in range(threads)],
        raw=done.stdout,
    )


# ---------------------------------------------------------------- load: Python fallback


def _fallback_worker(args: tuple[str, int, list[Call], float, float]) -> dict[str, Any]:
    """One process: ``connections`` keep-alive connections driven by threads."""
    host_port, connections, calls, seconds, start_at = args
    host, port = host_port.split(":")
    while time.time() < start_at:
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    lock = threading.Lock()
    iterator: Iterator[Call] = iter(calls)
    latencies: list[float] = []
    status: collections.Counter[str] = collections.Counter()
    errors = 0
    sent = 0
    exhausted = False

    def next_call() -> Call | None:
        nonlocal sent, exhausted
        with lock:
            try:
                call = next(iterator)
            except StopIteration:
                exhausted = True
                return None
            sent += 1
            return call

    def loop() -> None:
        nonlocal errors
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        while time.perf_counter() < deadline:
            call = next_call()
            if call is None:
                return
            target, authorization, body = call
            started = time.perf_counter()
            try:
                conn.request("POST", target, body=body, headers={
                    "Authorization": authorization, "Content-Type": "application/json"})
                answer = conn.getresponse()
                answer.read()
            except OSError:
                with lock:
                    errors += 1
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=10)
                continue
            elapsed = time.perf_counter() - started
            code = answer.status
            key = "204" if code == 204 else "2xx" if code < 300 else "4xx" if code < 500 else "5xx"
            with lock:
                latencies.append(elapsed)
                status[key] += 1
        conn.close()

    threads = [threading.Thread(target=loop) for _ in range(connections)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"latencies": latencies, "status": dict(status), "errors": errors, "sent": sent,
            "exhausted": exhausted, "seconds": time.perf_counter() - began}


def run_fallback(url: str, calls: Sequence[Call], seconds: float, connections: int,
                 processes: int = 2) -> LoadResult:
    host_port = url.split("://", 1)[1]
    per_process = max(1, connections // processes)
    slices = [list(calls[i::processes]) for i in range(processes)]
    start_at = time.time() + 0.5
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        parts = list(pool.map(_fallback_worker, [(host_port, per_process, s, seconds, start_at)
                                                  for s in slices]))
    latencies = sorted(x for p in parts for x in p["latencies"])
    status: collections.Counter[str] = collections.Counter()
    for p in parts:
        status.update(p["status"])

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e3 if latencies else 0.0

    return LoadResult(
        seconds=max(p["seconds"] for p in parts),
        sent=sum(p["sent"] for p in parts),
        status={k: status.get(k, 0) for k in ("204", "2xx", "4xx", "5xx", "other")},
        errors={"socket": sum(p["errors"] for p in parts)},
        p50_ms=pct(0.50), p90_ms=pct(0.90), p99_ms=pct(0.99), p999_ms=pct(0.999),
        mean_ms=(sum(latencies) / len(latencies) * 1e3) if latencies else 0.0,
        max_ms=latencies[-1] * 1e3 if latencies else 0.0,
        exhausted=sum(1 for p in parts if p["exhausted"]),
        sent_per_part=[p["sent"] for p in parts],
    )


# ---------------------------------------------------------------- checks


def ledger_counts(database_url: str) -> tuple[int, int, int]:
    """(Installed events, all events, rejections) in the service's database."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE type = 'Installed'), count(*) FROM events"
        ).fetchone()
        rejections = conn.execute("SELECT count(*) FROM rejections").fetchone()
    assert row is not None and rejections is not None
    return int(row[0]), int(row[1]), int(rejections[0])


def database_activity(database_url: str) -> dict[str, int]:
    """pg_stat_database counters of the service's database (flushed about once a second)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        row = conn.execute(
            "SELECT xact_commit, tup_inserted, tup_updated, tup_returned, tup_fetched"
            " FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    assert row is not None
    keys = ("transactions", "rows inserted", "rows updated", "rows returned", "rows fetched")
    return dict(zip(keys, (int(v) for v in row), strict=True))


def wait_until_idle(database_url: str, quiet: float = 1.0, limit: float = 30.0) -> int:
    """Wait until the number of events stops changing (requests cut off in flight finish)."""
    deadline = time.monotonic() + limit
    last = -1
    stable_since = time.monotonic()
    while time.monotonic() < deadline:
        count = ledger_counts(database_url)[1]
        if count != last:
            last, stable_since = count, time.monotonic()
        elif time.monotonic() - stable_since >= quiet:
            break
        time.sleep(0.1)
    return last


def replay(url: str, calls: Sequence[Call], connections: int = 8) -> collections.Counter[int]:
    """Send each call again (one keep-alive connection per thread); count the statuses."""
    host_port = url.split("://", 1)[1]
    host, port = host_port.split(":")
    chunks = [calls[i::connections] for i in range(connections)]

    def send_all(chunk: Sequence[Call]) -> collections.Counter[int]:
        counts: collections.Counter[int] = collections.Counter()
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        for target, authorization, body in chunk:
            conn.request("POST", target, body=body, headers={
                "Authorization": authorization, "Content-Type": "application/json"})
            answer = conn.getresponse()
            answer.read()
            counts[answer.status] += 1
        conn.close()
        return counts

    total: collections.Counter[int] = collections.Counter()
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        for counts in pool.map(send_all, chunks):
            total.update(counts)
    return total


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=40_000,
                        help="pre-signed first installs (default 40000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up (default 2 s)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="ledger serve --workers")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--sign-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (auto: wrk, installing it with apt-get if missing)")
    parser.add_argument("--no-replay", action="store_true",
                        help="skip sending every call a second time")
    parser.add_argument("--profile", "--py-spy", dest="profile", action="store_true",
                        help="sample the service's processes with py-spy during the measured"
                             " window and print their CPU by area")
    parser.add_argument("--no-peer", action="store_true",
                        default=os.environ.get("LEDGER_BENCH_NO_PEER", "") not in ("", "0"),
                        help="skip atlassian-connect-express (also LEDGER_BENCH_NO_PEER=1)")
    parser.add_argument("--ace-calls", type=int, default=10_000,
                        help="pre-signed calls for the ACE peer (default 10000)")
    parser.add_argument("--lag-interval", type=float, default=0.025,
                        help="projection lag: seconds between polls (default 0.025)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print_environment("bench/ingest.py: verified first installs over HTTP")
    started = time.perf_counter()

    wrk = None if args.load == "python" else find_wrk(allow_install=args.load in ("auto", "wrk"))
    if wrk is None and args.load == "wrk":
        raise SystemExit("wrk is not available")
    generator = f"wrk ({wrk}), {args.wrk_threads} thread(s)" if wrk else "Python multi-process"
    print(f"   load generator: {generator}, {args.connections} keep-alive connections")

    port = free_port()
    host = SimulatedHost()
    t0 = time.perf_counter()
    calls = presign(host, f"http://127.0.0.1:{port}", args.calls, args.sign_processes)
    print(f"   pre-signed {len(calls):,} RS256 first installs in {time.perf_counter() - t0:.1f} s"
          f" ({args.sign_processes} processes; body {len(calls[0][2])} bytes, token"
          f" {len(calls[0][1]) - 4} bytes)")
    warm_count = min(len(calls) // 5, max(1000, int(args.warmup * 2500)))

    with tempfile.TemporaryDirectory(prefix="ledger-bench-ingest-") as tmp, \
            KeyServer() as key_server:
        work = Path(tmp)
        host.register_with(key_server)
        runner = Runner(args, wrk, work, key_server.url)
        outcome = runner.measure_ours(port, calls[:warm_count], calls[warm_count:])
        ace_rate = None if args.no_peer else runner.measure_ace(host)

    print_results(outcome, ace_rate)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    if not outcome.consistent or not outcome.replay_ok:
        raise SystemExit("the ledger's contents do not match the answers (see above)")


def print_results(outcome: Outcome, ace_rate: float | None) -> None:
    result = outcome.result
    failures = result.failed + (0 if outcome.consistent else 1)
    print(result_line("ingest_calls_per_s", outcome.rate, "calls/s", CALLS_TARGET))
    print(result_line("ingest_p99_ms", result.p99_ms, "ms", P99_TARGET_MS, lower_is_better=True))
    print(f"RESULT ingest_non_2xx {failures} responses target 0 ratio "
          f"{1.0 if failures == 0 else 0.0:.1f}")
    if ace_rate:
        print(result_line("ingest_vs_ace", outcome.rate / ace_rate, "x", ACE_RATIO_TARGET))
    if outcome.lag is not None:
        print(result_line("projection_lag_p99_ms", _lag.percentile(outcome.lag.tenants, 99) * 1e3,
                          "ms", _lag.TARGET_P99_S * 1e3, lower_is_better=True))


@dataclass
class Outcome:
    rate: float
    result: LoadResult
    consistent: bool
    replay_ok: bool
    lag: _lag.LagResult | None = None


def _report_death(service: Service, when: str) -> None:
    print(f"   WARNING: the service died {when} (parent exit code {service.process.poll()},"
          f" workers now {service.worker_pids()}); its log without per-call lines:")
    print("\n".join(line for line in service.log_path.read_text().splitlines()
                    if '"lifecycle call"' not in line)[-2500:])


class Runner:
    """One bench run's load generator, scratch folder and key server, for both services."""

    def __init__(self, args: argparse.Namespace, wrk: str | None, work: Path,
                 key_server_url: str) -> None:
        self.args, self.wrk, self.work, self.key_server_url = args, wrk, work, key_server_url
        self.script = work / "walk.lua"
        self.script.write_text(LUA_SCRIPT)

    def load(self, url: str, calls: Sequence[Call], seconds: float, name: str) -> LoadResult:
        if not self.wrk:
            return run_fallback(url, calls, seconds, self.args.connections)
        request_file = self.work / f"{name}.tsv"
        if not request_file.exists():
            write_request_file(request_file, calls)
        return run_wrk(self.wrk, url, request_file, self.script, seconds,
                       self.args.connections, self.args.wrk_threads)

    def measure_ours(self, port: int, warm: Sequence[Call], measured: Sequence[Call]) -> Outcome:
        attempts = 3
        for attempt in range(1, attempts + 1):
            # A fresh database per attempt: a service that died mid-way leaves events behind.
            with scratch_database("ingest") as database_url:
                service = start_service(database_url, port, self.key_server_url,
                                        self.args.workers, self.work)
                try:
                    outcome = self.run_attempt(service, database_url, warm, measured)
                finally:
                    stop_service(service)
                if outcome is not None:
                    _print_log_tail(service, outcome)
                    return outcome
            print(f"   attempt {attempt}/{attempts} discarded: the service died (see above)")
        raise SystemExit(f"ledger serve did not stay up for {attempts} attempts")

    def run_attempt(self, service: Service, database_url: str, warm_calls: Sequence[Call],
                    measured_calls: Sequence[Call]) -> Outcome | None:
        """Warm-up, measured window and checks against one fresh service; None if it died."""
        workers_at_start = service.worker_pids()
        print(f"   ledger serve --workers {self.args.workers} up: parent {service.process.pid},"
              f" workers {workers_at_start}")

        def alive() -> bool:
            return service.process.poll() is None and service.worker_pids() == workers_at_start

        warm = self.load(service.url, warm_calls, self.args.warmup, "warmup")
        print(f"   warm-up: {warm.answered:,} answers in {warm.seconds:.1f} s, statuses "
              f"{warm.status}, errors {warm.errors}")
        wait_until_idle(database_url, quiet=0.3)
        if not alive():
            _report_death(service, "during start-up or warm-up")
            return None
        window = MeasuredWindow(self.args, service, database_url, self.work)
        result = window.run(lambda: self.load(service.url, measured_calls, self.args.seconds,
                                              "measured"))
        if not alive():
            _report_death(service, "during the measured window")
            return None
        print(f"   measured: {result.answered:,} answers in {result.seconds:.2f} s: "
              f"{result.status}; socket errors/timeouts {result.errors}")
        print(f"   latency ms: mean {result.mean_ms:.1f}, p50 {result.p50_ms:.1f}, p90 "
              f"{result.p90_ms:.1f}, p99 {result.p99_ms:.1f}, p99.9 {result.p999_ms:.1f}, "
              f"max {result.max_ms:.1f}")
        if result.exhausted or warm.exhausted:
            print(f"   WARNING: the pre-signed calls ran out ({result.exhausted} requests went"
                  " to /healthz instead): rerun with a larger --calls")
        window.report(result)
        consistent, replay_ok = check_ledger(self.args, service, database_url,
                                             (warm, warm_calls), (result, measured_calls),
                                             window.activity_before)
        rate = result.ok / result.seconds
        return Outcome(rate, result, consistent, replay_ok, window.lag)

    def measure_ace(self, host: SimulatedHost) -> float | None:
        """The same pre-signed load (signed again for ACE's base URL) against the ACE peer;
        its calls/s (204 answers only), or None with one skip line."""
        print("\n-- peer: atlassian-connect-express 11.5.3, same load, same key server")
        try:
            folder = _ace.install(self.work)
            return self._run_ace(folder, host)
        except _ace.PeerUnavailable as reason:
            print(f"PEER skipped: atlassian-connect-express: {reason}")
            return None

    def _run_ace(self, folder: Path, host: SimulatedHost) -> float:
        port = free_port()
        calls = presign(host, f"http://127.0.0.1:{port}", self.args.ace_calls,
                        self.args.sign_processes)
        warm_count = min(len(calls) // 5, max(300, int(self.args.warmup * 300)))
        with scratch_database("ace") as database_url:
            peer = _ace.start(folder, database_url, port, self.key_server_url, self.args.workers)
            try:
                check_ace_verifies(peer.url, calls[0])
                warm = self.load(peer.url, calls[:warm_count], self.args.warmup, "ace-warmup")
                cpu_before = resource.getrusage(resource.RUSAGE_SELF)
                ace_before = _ace_cpu(peer)
                result = self.load(peer.url, calls[warm_count:], self.args.seconds, "ace-measured")
                ace_cpu = _ace_cpu(peer) - ace_before
                cpu_after = resource.getrusage(resource.RUSAGE_SELF)
                time.sleep(0.5)
                stored = _ace.stored_installs(database_url)
            finally:
                peer.stop()
        rate = result.status["204"] / result.seconds
        print(f"   ACE ({self.args.workers} Node processes): {result.status['204']:,} accepted in"
              f" {result.seconds:.1f} s = {rate:,.0f} calls/s; p50 {result.p50_ms:.1f} ms, p99"
              f" {result.p99_ms:.1f} ms; statuses {result.status}, errors {result.errors}; it"
              f" stored {stored:,} tenants (204 answers incl. warm-up:"
              f" {warm.status['204'] + result.status['204'] + 1:,})")
        key_server_cpu = (cpu_after.ru_utime + cpu_after.ru_stime
                          - cpu_before.ru_utime - cpu_before.ru_stime)
        print(f"   ACE's Node processes used {ace_cpu:.1f} core-s in the window"
              f" ({ace_cpu * 1e3 / max(1, result.answered):.1f} ms of CPU per answer); ACE fetches"
              f" the install key on every call (the ledger caches it): the key server (this"
              f" process) used {key_server_cpu:.1f} core-s")
        if result.exhausted:
            print(f"   WARNING: the ACE calls ran out ({result.exhausted} went to /healthz and"
                  " are not counted): rerun with a larger --ace-calls")
        return rate


def _ace_cpu(peer: _ace.AcePeer) -> float:
    pids = [peer.process.pid, *children_of(peer.process.pid)]
    return sum(process_cpu_seconds(pid) for pid in pids)


def check_ace_verifies(url: str, call: Call) -> None:
    """ACE must refuse a call whose signature is broken and take the real one: else the
    peer would not be doing the same work."""
    target, authorization, body = call
    host, port = url.split("://", 1)[1].split(":")
    broken = authorization[:-6] + ("AAAAAA" if not authorization.endswith("AAAAAA") else "BBBBBB")
    statuses = []
    for header in (broken, authorization):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("POST", target, body=body, headers={
            "Authorization": header, "Content-Type": "application/json"})
        answer = conn.getresponse()
        answer.read()
        statuses.append(answer.status)
        conn.close()
    # ACE answers 400 ("Unable to decode JWT token") when the RS256 signature is wrong.
    if not (400 <= statuses[0] < 500 and statuses[1] == 204):
        raise _ace.PeerUnavailable(f"ACE answered {statuses} to a broken and a valid signed"
                                   " install (expected a 4xx, then 204): it is not verifying"
                                   " as configured")
    print(f"   ACE check: a broken signature is refused ({statuses[0]}), the valid call"
          " accepted (204)")


class MeasuredWindow:
    """What runs beside the measured load: CPU samples, py-spy, the projection lag sampler."""

    def __init__(self, args: argparse.Namespace, service: Service, database_url: str,
                 work: Path) -> None:
        self.args, self.service, self.work = args, service, work
        self.database_url = database_url
        self.database = database_url.rsplit("/", 1)[1]
        self.activity_before: dict[str, int] = {}
        self.cpu: tuple[CpuSample, CpuSample] | None = None
        self.profile: _profile.Profile | None = None
        self.lag: _lag.LagResult | None = None

    def run(self, load: Callable[[], LoadResult]) -> LoadResult:
        pids = self.service.worker_pids() if self.args.profile else []
        spies = [(pid, _profile.start(pid, self.args.seconds, self.work)) for pid in pids]
        sampler = _lag.LagSampler(self.database_url, self.args.lag_interval).start()
        self.activity_before = database_activity(self.database_url)
        before = CpuSample.take(self.service, self.database)
        result = load()
        self.cpu = (before, CpuSample.take(self.service, self.database))
        self.lag = sampler.stop()
        profiles = [_profile.finish(spy, pid, self.work) for pid, spy in spies if spy]
        if profiles and all(profiles):
            self.profile = _profile.merge([p for p in profiles if p])
        return result

    def report(self, result: LoadResult) -> None:
        if self.cpu:
            print("   " + describe_cpu(*self.cpu, result.seconds))
            before, after = self.cpu
            answered = max(1, result.answered)
            print(f"   per answer: service workers {(after.workers - before.workers) * 1e3 / answered:.2f}"
                  f" ms of CPU, PostgreSQL {(after.postgres - before.postgres) * 1e3 / answered:.2f} ms")
        if self.lag is not None:
            print("   " + _lag.describe(self.lag, self.args.lag_interval))
        if self.profile is not None:
            _profile.report(self.profile, result.ok)


def check_ledger(args: argparse.Namespace, service: Service, database_url: str,
                 warm_part: tuple[LoadResult, Sequence[Call]],
                 measured_part: tuple[LoadResult, Sequence[Call]],
                 activity_before: dict[str, int]) -> tuple[bool, bool]:
    """Exactly-once accounting, then (unless --no-replay) every call sent again."""
    (warm, warm_calls), (result, measured_calls) = warm_part, measured_part
    wait_until_idle(database_url)
    time.sleep(1.1)  # statistics reach pg_stat_database about once a second
    activity = database_activity(database_url)
    calls_done = max(1, result.answered)
    print("   PostgreSQL work per measured call (incl. the projection runner): " + ", ".join(
        f"{(activity[k] - activity_before[k]) / calls_done:.1f} {k}" for k in activity))
    installed, events, rejections = ledger_counts(database_url)
    answered_204 = warm.status["204"] + result.status["204"]
    sent = warm.sent + result.sent
    # Answers to the calls sent: not counting /healthz, where requests go once the
    # pre-signed calls have run out (200s; a lifecycle call answers 204 or an error).
    in_flight = sent - sum(r.answered - r.status["2xx"] for r in (warm, result))
    print(f"   ledger: {installed:,} Installed events ({events:,} events, {rejections}"
          f" rejections); 204 answers seen: {answered_204:,}; calls sent {sent:,}, of"
          f" which {in_flight} were cut off in flight when the load generator stopped")
    consistent = answered_204 <= installed <= answered_204 + max(in_flight, 0)
    if installed == answered_204:
        print("   check: the ledger holds exactly as many Installed events as 204 answers")
    elif consistent:
        print(f"   check: {installed - answered_204} more Installed events than 204 answers"
              " seen, all explained by calls the load generator cut off in flight")
    else:
        print("   CHECK FAILED: Installed events do not match the 204 answers")
    if args.no_replay:
        return consistent, True
    sent_calls = warm.sent_calls(warm_calls) + result.sent_calls(measured_calls)
    t1 = time.perf_counter()
    statuses = replay(service.url, sent_calls)
    wait_until_idle(database_url, quiet=0.3)
    after_installed = ledger_counts(database_url)[0]
    replay_ok = (statuses == collections.Counter({204: len(sent_calls)})
                 and after_installed == len(sent_calls))
    verdict = "ok" if replay_ok else "FAILED"
    print(f"   replay check {verdict}: every one of the {len(sent_calls):,} calls sent"
          f" again in {time.perf_counter() - t1:.1f} s -> {dict(statuses)}; the ledger"
          f" now holds {after_installed:,} Installed events (one per distinct call)")
    return consistent, replay_ok


def _print_log_tail(service: Service, outcome: Outcome) -> None:
    if outcome.result.failed or not outcome.consistent or not outcome.replay_ok:
        tail = "\n".join(line for line in service.log_path.read_text().splitlines()
                         if '"outcome":"accepted"' not in line)[-3000:]
        if tail.strip():
            print("   service log tail (accepted calls left out):\n" + tail)


if __name__ == "__main__":
    main()
