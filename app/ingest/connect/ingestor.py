"""The imperative shell around a Connect lifecycle call: body, token, key, verify, run.

The order of checks is SPEC §4's; the first failure decides the answer. Rules 1-3
(the body, the token, the RS256 install key) are checked here before any state is
read; everything that depends on the tenant (rules 4-7, and a secret that cannot be
read) is decided by ``app.ingest.connect.decider`` through the generic shell (``app.ingest.shell``):
each attempt reads the stream, opens the current secret, verifies the token with it
(``_TenantSteps.command``), lets the decider decide, then seals the new secrets it
emitted in plain text (``_TenantSteps.rows``) before the append.

Every refusal becomes an ``Outcome`` with a reason code and one rejection-log row.
Nothing here raises to the caller for a bad call: the routes only translate
outcomes into HTTP.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from app.ingest import shell
from app.ingest.connect.body import (
    LifecyclePayload,
    check_descriptor_version,
    claimed_identity,
    parse_lifecycle_body,
)
from app.ingest.connect.decider import (
    DECIDER,
    TOKEN_REUSED_DETAIL,
    CurrentSecret,
    LifecycleCall,
    LifecycleEvent,
    NotVerifiable,
    Refuse,
    SecretUnavailable,
    TenantEvent,
    TenantState,
    TokenRefused,
    Verification,
    needs_secret,
    sealed_rows,
)
from app.ingest.connect.keys import InstallKeyFetcher, InvalidKid, UnknownKid
from app.ingest.connect.tokens import (
    AppBase,
    VerifiedToken,
    body_mac,
    is_valid_kid,
    query_string_hash,
    relative_path,
    verify_install_token,
    verify_shared_secret_token,
)
from app.ingest.json_body import BodyError
from app.ingest.jwt import ParsedToken, TokenError, UnverifiedToken, parse_token
from app.ingest.key_fetch import KeyServerUnavailable
from app.ingest.known_streams import KnownStreams
from app.ingest.outcome import Outcome, Refusal, record_refusal
from app.settings import Settings
from eventstore.async_log import AsyncEventLog
from eventstore.clock import format_timestamp, utcnow
from eventstore.crypto import (
    CryptoError,
    KeyRing,
    MasterKeyUnavailable,
    open_secret,
    seal_secret,
    secret_ad,
)
from eventstore.errors import StoreUnavailable
from eventstore.events import Metadata, SealedSecret, client_key_of, stream_id_for
from eventstore.store import EventStore
from eventstore.values import RecordedEvent

log = logging.getLogger("ledger.ingest")


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
class _Checked:
    """A call past rules 1-2 and the install key's fetch: what every attempt needs."""

    request: CallRequest
    payload: LifecyclePayload
    token: ParsedToken  # parsed once, verified with the install key or the secret
    install_key: RSAPublicKey | None  # RS256 only
    call_id: str


def extract_token(authorization: str | None, query: list[tuple[str, str]]) -> str | None:
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.upper() == "JWT" and value.strip():
            return value.strip()
        return None
    values = [v for k, v in query if k == "jwt"]
    return values[0] if len(values) == 1 and values[0] else None


