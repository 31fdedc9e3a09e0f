"""Verified Forge ``installed`` calls over HTTP (SPEC §9): FIT (RS256) checked against a JWKS.

The same set-up as ``bench/ingest.py`` (whose service start, load generators and request
file it reuses): ``ledger serve --workers 2`` on a scratch PostgreSQL database, every
call a distinct installation's first ``POST /forge/installed`` with a Forge Invocation
Token signed by the simulated Forge platform (``app.sim.forge``), whose keys this
process serves as a JWKS. Calls are pre-signed before the clock starts (600-second
lifetime, so none expires during the run); a warm-up, then the measured window.
Afterwards the ledger must hold one ``ForgeInstalled`` per 204 (and at most one per call
sent: a call cut off in flight may be stored unanswered). Like ``bench/ingest.py`` it
measures projection lag during the window and, with ``--profile``, samples the service's
processes with py-spy. There is no peer: atlassian-connect-express has no Forge ingestion.

Run: ``.venv/bin/python bench/forge_ingest.py`` (full figures), or quicker:
``.venv/bin/python bench/forge_ingest.py --calls 4000 --seconds 3 --warmup 1``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _lag  # noqa: E402
import ingest  # noqa: E402
import psycopg  # noqa: E402
from _benchkit import print_environment, result_line, scratch_database  # noqa: E402

from app.sim.forge import ForgeInstallation, ForgePlatform, JwksServer  # noqa: E402

CALLS_TARGET = 3000.0  # SPEC §9: the same figures as Connect installs
P99_TARGET_MS = 25.0

_PLATFORM: ForgePlatform | None = None  # set before the signing processes fork


def _sign_range(span: tuple[int, int]) -> list[ingest.Call]:
    assert _PLATFORM is not None
    calls: list[ingest.Call] = []
    for _ in range(span[1]):
        installation = ForgeInstallation()
        claims = _PLATFORM.claims(installation, lifetime=600)
        call = _PLATFORM.installed(installation, claims=claims)
        calls.append((call.path, call.headers["Authorization"], call.body))
    return calls


def presign(platform: ForgePlatform, count: int, processes: int) -> list[ingest.Call]:
    global _PLATFORM
    _PLATFORM = platform
    spans = [(start, min(500, count - start)) for start in range(0, count, 500)]
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        return [call for part in pool.map(_sign_range, spans) for call in part]


def forge_installed(database_url: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT count(*) FROM events WHERE type = 'ForgeInstalled'").fetchone()
    return int(row[0]) if row else 0


def load(args: argparse.Namespace, wrk: str | None, url: str, work: Path,
         calls: list[ingest.Call], seconds: float, name: str) -> ingest.LoadResult:
    if wrk is None:
        return ingest.run_fallback(url, calls, seconds, args.connections)
    request_file = work / f"{name}.tsv"
    ingest.write_request_file(request_file, calls)
    script = work / "walk.lua"
    script.write_text(ingest.LUA_SCRIPT)
    return ingest.run_wrk(wrk, url, request_file, script, seconds, args.connections, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=25_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sign-processes", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--profile", action="store_true",
                        help="sample the service's processes with py-spy during the measured"
                             " window and print their CPU by area")
    parser.add_argument("--lag-interval", type=float, default=0.025,
                        help="projection lag: seconds between polls (default 0.025)")
    args = parser.parse_args()
    print_environment("bench/forge_ingest.py: verified Forge installed calls over HTTP")
    wrk = None if args.load == "python" else ingest.find_wrk(allow_install=args.load != "python")
    print(f"   load generator: {'wrk' if wrk else 'Python multi-process'},"
          f" {args.connections} keep-alive connections")

    with JwksServer() as jwks, tempfile.TemporaryDirectory(prefix="ledger-bench-forge-") as tmp:
        platform = ForgePlatform(jwks=jwks)
        t0 = time.perf_counter()
        calls = presign(platform, args.calls, args.sign_processes)
        print(f"   pre-signed {len(calls):,} FITs in {time.perf_counter() - t0:.1f} s"
              f" (token {len(calls[0][1]) - 7} bytes)")
        warm = min(len(calls) // 5, max(500, int(args.warmup * 2500)))
        os.environ.update(LEDGER_FORGE_APP_ID=platform.app_ari, LEDGER_FORGE_JWKS_URLS=jwks.url)
        with scratch_database("forge_ingest") as database_url:
            port = ingest.free_port()
            service = ingest.start_service(database_url, port, "http://127.0.0.1:9", args.workers,
                                           Path(tmp))
            try:
                warmed = load(args, wrk, service.url, Path(tmp), calls[:warm], args.warmup, "warm")
                window = ingest.MeasuredWindow(args, service, database_url, Path(tmp))
                result = window.run(lambda: load(args, wrk, service.url, Path(tmp), calls[warm:],
                                                 args.seconds, "measured"))
                window.report(result)
                ingest.wait_until_idle(database_url)
                stored = forge_installed(database_url)
            finally:
                ingest.stop_service(service)

    rate = result.ok / result.seconds if result.seconds else 0.0
    # Calls cut off in flight when the load stops may be stored without an answer seen.
    consistent = warmed.ok + result.ok <= stored <= warmed.sent + result.sent
    print(f"   measured: {result.ok:,} accepted in {result.seconds:.1f} s; p50"
          f" {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms; ledger holds {stored:,}"
          f" ForgeInstalled (warm-up included): {'consistent' if consistent else 'MISMATCH'}")
    print(result_line("forge_ingest_calls_per_s", rate, "calls/s", CALLS_TARGET))
    print(result_line("forge_ingest_p99_ms", result.p99_ms, "ms", P99_TARGET_MS,
                      lower_is_better=True))
    failures = result.failed + (0 if consistent else 1)
    print(f"RESULT forge_ingest_non_2xx {failures} responses target 0 ratio "
          f"{1.0 if failures == 0 else 0.0:.1f}")
    if window.lag is not None:
        print(result_line("forge_projection_lag_p99_ms",
                          _lag.percentile(window.lag.tenants, 99) * 1e3, "ms",
                          _lag.TARGET_P99_S * 1e3, lower_is_better=True))
    if not consistent:
        raise SystemExit("the ledger's contents do not match the answers")


if __name__ == "__main__":
    main()
