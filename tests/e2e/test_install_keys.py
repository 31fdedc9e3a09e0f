"""InstallKeyFetcher against a real KeyServer over HTTP (app.sim.connect)."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Iterator

import pytest

from app.ingest.connect.keys import InstallKeyFetcher, InvalidKid, KeyServerBusy, UnknownKid
from app.ingest.key_fetch import (
    FETCH_BURST,
    MAX_FETCHES_IN_FLIGHT,
    UNKNOWN_KID_TTL_SECONDS,
    FetchBudget,
    InstallKeyError,
    KeyServerUnavailable,
    UnknownKids,
)
from app.sim.connect import KeyServer, SimulatedHost


class FakeClock:
    """A monotonic clock the test moves by hand (the bounds are about time, not speed)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(scope="module")
def host() -> SimulatedHost:
    return SimulatedHost(kid="kid-main")


@pytest.fixture
def server(host: SimulatedHost) -> Iterator[KeyServer]:
    with KeyServer(slow_seconds=5.0) as key_server:
        host.register_with(key_server)
        yield key_server


def test_fetch_returns_pem_and_caches(server: KeyServer, host: SimulatedHost) -> None:
    async def scenario() -> tuple[str, str]:
        async with InstallKeyFetcher(server.url) as fetcher:
            return await fetcher.get(host.kid), await fetcher.get(host.kid)

    first, second = asyncio.run(scenario())
    assert first == second == host.public_pem
    assert server.requests == {host.kid: 1}


def test_trailing_slash_in_base_url(server: KeyServer, host: SimulatedHost) -> None:
    async def scenario() -> str:
        async with InstallKeyFetcher(server.url + "/") as fetcher:
            return await fetcher.get(host.kid)

    assert asyncio.run(scenario()) == host.public_pem
    assert server.requests == {host.kid: 1}


def test_public_key_object_matches_pem(server: KeyServer, host: SimulatedHost) -> None:
    async def scenario() -> int:
        async with InstallKeyFetcher(server.url) as fetcher:
            key = await fetcher.get_public_key(host.kid)
            return key.public_numbers().n

    assert asyncio.run(scenario()) == host.private_key.public_key().public_numbers().n


def test_concurrent_gets_make_one_request(server: KeyServer) -> None:
    fresh = SimulatedHost(kid="kid-concurrent", private_key=None, key_server=server)
    # Slow answers keep all 50 callers waiting on the same in-flight fetch.
    server.slow_seconds = 0.3
    server.set_mode("slow")

    async def scenario() -> list[str]:
        async with InstallKeyFetcher(server.url, timeout=5.0) as fetcher:
            return await asyncio.gather(*(fetcher.get(fresh.kid) for _ in range(50)))

    results = asyncio.run(scenario())
    assert results == [fresh.public_pem] * 50
    assert server.requests == {fresh.kid: 1}


def test_a_cancelled_waiter_does_not_cancel_the_fetch(
    server: KeyServer, host: SimulatedHost
) -> None:
    server.slow_seconds = 0.3
    server.set_mode("slow")

    async def scenario() -> str:
        async with InstallKeyFetcher(server.url, timeout=5.0) as fetcher:
            impatient = asyncio.create_task(fetcher.get(host.kid))
            patient = asyncio.create_task(fetcher.get(host.kid))
            await asyncio.sleep(0.05)
            impatient.cancel()
            return await patient

    assert asyncio.run(scenario()) == host.public_pem
    assert server.requests == {host.kid: 1}


