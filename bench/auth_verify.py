"""``POST /auth/connect/verify`` over HTTP (SPEC §9): ``ledger serve --workers 2`` on
PostgreSQL with 10,000 tenants, side by side with atlassian-connect-express's own
``addon.authenticate()`` on the same load.

The tenants are loaded before the clock starts, straight into each store: the ledger's
as ``Installed`` events whose secrets are sealed under per-tenant data keys (the key
ring's own code, the same master key the service is given), ACE's as its own
``AddonSettings`` rows. Each request verifies a page request (``POST /page``, a token
``Authorization: JWT …``, HS256 with the tenant's secret, ``qsh`` over the request, a
user in ``sub``) for a tenant chosen in turn across all of them; the ledger receives it
as the vendor's app sends it (``{"method", "url", "authorization"}`` with its service
token), ACE as the page request itself (its ``addon.authenticate()`` reads the tenant
from its store, checks HS256, ``exp`` and ``qsh``). All tokens are signed beforehand.

The load is ``wrk`` (or the Python multi-process generator) from ``bench/ingest.py``: a
warm-up, then a measured window. Every answer must be 200. Prints the figures, the
targets (≥ 5,000 verifications/s, p99 ≤ 10 ms, faster than ACE) and the ratios.

Run: ``.venv/bin/python bench/auth_verify.py`` (full), or tiny:
``bench/auth_verify.py --tenants 200 --calls 3000 --seconds 1 --warmup 0.5 --no-peer``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import secrets
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _ace  # noqa: E402
import ingest  # noqa: E402
import psycopg  # noqa: E402
from _benchkit import (  # noqa: E402
    free_port,
    print_environment,
    result_line,
    scratch_database,
    start_ledger,
)

from app.ingest.connect.tokens import query_string_hash  # noqa: E402
from eventstore import open_store  # noqa: E402
from eventstore.clock import format_timestamp, utcnow  # noqa: E402
from eventstore.crypto import KeyRing, MasterKeys, seal_secret, secret_ad  # noqa: E402
from eventstore.events import Installed, Metadata, stream_id_for  # noqa: E402
from eventstore.values import AppendRequest, NewEvent  # noqa: E402

RATE_TARGET = 5000.0  # SPEC §9
P99_TARGET_MS = 10.0
ACE_RATIO_TARGET = 1.0  # faster than ACE on the same machine and load
SERVICE_TOKEN = "bench-" + secrets.token_hex(24)
PAGE = "/page"
Tenant = tuple[str, str]  # clientKey, shared secret
Call = ingest.Call


def tenants_of(count: int) -> list[Tenant]:
    return [(str(uuid.uuid4()), secrets.token_urlsafe(48)) for _ in range(count)]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


HEADER = _b64(b'{"alg":"HS256","typ":"JWT"}')


def page_token(client_key: str, secret: str, now: int) -> str:
    """What a site signs for a page request to the app (as ``SimulatedHost.page_token``,
    inlined: 60,000 of them are made before the run)."""
    claims = {"iss": client_key, "sub": f"557058:{client_key[:8]}", "iat": now,
              "exp": now + 900, "qsh": query_string_hash("POST", PAGE, []),
              "jti": secrets.token_hex(8)}  # fmt: skip
    signing = f"{HEADER}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(secret.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{_b64(mac)}"


def ledger_calls(tenants: Sequence[Tenant], count: int) -> list[Call]:
    now = int(time.time())
    calls: list[Call] = []
    for n in range(count):
        client_key, secret = tenants[n % len(tenants)]
        body = {"method": "POST", "url": PAGE,
                "authorization": f"JWT {page_token(client_key, secret, now)}"}  # fmt: skip
        calls.append(("/auth/connect/verify", f"Bearer {SERVICE_TOKEN}",
                      json.dumps(body, separators=(",", ":")).encode()))  # fmt: skip
    return calls


def ace_calls(ledger: Sequence[Call]) -> list[Call]:
    """The same page requests as ACE receives them: the token in the request itself."""
    return [(PAGE, json.loads(body)["authorization"], b"{}") for _, _, body in ledger]


# ---------------------------------------------------------------- the tenants


def load_ledger(database_url: str, master_key: str, tenants: Sequence[Tenant]) -> None:
    """Each tenant's ``Installed``, its secret sealed under a data key of its own that is
    stored with the append (as a first install stores it)."""
    with open_store(database_url) as store:
        store.migrate()
        keyring = KeyRing(store, MasterKeys.parse(master_key))
        at = format_timestamp(utcnow())
        for start in range(0, len(tenants), 500):
            requests = []
            for client_key, secret in tenants[start : start + 500]:
                stream = stream_id_for(client_key)
                key, wrapped = keyring.new_key(stream)
                data = Installed(
                    key="tenant-ledger", client_key=client_key,
                    base_url=f"https://bench-{client_key[:8]}.atlassian.net",
                    shared_secret=seal_secret(key, secret, secret_ad(stream, 1)),
                    details={"productType": "jira"},
                )  # fmt: skip
                event = NewEvent(data, Metadata(call_id=uuid.uuid4().hex, received_at=at))
                requests.append(AppendRequest(stream, [event], 0, data_key=wrapped))
            store.append_batch(requests)


def load_ace(database_url: str, tenants: Sequence[Tenant]) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO "AddonSettings" ("clientKey", key, val) VALUES (%s, 'clientInfo', %s)""",
            [(client_key, json.dumps({
                "key": "tenant-ledger", "clientKey": client_key, "sharedSecret": secret,
                "baseUrl": f"https://bench-{client_key[:8]}.atlassian.net", "productType": "jira",
            })) for client_key, secret in tenants],
        )  # fmt: skip


