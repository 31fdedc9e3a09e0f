"""Faults, for real: PostgreSQL refusing connections with its backends terminated, a
read-only failover, a service process killed with SIGKILL under load, and hostile
text in a refused call. Every test acts only on databases it created.

The promise under test: a call is either fully stored and acknowledged (204), or
refused with a clear code; store trouble is a 503 with Retry-After, never a 500;
and the service serves again by itself when the database is back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app.sim.connect import KeyServer, SimulatedHost, make_install_payload
from eventstore import open_store
from eventstore.clock import utcnow
from eventstore.errors import StoreFault, StoreUnavailable
from eventstore.events import Enabled, Metadata, stream_id_for
from eventstore.rejections import REJECTION_WINDOW_SECONDS, Rejection
from eventstore.store import EventStore
from eventstore.values import NewEvent
from tests.conftest import PostgresDatabases
from tests.harness import RunningService, ledger_serve, running_service

# ------------------------------------------------------------------ outages, on our own database


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _terminate_backends(admin: psycopg.Connection[Any], name: str) -> None:
    """Terminate the database's sessions and wait until they are gone (it is a signal)."""
    pids = [
        row[0]
        for row in admin.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [name],
        ).fetchall()
    ]
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
    _wait_until(
        lambda: (
            not admin.execute(
                "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]
            ).fetchall()
        ),
        10,
        "the terminated sessions to exit",
    )
    time.sleep(0.05)  # their goodbye reaches the clients' sockets


@contextmanager
def _admin(databases: PostgresDatabases) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(databases.admin_url, autocommit=True) as admin:
        yield admin


@contextmanager
def _refusing_connections(admin: psycopg.Connection[Any], name: str) -> Iterator[None]:
    """The database refuses new connections and loses the ones it had, until the block ends."""
    admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
    try:
        _terminate_backends(admin, name)
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


@contextmanager
def _read_only(admin: psycopg.Connection[Any], name: str) -> Iterator[None]:
    """A failover to a demoted primary: every new session is read-only until the block ends."""
    admin.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        _terminate_backends(admin, name)  # sessions pick the setting up when they reconnect
        yield
    finally:
        admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
        _terminate_backends(admin, name)


def _wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# ------------------------------------------------------------------ load: signed first installs


@dataclass(frozen=True, slots=True)
class Answer:
    client_key: str
    status: int
    retry_after: str | None
    error: str | None
    finished: float


class InstallLoad:
    """A few client threads sending signed first installs until stopped."""

    def __init__(self, base_url: str, host: SimulatedHost, app_base_url: str, threads: int = 3):
        self._base_url = base_url
        self._host = host
        self._app_base_url = app_base_url
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self.transport_errors = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> InstallLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self) -> None:
        with httpx.Client(base_url=self._base_url, timeout=30) as client:
            while not self._stop.is_set():
                payload = make_install_payload()
                call = self._host.lifecycle_call(
                    "installed", payload, app_base_url=self._app_base_url
                )
                try:
                    response = client.post(
                        call.url_path_with_query, content=call.body, headers=call.headers
                    )
                except httpx.TransportError:
                    with self._lock:
                        self.transport_errors += 1
                    time.sleep(0.01)
                    continue
                error = response.json().get("error") if response.content else None
                answer = Answer(
                    payload["clientKey"],
                    response.status_code,
                    response.headers.get("Retry-After"),
                    error,
                    time.monotonic(),
                )
                with self._lock:
                    self.answers.append(answer)

    def count(self, status: int, since: float = 0.0) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a.status == status and a.finished >= since)

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)


def _assert_answers_are_204_or_retryable_503(answers: list[Answer]) -> None:
    for answer in answers:
        assert answer.status in (204, 503), answer
        if answer.status == 503:
            assert answer.error == "store_unavailable", answer
            assert answer.retry_after is not None and int(answer.retry_after) > 0, answer


def _assert_all_or_nothing(store: EventStore, answers: list[Answer]) -> None:
    """Every acknowledged call is in the log; a refused one is whole or absent."""
    for answer in answers:
        types = [e.type for e in store.read_stream(stream_id_for(answer.client_key))]
        if answer.status == 204:
            assert types == ["Installed"], answer
        else:
            # The connection can die after the commit and before the answer: the call
            # is then stored whole, and the host's retry is recognised.
            assert types in ([], ["Installed"]), answer
    assert store.verify().ok


# ------------------------------------------------------------------ the tests