def test_unknown_kid_is_remembered_for_a_while(server: KeyServer, host: SimulatedHost) -> None:
    clock = FakeClock()

    async def scenario() -> None:
        async with InstallKeyFetcher(server.url, clock=clock) as fetcher:
            for _ in range(3):
                with pytest.raises(UnknownKid) as caught:
                    await fetcher.get("no-such-kid")
                assert caught.value.code == "unknown_kid"
            assert server.requests == {"no-such-kid": 1}
            # Published later: found once the 404 is forgotten.
            server.register("no-such-kid", host.public_pem)
            clock.advance(UNKNOWN_KID_TTL_SECONDS - 1)
            with pytest.raises(UnknownKid):
                await fetcher.get("no-such-kid")
            clock.advance(1)
            assert await fetcher.get("no-such-kid") == host.public_pem

    asyncio.run(scenario())
    assert server.requests == {"no-such-kid": 2}


def test_outage_then_recovery(server: KeyServer, host: SimulatedHost) -> None:
    server.down = True

    async def scenario() -> str:
        async with InstallKeyFetcher(server.url) as fetcher:
            for _ in range(2):
                with pytest.raises(KeyServerUnavailable) as caught:
                    await fetcher.get(host.kid)
                assert caught.value.code == "key_server_unavailable"
            server.down = False
            return await fetcher.get(host.kid)

    assert asyncio.run(scenario()) == host.public_pem
    assert server.requests == {host.kid: 3}


def test_timeout(server: KeyServer, host: SimulatedHost) -> None:
    server.set_mode("slow")

    async def scenario() -> float:
        async with InstallKeyFetcher(server.url, timeout=0.2) as fetcher:
            started = time.monotonic()
            with pytest.raises(KeyServerUnavailable):
                await fetcher.get(host.kid)
            elapsed = time.monotonic() - started
            server.set_mode("up")
            assert await fetcher.get(host.kid) == host.public_pem
            return elapsed

    assert asyncio.run(scenario()) < 2.0
    assert server.requests == {host.kid: 2}


@pytest.mark.parametrize(
    "kid", ["../x", "a/b", "..", ".", "%2e%2e", "%2e", "", "x" * 129, "a?b", "a#b", "k\n"]
)
def test_invalid_kid_makes_no_request(server: KeyServer, kid: str) -> None:
    async def scenario() -> None:
        async with InstallKeyFetcher(server.url) as fetcher:
            with pytest.raises(InvalidKid) as caught:
                await fetcher.get(kid)
            assert caught.value.code == "invalid_kid"
            if kid:
                assert kid not in str(caught.value)

    asyncio.run(scenario())
    assert server.requests == {}


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now.

    async def scenario() -> None:
        async with InstallKeyFetcher(f"http://127.0.0.1:{port}", timeout=1.0) as fetcher:
            with pytest.raises(KeyServerUnavailable):
                await fetcher.get("kid-main")

    asyncio.run(scenario())


def test_a_200_that_is_not_a_key(server: KeyServer) -> None:
    server.register("kid-html", "<html>maintenance</html>")

    async def scenario() -> None:
        async with InstallKeyFetcher(server.url) as fetcher:
            for _ in range(2):
                with pytest.raises(KeyServerUnavailable):
                    await fetcher.get("kid-html")

    asyncio.run(scenario())
    assert server.requests == {"kid-html": 2}


def test_errors_share_a_base_class() -> None:
    kinds = (InvalidKid, UnknownKid, KeyServerUnavailable, KeyServerBusy)
    for error in kinds:
        assert issubclass(error, InstallKeyError)
    assert len({kind.code for kind in kinds}) == 4
    assert issubclass(KeyServerBusy, KeyServerUnavailable)  # retryable: 503


def test_injected_client_is_not_closed(server: KeyServer, host: SimulatedHost) -> None:
    import httpx

    async def scenario() -> bool:
        async with httpx.AsyncClient() as client:
            fetcher = InstallKeyFetcher(server.url, client=client)
            assert await fetcher.get(host.kid) == host.public_pem
            await fetcher.aclose()
            return client.is_closed

    assert asyncio.run(scenario()) is False


# ---------------------------------------------------------------- a flood of made-up kids


def random_kids(count: int) -> list[str]:
    return [f"flood-{secrets.token_hex(8)}" for _ in range(count)]


