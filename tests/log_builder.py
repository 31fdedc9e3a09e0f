"""Random but valid tenant histories, appended through the real decider and the real
shell, for tests of the runner and rebuild (the log must look like one the service
would write).

``FakeKeys`` is the shell's ``Steps`` without a keyring: a deterministic fake seals a
secret as ``"ct:" + secret`` and reads it back, so tests see which secret is current.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from app.ingest import shell
from app.ingest.connect.decider import (
    DECIDER,
    CurrentSecret,
    LifecycleCall,
    LifecycleEvent,
    Sealer,
    TenantEvent,
    TenantState,
    sealed_rows,
)
from app.ingest.connect.tokens import VerifiedToken
from eventstore.events import Metadata, SealedSecret, stream_id_for
from eventstore.store import EventStore

SITES = [f"https://site{i}.atlassian.net" for i in range(6)]
VERSIONS = ["1", "2", "3"]


def fake_seal(secret: str, ad: str) -> SealedSecret:
    return SealedSecret(alg="A256GCM", nonce="n", ct="ct:" + secret, ad=ad)


def fake_reveal(sealed: SealedSecret) -> str:
    return sealed.ct[3:]


@dataclass(frozen=True)
class FakeKeys:
    """``app.ingest.shell.Steps`` for one call: the current secret handed to the decider is
    revealed from the state's fake ciphertext, new secrets are sealed by ``seal``."""

    call: LifecycleCall
    seal: Sealer = fake_seal
    reveal: Callable[[SealedSecret], CurrentSecret] = fake_reveal

    def command(self, state: TenantState, stored_key: bytes | None = None) -> LifecycleCall:
        current = self.reveal(state.secret) if state.secret is not None else None
        return replace(self.call, current_secret=current)

    def rows(
        self,
        stream_id: str,
        state: TenantState,
        version: int,
        decision: shell.Append[TenantEvent],
        stored_key: bytes | None = None,
    ) -> shell.Rows:
        return shell.Rows(sealed_rows(stream_id, version, decision, self.seal))


def verified_call(
    event: LifecycleEvent,
    client_key: str,
    payload: dict[str, Any],
    *,
    secret: str | None,
    iat: int,
    sha256: str,
    descriptor_version: str | None,
    metadata: Metadata,
    alg: str = "RS256",
) -> LifecycleCall:
    """A call whose token verified (iss ``client_key``)."""
    token = VerifiedToken(alg=alg, kid=None, iss=client_key, iat=iat, exp=iat + 300, sha256=sha256)
    return LifecycleCall(
        event=event,
        alg=alg,
        verification=token,
        payload=payload,
        shared_secret=secret if event == "installed" else None,
        descriptor_version=descriptor_version,
        metadata=metadata,
    )


def append_random_calls(store: EventStore, rng: random.Random, calls: int, tenants: int = 8) -> int:
    """Append ``calls`` random lifecycle calls; returns the number of events written."""
    written = 0
    for _ in range(calls):
        key = f"client-{rng.randrange(tenants)}"
        stream = stream_id_for(key)
        base_url = shell.fold(DECIDER, stream, store.read_stream(stream))[0].base_url
        event: LifecycleEvent = rng.choice(
            ["installed", "installed", "installed", "enabled", "disabled", "uninstalled"]
        )
        payload: dict[str, Any] = {
            "key": "tenant-ledger",
            "clientKey": key,
            "baseUrl": rng.choice(SITES) if rng.random() < 0.3 or base_url is None else base_url,
            "productType": rng.choice(["jira", "confluence"]),
            "displayUrl": rng.choice(SITES),
        }
        version = rng.choice(VERSIONS)
        call = verified_call(
            event,
            key,
            payload,
            secret=rng.choice(["s1", "s2"]) if event == "installed" else None,
            iat=written,
            sha256=f"{rng.getrandbits(64):x}",
            descriptor_version=version,
            metadata=Metadata(descriptor_version=version, iat=written),
        )
        result = shell.run_with_blocking(DECIDER, store, stream, FakeKeys(call))
        written += len(result.events) if result.appended else 0
    return written