def post(url: str, call: Call) -> tuple[int, bytes]:
    target, authorization, body = call
    headers = {"Authorization": authorization, "Content-Type": "application/json"}
    request = urllib.request.Request(url + target, data=body, method="POST", headers=headers)  # noqa: S310  # http://127.0.0.1 only
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def check_verifies(name: str, url: str, call: Call) -> None:
    """The service takes a genuine request and refuses a forged one: else it would not be
    doing the work measured."""
    status, body = post(url, call)
    if status != 200:
        raise SystemExit(f"{name} did not verify a genuine request: {status} {body[:200]!r}")
    target, authorization, content = call
    forged = authorization[:-4] + ("AAAA" if not authorization.endswith("AAAA") else "BBBB")
    if name == "ledger":
        request = json.loads(content)
        request["authorization"] = request["authorization"][:-4] + "AAAA"
        status, _ = post(url, (target, authorization, json.dumps(request).encode()))
    else:
        status, _ = post(url, (target, forged, content))
    if status == 200:
        raise SystemExit(f"{name} accepted a forged token")


# ---------------------------------------------------------------- the runs


def report(name: str, result: ingest.LoadResult) -> float:
    ok = result.status.get("2xx", 0)
    rate = ok / result.seconds if result.seconds else 0.0
    print(f"   {name}: {ok:,} verified in {result.seconds:.1f} s = {rate:,.0f}/s; p50"
          f" {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms; statuses {result.status},"
          f" errors {result.errors}")  # fmt: skip
    if result.exhausted:
        print(
            f"   WARNING: the calls ran out ({result.exhausted} went to /healthz): rerun"
            " with a larger --calls"
        )
    return rate


