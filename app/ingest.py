"""The imperative shell around a lifecycle call: body, token, key, state, decide, append.

The order of checks is SPEC §4's; the first failure decides the answer. Every
refusal becomes an ``Outcome`` with a reason code and one rejection-log row.
Nothing here raises to the caller for a bad call: the routes only translate
outcomes into HTTP.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from anyio import to_thread

from app.install_keys import InstallKeyFetcher, InvalidKid, KeyServerUnavailable, UnknownKid
from app.lifecycle import (
    Accept,
    Ignore,
    LifecycleCall,
    LifecycleEvent,
    Refuse,
    TenantState,
    decide,
    fold,
)
from app.payload import (
    BodyError,
    LifecyclePayload,
    check_descriptor_version,
    claimed_identity,
    parse_lifecycle_body,
)
from app.settings import Settings
from app.tokens import (
    TokenError,
    UnverifiedToken,
    is_valid_kid,
    parse_unverified,
    query_string_hash,
    relative_path,
    token_sha256,
    verify_install_token,
    verify_shared_secret_token,
)
from eventstore.crypto import (
    CryptoError,
    KeyRing,
    MasterKeyUnavailable,
    open_secret,
    seal_secret,
    secret_ad,
)
from eventstore.events import Metadata, SealedSecret, client_key_of, stream_id_for
from eventstore.store import (
    ConcurrencyConflict,
    EventStore,
    NewEvent,
    Rejection,
    StoreError,
    StoreUnavailable,
    format_timestamp,
    utcnow,
)

log = logging.getLogger("ledger.ingest")

MAX_CONFLICT_RETRIES = 25


@dataclass(frozen=True, slots=True)
class CallRequest:
    event: LifecycleEvent
    path: str
    query: list[tuple[str, str]]
    authorization: str | None
    content_type: str | None
    body: bytes
    remote_addr: str | None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    code: str  # "accepted", "duplicate" or a refusal reason
    call_id: str
    detail: str | None = None
    client_key: str | None = None
    events: int = 0
    retry_after: int | None = None

    @property
    def refused(self) -> bool:
        return self.code not in ("accepted", "duplicate")


class _Refusal(Exception):
    def __init__(self, status: int, code: str, detail: str, retry_after: int | None = None) -> None:
        super().__init__(code)
        self.status = status
        self.code = code
        self.detail = detail
        self.retry_after = retry_after


def extract_token(authorization: str | None, query: list[tuple[str, str]]) -> str | None:
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.upper() == "JWT" and value.strip():
            return value.strip()
        return None
    values = [v for k, v in query if k == "jwt"]
    return values[0] if len(values) == 1 and values[0] else None


class _TenantKeys:
    """One attempt's view of a tenant's data key: read once when first needed, or made new.

    A tenant without a stored key (a first install, or one forgotten) gets a fresh
    key that is stored by the same append that first uses it, so a first install
    costs one transaction, and a lost race leaves no orphan key behind. A stored key
    that does not unwrap is a configuration error (its master key was dropped from
    ``LEDGER_MASTER_KEY``), never taken for a forgotten tenant: the call is refused
    with a retryable 503 until the operator puts the key back.
    """

    def __init__(self, keyring: KeyRing, stream_id: str, *, load: bool, retry_after: int) -> None:
        self._keyring = keyring
        self._stream_id = stream_id
        self._retry_after = retry_after
        self._key: bytes | None = None
        self._loaded = not load  # a tenant never installed has nothing to load
        self.wrapped_new_key: bytes | None = None

    def _stored(self) -> bytes | None:
        if not self._loaded:
            self._key = self._unwrap_stored()
            self._loaded = True
        return self._key

    def _unwrap_stored(self) -> bytes | None:
        client_key = client_key_of(self._stream_id)
        try:
            return self._keyring.stored_key(self._stream_id)
        except MasterKeyUnavailable as error:
            log.error(
                "master key %s is not configured (LEDGER_MASTER_KEY holds %s): the data key"
                " of this tenant does not unwrap; put the key back, or run `ledger rewrap`"
                " while it is still configured",
                error.key_id,
                ", ".join(self._keyring.master_key_ids),
                extra={"reason": "master_key_unavailable", "client_key": client_key},
            )
            raise _Refusal(
                503,
                "master_key_unavailable",
                "the master key that protects this tenant's secret is not configured; retry later",
                retry_after=self._retry_after,
            ) from None
        except CryptoError:
            log.error(
                "the stored data key of this tenant is damaged or belongs to another stream",
                extra={"reason": "data_key_unreadable", "client_key": client_key},
            )
            raise _Refusal(
                503,
                "data_key_unreadable",
                "this tenant's data key cannot be read; retry later",
                retry_after=self._retry_after,
            ) from None

    def open(self, sealed: SealedSecret | None, version: int) -> str | None:
        """The plain current secret; None when there is none or it was forgotten.

        It opens only with the associated data of the event that carried it
        (stream and version), so a ciphertext copied into a later event does not.
        """
        if sealed is None:
            return None
        key = self._stored()
        if key is None:
            return None  # forgotten: `ledger forget` destroyed the data key
        try:
            return open_secret(key, sealed, secret_ad(self._stream_id, version))
        except CryptoError:
            log.error(
                "the tenant's current secret does not open with the associated data of the"
                " event that carries it (version %d)",
                version,
                extra={"reason": "secret_unreadable", "client_key": client_key_of(self._stream_id)},
            )
            return None

    def seal(self, secret: str, ad: str) -> SealedSecret:
        key = self._stored()
        if key is None:
            key, self.wrapped_new_key = self._keyring.new_key(self._stream_id)
            self._key = key
        return seal_secret(key, secret, ad)


class LifecycleIngestor:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        keyring: KeyRing,
        fetcher: InstallKeyFetcher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.keyring = keyring
        self.fetcher = fetcher
        self.clock = clock

    async def handle(self, request: CallRequest) -> Outcome:
        call_id = uuid.uuid4().hex
        token: str | None = None
        payload: LifecyclePayload | None = None
        try:
            payload = self._parse_body(request)
            token = extract_token(request.authorization, request.query)
            if token is None:
                raise _Refusal(401, "missing_token", "Authorization: JWT <token> is required")
            try:
                unverified = parse_unverified(token)
            except TokenError as error:
                raise _Refusal(401, error.code, error.detail) from None
            install_key = await self._install_key(unverified)
            outcome = await to_thread.run_sync(
                self._verify_decide_append,
                request,
                payload,
                token,
                unverified,
                install_key,
                call_id,
            )
        except _Refusal as refusal:
            outcome = Outcome(
                status=refusal.status,
                code=refusal.code,
                call_id=call_id,
                detail=refusal.detail,
                client_key=payload.client_key if payload else None,
                retry_after=refusal.retry_after,
            )
        if outcome.refused:
            await to_thread.run_sync(self._record_rejection, request, payload, token, outcome)
        return outcome

    # -- rule 1

    def _parse_body(self, request: CallRequest) -> LifecyclePayload:
        try:
            payload = parse_lifecycle_body(
                request.body,
                request.content_type,
                app_key=self.settings.app_key,
                allowed_hosts=self.settings.allowed_host_patterns,
                dev_hosts=self.settings.dev_host_names,
                require_secret=request.event == "installed",
            )
            check_descriptor_version(request.query)
            return payload
        except BodyError as error:
            raise _Refusal(error.status, error.code, error.detail) from None

    # -- rule 3: the install key, fetched by kid before any state is read

    async def _install_key(self, unverified: UnverifiedToken) -> Any:
        if unverified.alg != "RS256":
            return None
        kid = unverified.kid
        if kid is None or not is_valid_kid(kid):
            raise _Refusal(401, "invalid_kid", "the token's kid is missing or not allowed")
        try:
            # The fetcher's cache holds the loaded key (and counts its hits for /metrics).
            return await self.fetcher.get_public_key(kid)
        except (InvalidKid, UnknownKid) as error:
            raise _Refusal(401, error.code, error.public_detail) from None
        except KeyServerUnavailable as error:  # key_server_busy and "not a PEM key" too
            raise _Refusal(
                503, error.code, error.public_detail, self.settings.retry_after_seconds
            ) from None

    # -- rules 3-8, in a worker thread: the store is synchronous

    def _verify_decide_append(
        self,
        request: CallRequest,
        payload: LifecyclePayload,
        token: str,
        unverified: UnverifiedToken,
        install_key: Any,
        call_id: str,
    ) -> Outcome:
        settings = self.settings
        qsh = query_string_hash(
            request.method, relative_path(request.path, settings.app_base_url), request.query
        )
        # Rule 5: the stream is chosen by the verified iss, which must equal clientKey.
        stream_id = stream_id_for(payload.client_key)
        descriptor_version = next((v for k, v in request.query if k == "v"), None)
        try:
            for _attempt in range(MAX_CONFLICT_RETRIES):
                now = int(self.clock())
                state = fold(stream_id, self.store.read_stream(stream_id))
                keys = _TenantKeys(
                    self.keyring,
                    stream_id,
                    load=state.known,
                    retry_after=settings.retry_after_seconds,
                )
                # Only HS256 verification and an `installed` decision need the secret: a
                # signed uninstall goes through even while a master key is missing.
                needs_secret = unverified.alg == "HS256" or request.event == "installed"
                current_secret = (
                    keys.open(state.secret, state.secret_version) if needs_secret else None
                )
                verified = self._verify(
                    request,
                    payload,
                    token,
                    unverified,
                    install_key,
                    state,
                    current_secret,
                    qsh,
                    now,
                )
                if verified is None:
                    return Outcome(
                        204,
                        "unknown_tenant",
                        call_id,
                        detail=f"{request.event} for a clientKey the ledger never installed",
                        client_key=payload.client_key,
                    )
                # Rule 6: a token accepted before has an iat no later than the last one.
                if (
                    state.last_iat is not None
                    and verified.iat <= state.last_iat
                    and self.store.find_idempotent(verified.sha256) is not None
                ):
                    return Outcome(204, "duplicate", call_id, client_key=payload.client_key)
                call = LifecycleCall(
                    event=request.event,
                    client_key=verified.iss,
                    payload=payload.fields,
                    shared_secret=payload.shared_secret if request.event == "installed" else None,
                    iat=verified.iat,
                    token_sha256=verified.sha256,
                    descriptor_version=descriptor_version,
                    metadata=Metadata(
                        call_id=call_id,
                        received_at=format_timestamp(utcnow()),
                        token_sha256=verified.sha256,
                        iat=verified.iat,
                        alg=verified.alg,
                        kid=verified.kid,
                        remote_addr=request.remote_addr,
                        path=request.path,
                        descriptor_version=descriptor_version,
                    ),
                )
                decision = decide(state, call, current_secret, keys.seal)
                if isinstance(decision, Refuse):
                    return Outcome(
                        decision.status, decision.code, call_id, decision.detail, payload.client_key
                    )
                if isinstance(decision, Ignore):
                    return Outcome(204, decision.code, call_id, decision.detail, payload.client_key)
                assert isinstance(decision, Accept)
                try:
                    result = self.store.append(
                        stream_id,
                        [NewEvent(data, call.metadata) for data in decision.events],
                        expected_version=state.version,
                        idempotency_key=verified.sha256,
                        data_key=keys.wrapped_new_key,
                    )
                except ConcurrencyConflict:
                    continue  # another call for this tenant won: re-read, re-verify, re-decide
                if result.duplicate:
                    return Outcome(204, "duplicate", call_id, client_key=payload.client_key)
                return Outcome(
                    204,
                    "accepted",
                    call_id,
                    client_key=payload.client_key,
                    events=len(result.events),
                )
            return Outcome(
                503,
                "contention",
                call_id,
                "too many concurrent calls for this tenant; retry",
                payload.client_key,
                retry_after=settings.retry_after_seconds,
            )
        except _Refusal as refusal:
            return Outcome(
                refusal.status,
                refusal.code,
                call_id,
                refusal.detail,
                payload.client_key,
                retry_after=refusal.retry_after,
            )
        except StoreUnavailable:
            return Outcome(
                503,
                "store_unavailable",
                call_id,
                "the ledger's store is unavailable; retry later",
                payload.client_key,
                retry_after=settings.retry_after_seconds,
            )

    def _verify(
        self,
        request: CallRequest,
        payload: LifecyclePayload,
        token: str,
        unverified: UnverifiedToken,
        install_key: Any,
        state: TenantState,
        current_secret: str | None,
        qsh: str,
        now: int,
    ) -> Any:
        """The verified token, or None for an HS256 call about a tenant never installed."""
        leeway = self.settings.clock_skew_seconds
        try:
            if unverified.alg == "RS256":
                return verify_install_token(
                    token,
                    install_key,
                    client_key=payload.client_key,
                    app_base_url=self.settings.app_base_url,
                    qsh=qsh,
                    now=now,
                    leeway=leeway,
                )
            if unverified.alg == "HS256":
                # A reinstall after an uninstall starts the tenant afresh (a new
                # Installed with a new secret), so like a first install it must be
                # signed by Atlassian: an old secret must not buy a new tenancy.
                if request.event == "installed" and state.status != "installed":
                    raise _Refusal(
                        401,
                        "first_install_not_signed",
                        "a first install, or a reinstall, must be signed by Atlassian (RS256)",
                    )
                if not state.known:
                    return None  # rule 7: nothing to verify with, nothing will be stored
                if current_secret is None:
                    raise _Refusal(401, "no_shared_secret", "the tenant's secret is not available")
                return verify_shared_secret_token(
                    token,
                    current_secret,
                    client_key=payload.client_key,
                    qsh=qsh,
                    now=now,
                    leeway=leeway,
                )
        except TokenError as error:
            raise _Refusal(401, error.code, error.detail) from None
        raise _Refusal(401, "unsupported_alg", "only RS256 and HS256 tokens are accepted")

    # -- the rejection log

    def _record_rejection(
        self,
        request: CallRequest,
        payload: LifecyclePayload | None,
        token: str | None,
        outcome: Outcome,
    ) -> None:
        client_key, base_url = (
            (payload.client_key, payload.base_url) if payload else claimed_identity(request.body)
        )
        rejection = Rejection(
            at=utcnow(),
            path=request.path,
            reason=outcome.code,
            status=outcome.status,
            client_key=client_key,
            base_url=base_url,
            remote_addr=request.remote_addr,
            token_sha256=token_sha256(token) if token else None,
            detail=outcome.detail,
        )
        try:
            self.store.record_rejection(rejection)
        except StoreError as error:
            # The log serves the call, never decides it: the answer stays the outcome's.
            log.warning(
                "rejection not stored: %s",
                type(error).__name__,
                extra={"call_id": outcome.call_id, "reason": outcome.code},
            )
