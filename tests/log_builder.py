"""Random but valid tenant histories, appended through the real decider, for tests of
the runner and rebuild (the log must look like one the service would write)."""

from __future__ import annotations

import random
from typing import Any

from app.lifecycle import Accept, LifecycleCall, decide, fold
from eventstore.events import Metadata, SealedSecret, stream_id_for
from eventstore.store import EventStore, NewEvent

SITES = [f"https://site{i}.atlassian.net" for i in range(6)]
VERSIONS = ["1", "2", "3"]


def fake_seal(secret: str, ad: str) -> SealedSecret:
    return SealedSecret(alg="A256GCM", nonce="bm9uY2U=", ct="c2VhbGVk", ad=ad)


def append_random_calls(store: EventStore, rng: random.Random, calls: int, tenants: int = 8) -> int:
    """Append ``calls`` random lifecycle calls; returns the number of events written."""
    written = 0
    for _ in range(calls):
        key = f"client-{rng.randrange(tenants)}"
        stream = stream_id_for(key)
        state = fold(stream, store.read_stream(stream))
        event = rng.choice(
            ["installed", "installed", "installed", "enabled", "disabled", "uninstalled"]
        )
        payload: dict[str, Any] = {
            "key": "tenant-ledger",
            "clientKey": key,
            "baseUrl": rng.choice(SITES)
            if rng.random() < 0.3 or state.base_url is None
            else state.base_url,
            "productType": rng.choice(["jira", "confluence"]),
            "displayUrl": rng.choice(SITES),
        }
        version = rng.choice(VERSIONS)
        call = LifecycleCall(
            event=event,  # type: ignore[arg-type]
            client_key=key,
            payload=payload,
            shared_secret=rng.choice(["s1", "s2"]) if event == "installed" else None,
            iat=written,
            token_sha256=f"{rng.getrandbits(64):x}",
            descriptor_version=version,
            metadata=Metadata(descriptor_version=version, iat=written),
        )
        current = "s1" if state.secret is not None else None
        decision = decide(state, call, current, fake_seal)
        if isinstance(decision, Accept):
            store.append(
                stream, [NewEvent(d, call.metadata) for d in decision.events], state.version
            )
            written += len(decision.events)
    return written