def test_every_store_method_is_unavailable_not_a_driver_error_during_an_outage(
    postgres_databases: PostgresDatabases,
) -> None:
    url = postgres_databases.create()
    with open_store(url, timeout=0.3) as store, _admin(postgres_databases) as admin:
        stream = stream_id_for("a")
        store.append(stream, [NewEvent(Enabled(), Metadata())], 0, idempotency_key="k")
        store.put_data_key(stream, b"wrapped")
        calls: dict[str, Callable[[], object]] = {
            "append": lambda: store.append(stream, [NewEvent(Enabled(), Metadata())], 1),
            "read_stream": lambda: store.read_stream(stream),
            "read_all": lambda: list(store.read_all()),
            "read_raw": lambda: list(store.read_raw()),
            "head": store.head,
            "stream_version": lambda: store.stream_version(stream),
            "find_idempotent": lambda: store.find_idempotent("k"),
            "get_data_key": lambda: store.get_data_key(stream),
            "put_data_key": lambda: store.put_data_key("tenant:b", b"w"),
            "destroy_data_key": lambda: store.destroy_data_key(stream),
            "record_rejection": lambda: store.record_rejection(
                Rejection(at=utcnow(), path="/installed", reason="r", status=401)
            ),
            "list_rejections": store.list_rejections,
            "ping": store.ping,
            "migrate": store.migrate,
            "verify": store.verify,
        }
        with _refusing_connections(admin, _name(url)):
            for name, call in calls.items():
                with pytest.raises(StoreUnavailable):
                    call()
                    pytest.fail(f"{name} answered during the outage")
        # Back: the pool replaces its dead connections by itself.
        _wait_until(lambda: _answers(store.ping), 30, "the store to answer again")
        assert store.read_stream(stream)[0].type == "Enabled"


def test_connections_lost_in_a_restart_are_replaced_before_they_are_used(
    postgres_databases: PostgresDatabases,
) -> None:
    url = postgres_databases.create()
    name = _name(url)
    with open_store(url, min_connections=4) as store, _admin(postgres_databases) as admin:
        _wait_until(lambda: store.pool.get_stats()["pool_available"] >= 4, 10, "a full pool")
        _terminate_backends(admin, name)
        # Not one call fails for a dead pooled connection: each is checked when taken.
        for i in range(8):
            store.append(stream_id_for(f"t{i}"), [NewEvent(Enabled(), Metadata())], 0)
        assert store.head().position == 8


def _answers(call: Callable[[], object]) -> bool:
    try:
        call()
    except StoreUnavailable:
        return False
    return True


def test_a_lazy_read_fails_as_unavailable_when_the_database_goes_away_midway(
    postgres_databases: PostgresDatabases,
) -> None:
    url = postgres_databases.create()
    with open_store(url, timeout=0.3) as store, _admin(postgres_databases) as admin:
        for i in range(60):
            store.append(stream_id_for(f"t{i}"), [NewEvent(Enabled(), Metadata())], 0)
        for read in (store.read_all, store.read_raw):
            events = iter(read(0, 5))  # type: ignore[operator]
            next(events)  # the read-ahead thread is fetching the next pages now
            with _refusing_connections(admin, _name(url)), pytest.raises(StoreUnavailable):
                for _ in events:
                    time.sleep(0.005)
            _wait_until(lambda: _answers(store.ping), 30, "the store to answer again")


def test_outage_under_load_answers_204_or_503_and_recovers_by_itself(
    postgres_databases: PostgresDatabases,
) -> None:
    url = postgres_databases.create()
    with running_service(url) as service, _admin(postgres_databases) as admin:
        service.install()
        with InstallLoad(service.url, service.host, service.settings.app_base_url) as load:
            _wait_until(lambda: load.count(204) >= 5, 30, "installs before the outage")
            with _refusing_connections(admin, _name(url)):
                began = time.monotonic()
                # Down for ~2 s, and at least until a call has been refused with a 503
                # (a call waits for a connection up to the pool's timeout first).
                _wait_until(
                    lambda: time.monotonic() - began >= 2 and load.count(503, since=began) >= 1,
                    30,
                    "a 503 during the outage",
                )
                # /readyz tells the truth meanwhile.
                assert service.client.get("/readyz").status_code == 503
            back = time.monotonic()
            _wait_until(lambda: load.count(204, since=back) >= 5, 60, "installs after the outage")
        answers = load.snapshot()
        assert load.transport_errors == 0
        _assert_answers_are_204_or_retryable_503(answers)
        _assert_all_or_nothing(service.store, answers)
        # The hot path's async pool came back with the calls; the admin pool that
        # /readyz pings was idle meanwhile and reconnects on its next use (seconds).
        _wait_until(
            lambda: service.client.get("/readyz").status_code == 200, 15, "/readyz ready again"
        )


