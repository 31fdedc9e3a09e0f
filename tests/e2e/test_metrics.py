"""/metrics tells the truth: summed over every worker of `ledger serve --workers N`, and
kept apart per app in one process (the embedded service)."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from app.ingest.connect.keys import InstallKeyFetcher
from app.ingest.connect.keys import UnknownKid as UnknownInstallKid
from app.ingest.forge.keys import JwksFetcher, UnknownKid
from app.metrics import MULTIPROC_ENV, new_metrics, reap_dead_processes
from app.serve.supervisor import metrics_directory
from app.settings import Settings
from app.sim.connect import KeyServer, SimulatedHost, make_install_payload
from app.sim.forge import ForgePlatform, JwksServer
from tests.harness import RunningService, ledger_serve, running_service

T = TypeVar("T")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, parsed by prometheus-client's own parser."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples that carry ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in found.items() if n == name and wanted <= ls)


def until(check: Callable[[], T | None], what: str, seconds: float = 20) -> T:
    deadline = time.monotonic() + seconds
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.1)


# ------------------------------------------------------------ several workers


@contextmanager
def serve(store_url: str, var_dir: Path, keys: KeyServer, workers: int) -> Iterator[str]:
    """A real `ledger serve` process (the suite's one launcher); stopped by its PID."""
    with ledger_serve(store_url, var_dir, keys.url, workers) as served:
        yield served.url


def _runner_pid(url: str) -> int | None:
    """The pid of the serve's runner process, once it has reported."""
    pid = httpx.get(f"{url}/readyz", timeout=10).json()["runner"]["pid"]
    return int(pid) if pid is not None else None


def calls_by_process(directory: Path) -> dict[int, float]:
    """``ledger_calls_total`` as each process's own file holds it (what a scrape of that
    worker alone would say without the sum)."""
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rpartition("_")[2])
        counts[pid] = sum(
            value
            for key, value, _timestamp, _offset in MmapedDict.read_all_values_from_file(str(path))
            if json.loads(key)[0] == "ledger_calls"
        )
    return counts


def test_every_scrape_sums_all_workers(tmp_path: Path) -> None:
    store_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        with serve(store_url, tmp_path, keys, workers=2) as url:
            [directory] = tmp_path.glob("metrics-*")
            runner_pid = until(lambda: _runner_pid(url), "the runner process reports")

            def send(refused: bool) -> int:
                # A new connection per call, so the kernel hands calls to both workers.
                if refused:
                    return httpx.post(f"{url}/installed", content=b"{}", timeout=10).status_code
                call = host.lifecycle_call("installed", make_install_payload(), app_base_url=url)
                return httpx.post(
                    f"{url}{call.url_path_with_query}",
                    content=call.body,
                    headers=call.headers,
                    timeout=10,
                ).status_code

            accepted = refused = 0
            with ThreadPoolExecutor(4) as pool:
                # Rounds of calls until each worker has taken some (bounded).
                for _ in range(20):
                    round_ = [i % 3 == 0 for i in range(12)]
                    statuses = list(pool.map(send, round_))
                    assert statuses == [400 if r else 204 for r in round_]
                    refused += sum(round_)
                    accepted += len(round_) - sum(round_)
                    per_worker = calls_by_process(directory)
                    if len([c for c in per_worker.values() if c > 0]) == 2:
                        break
            sent = accepted + refused
            per_worker = calls_by_process(directory)
            assert per_worker.pop(runner_pid) == 0  # the runner process takes no call
            assert len(per_worker) == 2 and all(0 < c < sent for c in per_worker.values())
            assert sum(per_worker.values()) == sent

            for _ in range(8):
                # Each worker alone holds fewer than `sent`: only a sum can answer `sent`.
                found = samples(httpx.get(f"{url}/metrics", timeout=10).text)
                assert total(found, "ledger_calls_total") == sent
                assert total(found, "ledger_calls_total", outcome="accepted") == accepted
                assert total(found, "ledger_rejections_total") == refused
                assert total(found, "ledger_call_duration_seconds_count") == sent
                # Group commit: every accepted call's append in one batch, batches ≤ calls.
                assert 1 <= total(found, "ledger_append_batch_size_count") <= accepted
                assert total(found, "ledger_append_batch_size_sum") == accepted
                lookups = total(found, "ledger_key_lookups_total", source="install_keys")
                assert lookups == accepted
                fetched = total(
                    found, "ledger_key_fetches_total", source="install_keys", result="ok"
                )
                assert 1 <= fetched <= 2  # each worker caches the one key it fetched

            def caught_up() -> Samples | None:
                found = samples(httpx.get(f"{url}/metrics", timeout=10).text)
                lag = [v for (n, _), v in found.items() if n == "ledger_projection_lag_events"]
                return found if lag and not any(lag) else None

            found = until(caught_up, "the projection lag falls to 0")
            assert total(found, "ledger_projection_runner_leader") == 1  # its runner leads
            assert total(found, "ledger_projection_failures_total") == 0
            # Only the runner process observes the projections: the workers run none.
            lag_files = [f.name for f in directory.glob("gauge_livemostrecent_*.db")]
            assert lag_files == [f"gauge_livemostrecent_{runner_pid}.db"]
        assert not directory.exists()
        assert not list(tmp_path.glob("metrics-*"))


# ------------------------------------------------------------ one process


