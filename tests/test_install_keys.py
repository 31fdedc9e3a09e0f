"""InstallKeyFetcher against a real KeyServer over HTTP (app.hostsim)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import pytest

from app.hostsim import KeyServer, SimulatedHost
from app.install_keys import (
    InstallKeyError,
    InstallKeyFetcher,
    InvalidKid,
    KeyServerUnavailable,
    UnknownKid,
)


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


def test_unknown_kid(server: KeyServer) -> None:
    async def scenario() -> None:
        async with InstallKeyFetcher(server.url) as fetcher:
            with pytest.raises(UnknownKid) as caught:
                await fetcher.get("no-such-kid")
            assert caught.value.code == "unknown_kid"
            # Not cached: a key published later must be found.
            with pytest.raises(UnknownKid):
                await fetcher.get("no-such-kid")

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
    for error in (InvalidKid, UnknownKid, KeyServerUnavailable):
        assert issubclass(error, InstallKeyError)
    assert len({InvalidKid.code, UnknownKid.code, KeyServerUnavailable.code}) == 3


def test_injected_client_is_not_closed(server: KeyServer, host: SimulatedHost) -> None:
    import httpx

    async def scenario() -> bool:
        async with httpx.AsyncClient() as client:
            fetcher = InstallKeyFetcher(server.url, client=client)
            assert await fetcher.get(host.kid) == host.public_pem
            await fetcher.aclose()
            return client.is_closed

    assert asyncio.run(scenario()) is False