class _TenantKeys:
    """One attempt's view of a tenant's data key: the one read with the stream, opened
    when first needed, or made new.

    A tenant without a stored key (a first install, or one forgotten) gets a fresh
    key that is stored by the same append that first uses it, so a first install
    costs one transaction, and a lost race leaves no orphan key behind. A stored key
    that does not unwrap is a configuration error (its master key was dropped from
    ``LEDGER_MASTER_KEY``), never taken for a forgotten tenant: the decider refuses
    the calls that need the secret with a retryable 503 until the key is back.
    """

    def __init__(self, keyring: KeyRing, stream_id: str, wrapped: bytes | None) -> None:
        self._keyring = keyring
        self._stream_id = stream_id
        self._wrapped = wrapped
        self._key: bytes | None = None
        self._opened = wrapped is None  # nothing stored: nothing to open
        self.problem: CryptoError | None = None  # why the stored key did not unwrap
        self.wrapped_new_key: bytes | None = None

    def _stored(self) -> bytes | None:
        if not self._opened:
            self._opened = True
            assert self._wrapped is not None  # _opened starts False only with a key
            try:
                self._key = self._keyring.unwrap(self._stream_id, self._wrapped)
            except CryptoError as error:  # MasterKeyUnavailable too
                self.problem = error
        return self._key

    def current_secret(self, state: TenantState) -> CurrentSecret:
        """The plain current secret; None when there is none or it was forgotten.

        It opens only with the associated data of the event that carried it
        (stream and version), so a ciphertext copied into a later event does not.
        """
        if state.secret is None:
            return None
        key = self._stored()
        if self.problem is not None:
            return _unavailable(self.problem)
        if key is None:
            return None  # forgotten: `ledger forget` destroyed the data key
        try:
            return open_secret(key, state.secret, secret_ad(self._stream_id, state.secret_version))
        except CryptoError:
            log.error(
                "the tenant's current secret does not open with the associated data of the"
                " event that carries it (version %d)",
                state.secret_version,
                extra={"reason": "secret_unreadable", "client_key": client_key_of(self._stream_id)},
            )
            return None

    def seal(self, secret: str, ad: str) -> SealedSecret:
        key = self._stored()
        if key is None:
            key, self.wrapped_new_key = self._keyring.new_key(self._stream_id)
            self._key = key
        return seal_secret(key, secret, ad)

    def log_problem(self) -> None:
        """Tell the operator why a call was refused for an unreadable key (never the key)."""
        client_key = client_key_of(self._stream_id)
        if isinstance(self.problem, MasterKeyUnavailable):
            log.error(
                "master key %s is not configured (LEDGER_MASTER_KEY holds %s): the data key"
                " of this tenant does not unwrap; put the key back, or run `ledger rewrap`"
                " while it is still configured",
                self.problem.key_id,
                ", ".join(self._keyring.master_key_ids),
                extra={"reason": "master_key_unavailable", "client_key": client_key},
            )
        elif self.problem is not None:
            log.error(
                "the stored data key of this tenant is damaged or belongs to another stream",
                extra={"reason": "data_key_unreadable", "client_key": client_key},
            )


def _unavailable(problem: CryptoError) -> SecretUnavailable:
    if isinstance(problem, MasterKeyUnavailable):
        return SecretUnavailable(
            "master_key_unavailable",
            "the master key that protects this tenant's secret is not configured; retry later",
        )
    return SecretUnavailable(
        "data_key_unreadable", "this tenant's data key cannot be read; retry later"
    )


def _other_body(events: Sequence[RecordedEvent], mac: str) -> bool:
    """Whether the events stored for a token came with another body (rule 6); events
    stored before bodies were told apart (no mac) count as the same body."""
    return any(e.metadata.body_mac not in (None, mac) for e in events)