def test_one_process_counts_its_own_calls(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    assert MULTIPROC_ENV not in os.environ  # the suite runs services in one process
    with running_service(url) as service:
        call = service.call("installed", make_install_payload())
        assert service.send(call).status_code == 204
        assert service.send(call).status_code == 204  # the same delivery again: a duplicate
        service.install()
        assert service.client.post("/installed", content=b"{}").status_code == 400
        found = until(lambda: _caught_up(service), "the projection lag falls to 0")

        def calls(outcome: str, status: str) -> float:
            return total(
                found, "ledger_calls_total", endpoint="installed", outcome=outcome, status=status
            )

        assert calls("accepted", "204") == 2
        assert calls("duplicate", "204") == 1
        assert calls("unsupported_media_type", "400") == 1
        assert total(found, "ledger_rejections_total", reason="unsupported_media_type") == 1
        duration = total(
            found, "ledger_call_duration_seconds_count", endpoint="installed", outcome="accepted"
        )
        assert duration == 2
        assert total(found, "ledger_append_batch_size_count") == 2
        assert total(found, "ledger_append_batch_size_bucket", le="1.0") == 2
        # One key for every install: fetched once, then served from the cache.
        assert total(found, "ledger_key_lookups_total", source="install_keys", result="miss") == 1
        assert total(found, "ledger_key_lookups_total", source="install_keys") >= 2
        assert total(found, "ledger_key_fetches_total", source="install_keys", result="ok") == 1
        assert total(found, "ledger_projection_runner_leader") == 1
        assert total(found, "ledger_projection_failures_total") == 0
    with running_service(url) as other:
        # A second app in the same process starts from nothing.
        found = samples(other.client.get("/metrics").text)
        assert total(found, "ledger_calls_total") == 0
        assert total(found, "ledger_append_batch_size_count") == 0


def _caught_up(service: RunningService) -> Samples | None:
    found = samples(service.client.get("/metrics").text)
    lag = [v for (n, _), v in found.items() if n == "ledger_projection_lag_events"]
    return found if lag and not any(lag) else None


def test_the_metrics_directory_lives_for_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LEDGER_VAR_DIR", raising=False)
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path / "inherited"))
    settings = Settings(var_dir=tmp_path / "var")
    with metrics_directory(1, settings) as none:
        assert none is None and os.environ[MULTIPROC_ENV] == str(tmp_path / "inherited")
    with metrics_directory(2, settings) as directory:
        assert directory is not None and directory.is_dir()
        assert directory.parent == tmp_path / "var"
        assert os.environ[MULTIPROC_ENV] == str(directory)
        (directory / "counter_1.db").write_bytes(b"")
    assert not directory.exists()
    assert os.environ[MULTIPROC_ENV] == str(tmp_path / "inherited")
    with metrics_directory(2, Settings()) as elsewhere:
        # Not under ./var unless LEDGER_VAR_DIR says so.
        assert elsewhere is not None and elsewhere.parent == Path(tempfile.gettempdir())
    assert not elsewhere.exists()


def test_a_dead_worker_leaves_the_live_gauges_but_not_the_counters(tmp_path: Path) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # started, ended and reaped here: its pid names no process now
    files = {
        name: tmp_path / name
        for name in (
            f"counter_{gone.pid}.db",
            f"gauge_livemostrecent_{gone.pid}.db",
            f"gauge_livesum_{gone.pid}.db",
            f"gauge_livesum_{os.getpid()}.db",
        )
    }
    for path in files.values():
        path.write_bytes(b"")
    assert reap_dead_processes(tmp_path) == [gone.pid]
    assert {p.name for p in tmp_path.iterdir()} == {
        f"counter_{gone.pid}.db",
        f"gauge_livesum_{os.getpid()}.db",
    }


# ------------------------------------------------------------ key sources


def test_install_key_lookups_and_fetches_are_counted() -> None:
    metrics = new_metrics()
    host = SimulatedHost()
    with KeyServer() as keys:
        host.register_with(keys)

        async def scenario() -> None:
            fetcher = InstallKeyFetcher(keys.url, metrics=metrics.key_source("install_keys"))
            try:
                for _ in range(3):
                    await fetcher.get(host.kid)  # one fetch, then the cache
                for _ in range(2):
                    with pytest.raises(UnknownInstallKid):
                        await fetcher.get("no-such-kid")  # one 404, then remembered
            finally:
                await fetcher.aclose()

        asyncio.run(scenario())
    found = samples(metrics.render().decode())
    count = functools.partial(total, found, source="install_keys")
    assert count("ledger_key_lookups_total", result="hit") == 3
    assert count("ledger_key_lookups_total", result="miss") == 2
    assert count("ledger_key_fetches_total", result="ok") == 1
    assert count("ledger_key_fetches_total", result="unknown") == 1


def test_jwks_lookups_and_fetches_are_counted() -> None:
    metrics = new_metrics()
    with JwksServer() as server:
        platform = ForgePlatform(jwks=server)

        async def scenario() -> None:
            now = [1000.0]
            fetcher = JwksFetcher(
                [server.url], clock=lambda: now[0], metrics=metrics.key_source("forge_jwks")
            )
            try:
                for _ in range(4):
                    await fetcher.key(platform.kid)  # the document once (a miss), then held
                now[0] += 61
                with pytest.raises(UnknownKid):
                    await fetcher.key("no-such-kid")  # looks again: a fetch, a miss
                with pytest.raises(UnknownKid):
                    await fetcher.key("no-such-kid-either")  # within the minute: held
            finally:
                await fetcher.aclose()

        asyncio.run(scenario())
        assert server.requests == 2
    found = samples(metrics.render().decode())
    count = functools.partial(total, found, source="forge_jwks")
    assert count("ledger_key_lookups_total", result="hit") == 4
    assert count("ledger_key_lookups_total", result="miss") == 2
    assert count("ledger_key_fetches_total", result="ok") == 2
