"""The imperative shell around a Forge lifecycle call: SPEC §10 rules 0-7 in order.

The first failure decides the answer; every refusal becomes an ``Outcome`` with a
reason code and one rejection-log row naming the installation and cloudId the token
claims (the body's when no token can be read), and the token only as its SHA-256.
The routes only translate outcomes into HTTP. Neither the FIT nor the
``x-forge-oauth-*`` tokens nor the ``contextToken`` is stored or logged: only hashes.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from anyio import to_thread

from app.ingest import shell
from app.ingest.forge.body import (
    BodyError,
    ForgeBody,
    Route,
    check_body,
    claimed_installation,
    delivery_sha256,
    facts_of,
    parse_forge_body,
)
from app.ingest.forge.decider import ForgeCall, InstallationDecider
from app.ingest.forge.keys import JwksFetcher, JwksUnavailable, UnknownKid
from app.ingest.forge.tokens import ForgeToken, TokenError, claimed_identity, read_fit, verify_fit
from app.ingest.known_streams import KnownStreams
from app.ingest.outcome import Outcome, Refusal, record_refusal
from app.settings import Settings
from eventstore.async_log import AsyncEventLog
from eventstore.clock import format_timestamp, utcnow
from eventstore.errors import StoreError
from eventstore.events import Metadata, installation_stream_id
from eventstore.store import EventStore

log = logging.getLogger("ledger.forge")

DECIDER = InstallationDecider()


@dataclass(frozen=True, slots=True)
class ForgeRequest:
    route: Route
    path: str
    authorization: str | None
    content_type: str | None
    body: bytes
    remote_addr: str | None
    trace_id: str | None = None


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


class ForgeIngestor:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        log: AsyncEventLog,
        jwks: JwksFetcher | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store  # the rejection log
        self.log = log  # the hot path: read the stream, group-committed append
        self.jwks = jwks or JwksFetcher(settings.forge_jwks_url_list)
        self.clock = clock
        self.known = KnownStreams()  # the installations' streams seen to exist: one read saved

    async def aclose(self) -> None:
        await self.jwks.aclose()

    async def handle(self, request: ForgeRequest) -> Outcome:
        call_id = uuid.uuid4().hex
        token: str | None = None
        verified: ForgeToken | None = None
        try:
            app_id = self.settings.forge_app_uuid  # rule 0, before anything else
            if app_id is None:
                raise Refusal(401, "forge_not_configured", "LEDGER_FORGE_APP_ID is not set")
            body = self._parse_body(request)
            token = bearer_token(request.authorization)
            if token is None:
                raise Refusal(401, "missing_token", "Authorization: Bearer <FIT> is required")
            verified = await self.verify_token(token, app_id)
            problem = check_body(request.route, body.fields, verified)
            if problem is not None:
                raise Refusal(401, "body_token_mismatch", problem)
            outcome = await self._decide_append(request, body, verified, call_id)
        except Refusal as refusal:
            outcome = Outcome(
                refusal.status,
                refusal.code,
                call_id,
                refusal.detail,
                verified.installation_id if verified else None,
                retry_after=refusal.retry_after,
            )
        if outcome.refused:
            await to_thread.run_sync(self._record_rejection, request, token, verified, outcome)
        return outcome

    def _parse_body(self, request: ForgeRequest) -> ForgeBody:
        try:
            return parse_forge_body(request.body, request.content_type)
        except BodyError as error:
            raise Refusal(error.status, error.code, error.detail) from None

    async def verify_token(self, token: str, app_id: str) -> ForgeToken:
        """Rules 3-4 (also for ``/auth/forge/verify``); raises ``Refusal``."""
        try:
            fit = read_fit(token)
        except TokenError as error:
            raise Refusal(401, error.code, error.detail) from None
        try:
            key = await self.jwks.key(fit.kid)
        except UnknownKid:
            raise Refusal(401, "unknown_kid", "no Forge JWKS document holds this kid") from None
        except JwksUnavailable:
            raise Refusal(
                503,
                "jwks_unavailable",
                "a Forge JWKS document cannot be read; retry later",
                self.settings.retry_after_seconds,
            ) from None
        try:
            return verify_fit(
                fit,
                key,
                app_id=app_id,
                now=int(self.clock()),
                leeway=self.settings.clock_skew_seconds,
            )
        except TokenError as error:
            raise Refusal(401, error.code, error.detail) from None

    # -- rules 5-7, in the event loop (the log is async; SQLite's runs in threads)

    async def _decide_append(
        self, request: ForgeRequest, body: ForgeBody, token: ForgeToken, call_id: str
    ) -> Outcome:
        delivery = delivery_sha256(request.route, body.fields, token)
        call = ForgeCall(
            route=request.route,
            facts=facts_of(request.route, body.fields, token),
            delivery_sha256=delivery,
            metadata=_metadata(request, body, token, call_id, delivery),
        )
        installation = token.installation_id
        try:
            stream_id = installation_stream_id(installation)
            result = await shell.run(DECIDER, self.log, stream_id, call, known=self.known)
        except StoreError:  # unavailable, or any other trouble of the store: retryable
            return self._unavailable(
                call_id, installation, "store_unavailable", "the ledger's store is unavailable"
            )
        except shell.Contention:
            return self._unavailable(
                call_id,
                installation,
                "contention",
                "too many concurrent calls for this installation",
            )
        if not result.appended:
            return Outcome(204, "duplicate", call_id, subject=installation)
        return Outcome(204, "accepted", call_id, subject=installation, events=len(result.events))

    def _unavailable(self, call_id: str, installation: str, code: str, detail: str) -> Outcome:
        return Outcome(
            503,
            code,
            call_id,
            detail + "; retry later",
            installation,
            retry_after=self.settings.retry_after_seconds,
        )

    def _record_rejection(
        self,
        request: ForgeRequest,
        token: str | None,
        verified: ForgeToken | None,
        outcome: Outcome,
    ) -> None:
        installation, cloud_id = claimed_identity(token)
        if verified is not None:
            installation = verified.installation_id
            cloud_id = verified.cloud_ids[0] if verified.cloud_ids else cloud_id
        if installation is None and cloud_id is None:
            installation, cloud_id = claimed_installation(request.body)
        record_refusal(
            self.store,
            path=request.path,
            reason=outcome.code,
            status=outcome.status,
            subject=installation,  # SPEC §10: the installation in place of clientKey
            site=cloud_id,  # and its cloudId in place of baseUrl
            remote_addr=request.remote_addr,
            token=token,
            detail=outcome.detail,
            log_fields={"call_id": outcome.call_id},
        )


def _metadata(
    request: ForgeRequest, body: ForgeBody, token: ForgeToken, call_id: str, delivery: str
) -> Metadata:
    """Where the call came from: hashes of the FIT and the contextToken, never themselves."""
    retry = body.retry_context or {}
    count, reason = retry.get("retryCount"), retry.get("retryReason")
    context_token = body.fields.get("contextToken")
    return Metadata(
        call_id=call_id,
        received_at=format_timestamp(utcnow()),
        token_sha256=token.sha256,
        iat=token.iat,
        alg="RS256",
        kid=token.kid,
        remote_addr=request.remote_addr,
        path=request.path,
        delivery_sha256=delivery,
        jti=token.jti,
        trace_id=request.trace_id[:128] if request.trace_id else None,
        retry_count=count if isinstance(count, int) and not isinstance(count, bool) else None,
        retry_reason=str(reason)[:256] if reason is not None else None,
        context_token_sha256=_sha256(context_token) if isinstance(context_token, str) else None,
    )