def test_read_only_failover_answers_503_then_recovers(
    postgres_databases: PostgresDatabases,
) -> None:
    url = postgres_databases.create()
    with running_service(url) as service, _admin(postgres_databases) as admin:
        payload = service.install()
        fresh = [make_install_payload() for _ in range(3)]
        with _read_only(admin, _name(url)):
            for body in fresh:
                response = service.send(service.call("installed", body))
                assert response.status_code == 503, response.text
                assert response.json()["error"] == "store_unavailable"
                assert int(response.headers["Retry-After"]) > 0
            # A refusal whose rejection row cannot be written keeps its own answer.
            hostile = dict(make_install_payload(), clientKey="nul\x00key")
            response = service.send(service.call("installed", hostile))
            assert response.status_code == 400, response.text
            assert "rejection not stored" in service.logs.getvalue()
            rotated = dict(payload, sharedSecret="a-new-secret-of-enough-length-0123456789")
            response = service.send(service.call("installed", rotated))
            assert response.status_code == 503, response.text
        # Writable again (sessions reconnected): the host's retries go through.
        for body in fresh:
            response = service.send(service.call("installed", body))
            assert response.status_code == 204, response.text
        assert service.send(service.call("installed", rotated)).status_code == 204
        with open_store(url) as check:
            for body in fresh:
                assert [e.type for e in check.read_stream(stream_id_for(body["clientKey"]))] == [
                    "Installed"
                ]
            assert check.verify().ok


def test_kill_9_of_a_service_process_under_load_loses_no_acknowledged_call(
    postgres_databases: PostgresDatabases, tmp_path: Path
) -> None:
    url = postgres_databases.create()
    with KeyServer() as keys:
        host = SimulatedHost(key_server=keys)
        # One worker: uvicorn serves in this very process, so its PID is the service's.
        with ledger_serve(url, tmp_path, keys.url, workers=1) as served:
            server, base_url = served.process, served.url
            with InstallLoad(base_url, host, base_url, threads=4) as load:
                _wait_until(lambda: load.count(204) >= 20, 60, "acknowledged installs")
                os.kill(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
            answers = load.snapshot()
    assert server.returncode == -signal.SIGKILL
    _assert_answers_are_204_or_retryable_503(answers)
    with open_store(url) as store:
        _assert_all_or_nothing(store, answers)




def test_a_nul_in_a_claimed_client_key_is_refused_and_logged_escaped(
    service: RunningService,
) -> None:
    body = dict(make_install_payload(), clientKey="evil\x00key\x1b")
    # Both calls in one coalescing window (windows start on the clock's multiples).
    into_window = time.time() % REJECTION_WINDOW_SECONDS
    if into_window > REJECTION_WINDOW_SECONDS - 5:
        time.sleep(REJECTION_WINDOW_SECONDS - into_window + 0.1)
    for _ in range(2):
        response = service.send(service.call("installed", body))
        assert response.status_code == 400, response.text
        code = response.json()["error"]
    escaped = "evil\\x00key\\x1b"
    [row] = [r for r in service.store.list_rejections() if r.client_key == escaped]
    assert row.reason == code and row.status == 400
    assert row.count == 2  # identical refusals in one window: one row
    listed = service.admin("/admin/rejections").json()["rejections"]
    assert [r["count"] for r in listed if r["client_key"] == escaped] == [2]
    metrics = service.client.get("/metrics").text
    assert "ledger_rejections_coalesced_total" in metrics
    assert "ledger_rejections_purged_total" in metrics


# ------------------------------------------------------------------ the mapping, as a table


@pytest.mark.parametrize(
    "sqlstate",
    ["08006", "08001", "57P01", "57P02", "57P03", "57014", "53300", "53100", "25006", "40001",
     "40P01", "55P03", "25P03"],
)  # fmt: skip
def test_retryable_sqlstates_are_store_unavailable(sqlstate: str) -> None:
    from eventstore.postgres.session import translate_error

    error = psycopg.errors.lookup(sqlstate)("from the server")
    mapped = translate_error(error)
    assert isinstance(mapped, StoreUnavailable) and mapped.retryable


@pytest.mark.parametrize("sqlstate", ["23505", "22P05", "42P01", "22021", "XX000"])
def test_other_sqlstates_are_a_non_retryable_store_fault(sqlstate: str) -> None:
    from eventstore.postgres.session import translate_error

    mapped = translate_error(psycopg.errors.lookup(sqlstate)("from the server"))
    assert isinstance(mapped, StoreFault) and not mapped.retryable
    assert mapped.code == sqlstate
    assert "from the server" not in str(mapped)  # no value of the call in the error


def test_lost_connections_and_pool_timeouts_are_store_unavailable() -> None:
    from psycopg_pool import PoolTimeout

    from eventstore.postgres.session import translate_error

    for error in (
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        PoolTimeout("couldn't get a connection after 5.00 sec"),
    ):
        assert isinstance(translate_error(error), StoreUnavailable)
    assert translate_error(ValueError("ours")) is None  # a bug stays a bug
