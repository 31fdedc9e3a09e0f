"""The benchmark scripts still run: each with tiny sizes, on the test PostgreSQL server.

Only that they finish and print their RESULT lines; the figures at these sizes mean
nothing. ``bench/ingest.py`` is left out: even tiny, it signs calls and starts a
two-worker service (~10 s on 2 cores); run it by hand (bench/README.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPTS = {
    "verify.py": (["--events", "2000", "--repeats", "1", "--no-profile"], ["verify_events_per_s"]),
    "store.py": (
        ["--events", "100", "--seconds", "1", "--rounds", "1", "--read-events", "2000",
         "--batch-sizes", "1000", "--repeats", "1", "--no-profile", "--writers", "8"],
        ["append_events_per_s", "append_vs_eventsourcing", "concurrent_append_events_per_s",
         "read_all_events_per_s"],
    ),
    "fold_micro.py": (
        ["--events", "2000", "--tenants", "500", "--repeat", "1"], ["fold_all_events_per_s"]
    ),
    "rebuild.py": (
        ["--events", "2000", "--tenants", "500", "--requests", "20", "--warmup", "5",
         "--repeats", "1", "--no-spread"],
        ["rebuild_events_per_s", "rebuild_peak_rss_mb", "rebuild_vs_eventsourcing",
         "history_p99_ms", "history_2000_p99_ms"],
    ),
    "webhooks_lag.py": (["--seconds", "1", "--writers", "1"], ["webhook_lag_p99_ms"]),
    "auth_verify.py": (
        ["--tenants", "200", "--calls", "3000", "--seconds", "1", "--warmup", "0.5",
         "--load", "python"],
        ["auth_verify_per_s", "auth_verify_p99_ms", "auth_verify_non_200"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_runs_with_tiny_sizes(script: str, postgres_server: str) -> None:
    arguments, figures = SCRIPTS[script]
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *arguments],
        cwd=ROOT,
        # No atlassian-connect-express peer here (an npm install takes ~30 s).
        env={**os.environ, "LEDGER_BENCH_SERVER_URL": postgres_server, "LEDGER_BENCH_NO_PEER": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    printed = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("RESULT ")}
    assert printed == set(figures), done.stdout[-2000:]