def measure_ledger(runner: ingest.Runner, args: argparse.Namespace, tenants: Sequence[Tenant],
                   calls: Sequence[Call], warm: int) -> ingest.LoadResult:  # fmt: skip
    master_key = base64.b64encode(os.urandom(32)).decode()
    port = free_port()
    with scratch_database("auth") as database_url:
        started = time.perf_counter()
        load_ledger(database_url, master_key, tenants)
        print(
            f"   ledger: {len(tenants):,} tenants loaded in {time.perf_counter() - started:.1f} s"
        )
        env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_MASTER_KEY": master_key,
               "LEDGER_APP_BASE_URL": f"http://127.0.0.1:{port}",
               "LEDGER_SERVICE_TOKENS": f"bench={SERVICE_TOKEN}"}  # fmt: skip
        service = start_ledger(env, port, args.workers, runner.work)
        try:
            if service.process.poll() is not None:
                raise SystemExit(
                    f"ledger serve did not start: {service.log_path.read_text()[-500:]}"
                )
            check_verifies("ledger", service.url, calls[0])
            warmed = runner.load(service.url, calls[:warm], args.warmup, "ledger-warmup")
            print(f"   warm-up: {warmed.answered:,} answers, statuses {warmed.status}")
            return runner.load(service.url, calls[warm:], args.seconds, "ledger-measured")
        finally:
            service.stop()


def measure_ace(runner: ingest.Runner, args: argparse.Namespace, tenants: Sequence[Tenant],
                calls: Sequence[Call], warm: int) -> ingest.LoadResult | None:  # fmt: skip
    print("\n-- peer: atlassian-connect-express 11.5.3, addon.authenticate(), same load")
    try:
        folder = _ace.install(runner.work)
        with scratch_database("ace_auth") as database_url:
            port = free_port()
            peer = _ace.start(folder, database_url, port, "http://127.0.0.1:9", args.workers)
            try:
                load_ace(database_url, tenants)
                check_verifies("ACE", peer.url, calls[0])
                runner.load(peer.url, calls[:warm], args.warmup, "ace-warmup")
                return runner.load(peer.url, calls[warm:], args.seconds, "ace-measured")
            finally:
                peer.stop()
    except _ace.PeerUnavailable as reason:
        print(f"PEER skipped: atlassian-connect-express: {reason}")
        return None


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=80_000, help="pre-signed requests")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="ledger serve --workers")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--load", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--no-peer", action="store_true",
                        default=os.environ.get("LEDGER_BENCH_NO_PEER", "") not in ("", "0"))  # fmt: skip
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    print_environment("bench/auth_verify.py: POST /auth/connect/verify over HTTP")
    wrk = None if args.load == "python" else ingest.find_wrk(allow_install=args.load != "python")
    print(f"   load generator: {f'wrk ({wrk})' if wrk else 'Python multi-process'},"
          f" {args.connections} keep-alive connections; {args.tenants:,} tenants")  # fmt: skip
    tenants = tenants_of(args.tenants)
    started = time.perf_counter()
    calls = ledger_calls(tenants, args.calls)
    print(f"   signed {len(calls):,} page tokens in {time.perf_counter() - started:.1f} s")
    warm = min(len(calls) // 5, max(500, int(args.warmup * 5000)))
    with tempfile.TemporaryDirectory(prefix="ledger-bench-auth-") as tmp:
        runner = ingest.Runner(args, wrk, Path(tmp), "")
        ours = measure_ledger(runner, args, tenants, calls, warm)
        rate = report(f"ledger (serve --workers {args.workers})", ours)
        ace = None if args.no_peer else measure_ace(runner, args, tenants, ace_calls(calls), warm)
        ace_rate = report(f"ACE ({args.workers} Node processes)", ace) if ace else None
    failures = ours.failed
    print(result_line("auth_verify_per_s", rate, "verifications/s", RATE_TARGET))
    print(result_line("auth_verify_p99_ms", ours.p99_ms, "ms", P99_TARGET_MS, lower_is_better=True))
    print(f"RESULT auth_verify_non_200 {failures} responses target 0 ratio"
          f" {1.0 if failures == 0 else 0.0:.1f}")  # fmt: skip
    if ace_rate:
        print(result_line("auth_verify_vs_ace", rate / ace_rate, "x", ACE_RATIO_TARGET))
    if failures:
        raise SystemExit("some verifications were not answered 200 (see above)")


if __name__ == "__main__":
    main()