def test_a_concurrent_flood_of_random_kids_makes_at_most_the_in_flight_cap_of_fetches(
    server: KeyServer, host: SimulatedHost
) -> None:
    server.slow_seconds = 0.2
    server.set_mode("slow")  # the fetches in flight stay in flight while the flood arrives
    clock = FakeClock()

    async def scenario() -> tuple[list[BaseException | str], str]:
        async with InstallKeyFetcher(server.url, timeout=5.0, clock=clock) as fetcher:
            flood = await asyncio.gather(
                *(fetcher.get(kid) for kid in random_kids(1000)), return_exceptions=True
            )
            server.set_mode("up")
            clock.advance(1)  # one token back in the bucket
            return flood, await fetcher.get(host.kid)

    flood, real = asyncio.run(scenario())
    assert real == host.public_pem
    outcomes = [type(result).__name__ for result in flood]
    assert outcomes.count("UnknownKid") == MAX_FETCHES_IN_FLIGHT
    assert outcomes.count("KeyServerBusy") == 1000 - MAX_FETCHES_IN_FLIGHT
    fetched = sum(n for kid, n in server.requests.items() if kid.startswith("flood-"))
    assert fetched == MAX_FETCHES_IN_FLIGHT
    assert server.requests[host.kid] == 1


def test_a_sequential_flood_of_random_kids_spends_only_the_fetch_budget(
    server: KeyServer, host: SimulatedHost
) -> None:
    clock = FakeClock()

    async def scenario() -> tuple[dict[str, int], str]:
        outcomes: dict[str, int] = {}
        async with InstallKeyFetcher(server.url, clock=clock) as fetcher:
            for kid in random_kids(1000):
                try:
                    await fetcher.get(kid)
                except InstallKeyError as error:
                    outcomes[error.code] = outcomes.get(error.code, 0) + 1
            # The real host's new kid: refused while the budget is spent, then fetched.
            with pytest.raises(KeyServerBusy):
                await fetcher.get(host.kid)
            clock.advance(1)
            return outcomes, await fetcher.get(host.kid)

    outcomes, real = asyncio.run(scenario())
    assert outcomes == {"unknown_kid": FETCH_BURST, "key_server_busy": 1000 - FETCH_BURST}
    assert real == host.public_pem
    assert sum(server.requests.values()) == FETCH_BURST + 1


def test_a_cached_key_needs_no_budget(server: KeyServer, host: SimulatedHost) -> None:
    clock = FakeClock()

    async def scenario() -> list[str]:
        async with InstallKeyFetcher(server.url, clock=clock, budget=FetchBudget(clock, 1)) as f:
            first = await f.get(host.kid)
            with pytest.raises(KeyServerBusy):
                await f.get("another-new-kid")
            return [first] + [await f.get(host.kid) for _ in range(5)]

    assert asyncio.run(scenario()) == [host.public_pem] * 6
    assert server.requests == {host.kid: 1}


def test_unknown_kids_are_a_bounded_lru() -> None:
    clock = FakeClock()
    unknown = UnknownKids(clock, ttl=10, max_size=3)
    for kid in ("a", "b", "c"):
        unknown.add(kid)
    assert "a" in unknown  # touched: now the most recent
    unknown.add("d")
    assert len(unknown) == 3
    assert "b" not in unknown
    assert {"a", "c", "d"} == {k for k in "abcd" if k in unknown}
    clock.advance(10)
    assert not any(k in unknown for k in "abcd")
    assert len(unknown) == 0


def test_fetch_budget_refills_at_its_rate_up_to_its_burst() -> None:
    clock = FakeClock()
    budget = FetchBudget(clock, burst=3, rate=2.0)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
    clock.advance(0.5)
    assert [budget.take(), budget.take()] == [True, False]
    clock.advance(3600)
    assert [budget.take() for _ in range(4)] == [True, True, True, False]
