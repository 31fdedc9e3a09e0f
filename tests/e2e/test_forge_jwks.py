"""The JWKS fetcher against a real JWKS server over HTTP, with a clock the test moves."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator

import pytest

from app.ingest.forge.keys import JwksFetcher, JwksUnavailable, UnknownKid, parse_jwks
from app.sim.forge import ForgePlatform, JwksServer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[JwksServer]:
    with JwksServer(slow_seconds=3) as running:
        yield running


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def lookup(fetcher: JwksFetcher, kid: str) -> str:
    try:
        await fetcher.key(kid)
    except UnknownKid:
        return "unknown"
    except JwksUnavailable:
        return "unavailable"
    return "found"


def test_a_published_key_is_found_and_cached(server: JwksServer) -> None:
    platform = ForgePlatform(jwks=server)
    clock = Clock()

    async def scenario() -> list[str]:
        fetcher = JwksFetcher([server.url], clock=clock)
        try:
            found = [await lookup(fetcher, kid) for kid, _ in platform.keys]
            found += [await lookup(fetcher, platform.kid) for _ in range(20)]
            return found
        finally:
            await fetcher.aclose()

    assert run(scenario()) == ["found"] * 22
    assert server.requests == 1


def test_a_flood_of_random_kids_costs_one_fetch_a_minute(server: JwksServer) -> None:
    ForgePlatform(jwks=server)
    clock = Clock()

    async def scenario() -> list[int]:
        fetcher = JwksFetcher([server.url], clock=clock)
        counts = []
        try:
            for _minute in range(3):
                # Concurrent and sequential unknown kids: single flight, rate limited.
                answers = await asyncio.gather(
                    *(lookup(fetcher, secrets.token_hex(8)) for _ in range(200))
                )
                answers += [await lookup(fetcher, secrets.token_hex(8)) for _ in range(200)]
                assert set(answers) == {"unknown"}
                counts.append(server.requests)
                clock.now += 30
                await lookup(fetcher, secrets.token_hex(8))  # within the minute: no fetch
                clock.now += 31
            return counts
        finally:
            await fetcher.aclose()

    # 1200 made-up kids over three minutes: one fetch a minute.
    assert run(scenario()) == [1, 2, 3]


def test_a_rotated_in_key_is_found_after_the_unknown_kid_interval(server: JwksServer) -> None:
    platform = ForgePlatform()
    first_kid, first_key = platform.keys[0]
    server.publish(first_kid, first_key.public_key())
    clock = Clock()

    async def scenario() -> list[str]:
        fetcher = JwksFetcher([server.url], clock=clock)
        try:
            answers = [await lookup(fetcher, first_kid)]
            new_kid, new_key = platform.keys[1]
            server.publish(new_kid, new_key.public_key())
            answers.append(await lookup(fetcher, new_kid))  # fetched a moment ago
            clock.now += 61
            answers.append(await lookup(fetcher, new_kid))
            return answers
        finally:
            await fetcher.aclose()

    assert run(scenario()) == ["found", "unknown", "found"]


def test_an_outage_keeps_known_keys_and_answers_unavailable_for_others(server: JwksServer) -> None:
    platform = ForgePlatform(jwks=server)
    clock = Clock()

    async def scenario() -> list[str]:
        fetcher = JwksFetcher([server.url], clock=clock)
        try:
            answers = [await lookup(fetcher, platform.kid)]
            server.set_mode("error")
            clock.now += 601  # stale: the next call refreshes, and the refresh fails
            answers.append(await lookup(fetcher, platform.kid))
            answers.append(await lookup(fetcher, "never-published"))
            before = server.requests
            for _ in range(50):  # within 5 s of the failure: no new fetch
                answers.append(await lookup(fetcher, "never-published"))
            assert server.requests == before
            clock.now += 5
            server.set_mode("up")
            answers.append(await lookup(fetcher, "never-published"))
            return answers
        finally:
            await fetcher.aclose()

    answers = run(scenario())
    assert answers[:3] == ["found", "found", "unavailable"]
    assert set(answers[3:-1]) == {"unavailable"}
    assert answers[-1] == "unknown"


def test_a_kid_is_chosen_across_documents(server: JwksServer) -> None:
    platform = ForgePlatform(jwks=server)
    clock = Clock()
    with JwksServer() as second:
        other = ForgePlatform(jwks=second)
        second.set_mode("error")

        async def scenario() -> list[str]:
            fetcher = JwksFetcher([server.url, second.url], clock=clock)
            try:
                answers = [await lookup(fetcher, platform.kid), await lookup(fetcher, other.kid)]
                second.set_mode("not_found")
                clock.now += 6
                answers.append(await lookup(fetcher, other.kid))
                return answers
            finally:
                await fetcher.aclose()

        # Found in the reachable one; in none while one is down → 503; all answered → 401.
        assert run(scenario()) == ["found", "unavailable", "unknown"]


def test_a_slow_document_times_out_as_unavailable(server: JwksServer) -> None:
    server.set_mode("slow")

    async def scenario() -> str:
        fetcher = JwksFetcher([server.url], timeout=0.3, clock=Clock())
        try:
            return await lookup(fetcher, "any")
        finally:
            server.set_mode("up")
            await fetcher.aclose()

    assert run(scenario()) == "unavailable"


def test_parse_jwks_skips_what_is_not_an_rsa_signing_key(server: JwksServer) -> None:
    platform = ForgePlatform(jwks=server)
    document = server.document()
    document["keys"] += [
        {"kty": "EC", "kid": "ec", "crv": "P-256"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"},
        {"kty": "RSA", "kid": "broken", "n": 5, "e": "AQAB"},
        "not a key",
    ]
    keys = parse_jwks(json.dumps(document).encode())
    assert set(keys) == {kid for kid, _ in platform.keys}
    for bad in (b"[]", b'{"keys": 3}', b"{}"):
        with pytest.raises(ValueError):
            parse_jwks(bad)


@pytest.mark.parametrize("trouble", ["redirect", "too_large"])
def test_no_redirects_and_a_size_limit(server: JwksServer, trouble: str) -> None:
    platform = ForgePlatform()
    kid, key = platform.keys[0]
    if trouble == "redirect":
        server.publish(kid, key.public_key())
        server.set_mode("redirect")
    else:
        for n in range(700):  # one key under many kids: a document over 256 KiB
            server.publish(f"{kid}-{n}", key.public_key())
        assert len(json.dumps(server.document())) > 256 * 1024

    async def scenario() -> str:
        fetcher = JwksFetcher([server.url], clock=Clock())
        try:
            return await lookup(fetcher, f"{kid}-1" if trouble == "too_large" else kid)
        finally:
            await fetcher.aclose()

    assert run(scenario()) == "unavailable"
    assert server.requests == 1
