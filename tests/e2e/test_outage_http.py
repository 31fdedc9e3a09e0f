"""A real PostgreSQL outage over real HTTP (issue 8 §2): while the database refuses
connections, every admin endpoint, /readyz and a lifecycle call answer 503 with
Retry-After; once it is back, they answer 200 again without a restart."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import httpx
import psycopg

from app.http.app import create_app
from app.settings import Settings
from tests.harness import RunningService, running_service

PLACEHOLDER = "00000000-0000-4000-8000-000000000000"  # for ids this test never creates


def admin_paths(client_key: str) -> dict[str, set[int]]:
    """Every GET path under /admin in the app's own document, with its parameters filled
    in, and the answers it may give once the store is back."""
    document = create_app(Settings()).openapi()
    paths: dict[str, set[int]] = {}
    for template, operations in sorted(document["paths"].items()):
        if not template.startswith("/admin") or "get" not in operations:
            continue
        path = template.replace("{client_key}", client_key)
        filled = re.sub(r"\{[^}]+\}", PLACEHOLDER, path)
        paths[filled] = {200} if filled == path else {200, 404}
    assert len(paths) >= 8, paths
    return paths


@contextmanager
def outage(admin_url: str, name: str) -> Iterator[None]:
    """The database refuses new connections and loses the ones it had (ours only)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        )
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def wait_ready(service: RunningService) -> None:
    deadline = time.monotonic() + 60  # the pool reconnects with a back-off
    while service.client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the service did not become ready again"
        time.sleep(0.2)


def test_every_endpoint_answers_503_during_an_outage_and_recovers(
    postgres_databases: Any,
) -> None:
    url = postgres_databases.create()
    name = url.rsplit("/", 1)[1]
    with running_service(url, run_projections=False) as service:
        payload = service.install()
        paths = admin_paths(payload["clientKey"])
        for path, expected in paths.items():
            assert service.admin(path).status_code in expected, path

        with outage(postgres_databases.admin_url, name):
            # All at once: each waits out the pool's timeout (5 s) before its 503, and
            # one after another they took ~80 s.
            calls: dict[str, Callable[[], httpx.Response]] = {
                path: functools.partial(service.admin, path) for path in paths
            }
            calls["/readyz"] = lambda: service.client.get("/readyz")
            uninstall = service.call("uninstalled", payload, alg="HS256")
            calls["/uninstalled"] = lambda: service.send(uninstall)
            with ThreadPoolExecutor(len(calls)) as pool:
                pending = {path: pool.submit(call) for path, call in calls.items()}
                answers = {path: done.result() for path, done in pending.items()}
            for path, response in answers.items():
                assert response.status_code == 503, (path, response.text)
                assert response.json()["error"] == "store_unavailable", path
                assert int(response.headers["Retry-After"]) > 0, path

        wait_ready(service)
        for path, expected in paths.items():
            assert service.admin(path).status_code in expected, path
        assert service.send(service.call("uninstalled", payload, alg="HS256")).status_code == 204