class _TenantSteps:
    """One call's steps around the tenant decider (``app.ingest.shell.Steps``): each attempt
    opens the current secret and verifies the token with it; an accepted decision's
    new secrets are sealed with the tenant's data key before the append."""

    def __init__(self, ingestor: LifecycleIngestor, checked: _Checked) -> None:
        self._settings = ingestor.settings
        self._keyring = ingestor.keyring
        self._clock = ingestor.clock
        self._checked = checked
        request = checked.request
        # One query string hash per app base URL the host may have signed for (the
        # current one first): the path is relative to the base (SPEC §4 rule 3). The
        # host signed the path it saw: behind a proxy that mounts the ledger under
        # LEDGER_ROOT_PATH (and strips it), the prefix is part of it (SPEC §11).
        signed_path = self._settings.root_path + request.path
        current, *previous = (
            AppBase(
                base,
                query_string_hash(request.method, relative_path(signed_path, base), request.query),
            )
            for base in self._settings.app_base_urls
        )
        self._qsh = current.qsh
        self._previous = tuple(previous)
        self._descriptor_version = next((v for k, v in request.query if k == "v"), None)
        self.body_mac = body_mac(checked.token, self._body())

    def command(self, state: TenantState, stored_key: bytes | None) -> LifecycleCall:
        checked = self._checked
        keys = self._keys(state, stored_key)
        current = keys.current_secret(state)
        verification = self._verify(current)
        event = checked.request.event
        call = LifecycleCall(
            event=event,
            alg=checked.token.token.alg,
            verification=verification,
            payload=checked.payload.fields,
            shared_secret=checked.payload.shared_secret if event == "installed" else None,
            descriptor_version=self._descriptor_version,
            metadata=self._metadata(verification),
            current_secret=current,
        )
        if isinstance(current, SecretUnavailable) and needs_secret(call):
            keys.log_problem()  # the decider refuses it with a 503: tell the operator why
        return call

    def rows(
        self,
        stream_id: str,
        state: TenantState,
        version: int,
        decision: shell.Append[TenantEvent],
        stored_key: bytes | None,
    ) -> shell.Rows:
        keys = self._keys(state, stored_key)
        rows = sealed_rows(stream_id, version, decision, keys.seal)
        return shell.Rows(rows, keys.wrapped_new_key)

    def _keys(self, state: TenantState, stored_key: bytes | None) -> _TenantKeys:
        # A tenant never installed has no key of its own yet (one left by a lost race
        # is refused by the append's check, and the call decided again).
        wrapped = stored_key if state.known else None
        return _TenantKeys(self._keyring, state.stream_id, wrapped)

    def _verify(self, current: CurrentSecret) -> Verification:
        """Rules 3-4's signature and claims, with the install key or the current secret."""
        checked, settings = self._checked, self._settings
        now, leeway = int(self._clock()), settings.clock_skew_seconds
        client_key = checked.payload.client_key
        try:
            if checked.token.token.alg == "RS256" and checked.install_key is not None:
                return verify_install_token(
                    checked.token,
                    checked.install_key,
                    client_key=client_key,
                    app_base_url=settings.app_base_url,
                    qsh=self._qsh,
                    now=now,
                    leeway=leeway,
                    previous=self._previous,
                )
            if checked.token.token.alg == "HS256":
                if not isinstance(current, str):
                    return NotVerifiable()
                return verify_shared_secret_token(
                    checked.token,
                    current,
                    client_key=client_key,
                    qsh=self._qsh,
                    now=now,
                    leeway=leeway,
                    app_base_url=settings.app_base_url,
                    previous=self._previous,
                )
        except TokenError as error:
            return TokenRefused(error.code, error.detail)
        return TokenRefused("unsupported_alg", "only RS256 and HS256 tokens are accepted")

    def _metadata(self, verification: Verification) -> Metadata:
        request = self._checked.request
        token = verification if isinstance(verification, VerifiedToken) else None
        return Metadata(
            call_id=self._checked.call_id,
            received_at=format_timestamp(utcnow()),
            token_sha256=token.sha256 if token else None,
            iat=token.iat if token else None,
            alg=token.alg if token else None,
            kid=token.kid if token else None,
            remote_addr=request.remote_addr,
            path=request.path,
            descriptor_version=self._descriptor_version,
            app_base_url=token.app_base_url if token else None,
            body_mac=self.body_mac if token else None,
        )

    def _body(self) -> dict[str, Any]:
        """The body as sent, secret included (``payload.fields`` holds it without)."""
        payload = self._checked.payload
        if payload.shared_secret is None:
            return dict(payload.fields)
        return {**payload.fields, "sharedSecret": payload.shared_secret}


class LifecycleIngestor:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        log: AsyncEventLog,
        keyring: KeyRing,
        fetcher: InstallKeyFetcher,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store  # the rejection log
        self.log = log  # the hot path: read the stream, group-committed append
        self.keyring = keyring
        self.fetcher = fetcher
        self.clock = clock
        self.known = KnownStreams()  # the tenants' streams seen to exist: one read saved

    async def handle(self, request: CallRequest) -> Outcome:
        call_id = uuid.uuid4().hex
        token: str | None = None
        payload: LifecyclePayload | None = None
        try:
            payload = self._parse_body(request)
            token = extract_token(request.authorization, request.query)
            if token is None:
                raise Refusal(401, "missing_token", "Authorization: JWT <token> is required")
            try:
                parsed = parse_token(token)
            except TokenError as error:
                raise Refusal(401, error.code, error.detail) from None
            install_key = await self._install_key(parsed.token)
            checked = _Checked(request, payload, parsed, install_key, call_id)
            outcome = await self._run(checked)
        except Refusal as refusal:
            outcome = Outcome(
                status=refusal.status,
                code=refusal.code,
                call_id=call_id,
                detail=refusal.detail,
                subject=payload.client_key if payload else None,
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
            raise Refusal(error.status, error.code, error.detail) from None

    # -- rule 3: the install key, fetched by kid before any state is read

    async def _install_key(self, unverified: UnverifiedToken) -> RSAPublicKey | None:
        if unverified.alg != "RS256":
            return None
        kid = unverified.kid
        if kid is None or not is_valid_kid(kid):
            raise Refusal(401, "invalid_kid", "the token's kid is missing or not allowed")
        try:
            # The fetcher caches the loaded key: no PEM parse per call.
            return await self.fetcher.get_public_key(kid)
        except (InvalidKid, UnknownKid) as error:
            raise Refusal(401, error.code, error.public_detail) from None
        except KeyServerUnavailable as error:  # key_server_busy and an unreadable key too
            raise Refusal(
                503, error.code, error.public_detail, self.settings.retry_after_seconds
            ) from None

    # -- rules 4-8, in the event loop (the log is async; SQLite's runs in threads)

    async def _run(self, checked: _Checked) -> Outcome:
        # Rule 5: the stream is chosen by the clientKey, which the verified iss must equal.
        client_key = checked.payload.client_key
        steps = _TenantSteps(self, checked)
        try:
            result = await shell.run_with(
                DECIDER, self.log, stream_id_for(client_key), steps, known=self.known
            )
        except shell.Contention:
            return self._retry_later(
                checked, "contention", "too many concurrent calls for this tenant; retry"
            )
        except StoreUnavailable:
            return self._retry_later(
                checked, "store_unavailable", "the ledger's store is unavailable; retry later"
            )
        decision, call_id = result.decision, checked.call_id
        if isinstance(decision, shell.Refuse):
            status = decision.status if isinstance(decision, Refuse) else 409
            retry_after = self.settings.retry_after_seconds if status == 503 else None
            return Outcome(
                status, decision.code, call_id, decision.detail, client_key, 0, retry_after
            )
        if isinstance(decision, shell.Skip):
            return Outcome(204, decision.code, call_id, decision.detail or None, client_key)
        if result.duplicate:  # the store's backstop: a race with the same token
            if _other_body(result.events, steps.body_mac):
                return Outcome(
                    409, "token_reused", call_id, TOKEN_REUSED_DETAIL, client_key, 0, None
                )
            return Outcome(204, "duplicate", call_id, subject=client_key)
        return Outcome(204, "accepted", call_id, subject=client_key, events=len(result.events))

    def _retry_later(self, checked: _Checked, code: str, detail: str) -> Outcome:
        return Outcome(
            503,
            code,
            checked.call_id,
            detail,
            checked.payload.client_key,
            retry_after=self.settings.retry_after_seconds,
        )

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
        record_refusal(
            self.store,
            path=request.path,
            reason=outcome.code,
            status=outcome.status,
            subject=client_key,
            site=base_url,
            remote_addr=request.remote_addr,
            token=token,
            detail=outcome.detail,
            log_fields={"call_id": outcome.call_id},
        )
