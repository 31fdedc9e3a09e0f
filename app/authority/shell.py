"""The tenant authority's imperative shell (SPEC §11): the in-memory directory and its
follower, the three routes' requests read and decided, refusals into the rejection log.

The routes (``app.http.routes.authority``) let a call in only with a service token
(``app.authority.service_auth``) and translate the ``AuthAnswer`` into HTTP; the
decisions are ``app.authority.connect``'s, and Forge's tokens are verified by the
ingestion's own code (``ForgeIngestor.verify_token``: the same JWKS cache and rules).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec
from anyio import to_thread

from app.authority import connect
from app.authority.connect import AuthRefused, Tenants
from app.authority.follower import Follower
from app.authority.view import Directory
from app.ingest.connect.body import MAX_BODY_BYTES
from app.ingest.forge.ingestor import ForgeIngestor, bearer_token
from app.ingest.forge.tokens import ForgeToken, claimed_identity
from app.ingest.jwt import TokenError, parse_token
from app.ingest.outcome import Refusal, record_refusal
from app.settings import Settings
from eventstore.crypto import KeyRing
from eventstore.ids import installation_ari
from eventstore.store import EventStore

log = logging.getLogger("ledger.authority")

AuthRoute = Literal["connect/verify", "connect/sign", "forge/verify"]
ROUTES: Final[tuple[AuthRoute, ...]] = ("connect/verify", "connect/sign", "forge/verify")


@dataclass(frozen=True, slots=True)
class AuthRequest:
    route: AuthRoute
    path: str
    body: bytes
    content_type: str | None
    remote_addr: str | None


@dataclass(frozen=True, slots=True)
class AuthAnswer:
    status: int
    code: str  # "ok" or the refusal's code
    body: dict[str, Any]
    retry_after: int | None = None


@dataclass(slots=True)
class _Seen:
    """What a refusal's rejection-log row names: the token (as its SHA-256 only) and the
    tenant or installation it claims."""

    token: str | None = None
    subject: str | None = None
    site: str | None = None


def read_json_object(body: bytes, content_type: str | None) -> dict[str, Any]:
    if len(body) > MAX_BODY_BYTES:
        raise AuthRefused(413, "body_too_large", "the body is larger than 64 KiB")
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise AuthRefused(400, "invalid_request", "the body must be application/json")
    try:
        value = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError, UnicodeDecodeError):
        raise AuthRefused(400, "invalid_request", "the body is not JSON") from None
    if not isinstance(value, dict):
        raise AuthRefused(400, "invalid_request", "the body must be a JSON object")
    return value


class Authority:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        keyring: KeyRing,
        forge: ForgeIngestor,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store  # the rejection log, and the log the follower reads
        self.keyring = keyring
        self.forge = forge
        self.clock = clock
        self.directory = Directory()
        self.follower = Follower(store, self.directory)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load every tenant, then follow the log in the background."""
        await to_thread.run_sync(self.follower.load)
        self._task = asyncio.get_running_loop().create_task(self.follower.run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _tenants(self) -> Tenants:
        if self.follower.stale():
            raise AuthRefused(
                503,
                "authority_stale",
                "the ledger cannot read its log now; retry later",
                retry_after=self.settings.retry_after_seconds,
            )
        return Tenants(self.directory.tenants, self.directory.data_keys)

    async def handle(self, request: AuthRequest) -> AuthAnswer:
        seen = _Seen()
        try:
            body = read_json_object(request.body, request.content_type)
            if request.route == "forge/verify":
                answer = await self._forge_verify(body, seen)
            elif request.route == "connect/verify":
                answer = self._connect_verify(body, seen)
            else:
                answer = self._connect_sign(body, seen)
            return AuthAnswer(200, "ok", answer)
        except AuthRefused as refused:
            await to_thread.run_sync(self._record_rejection, request, refused, seen)
            return AuthAnswer(
                refused.status,
                refused.code,
                {"error": refused.code, "detail": refused.detail},
                refused.retry_after,
            )

    def _connect_verify(self, body: dict[str, Any], seen: _Seen) -> dict[str, Any]:
        settings = self.settings
        verifying = connect.read_verify(body, settings.app_base_urls)
        seen.token = verifying.token  # the clientKey it claims is read only if refused
        return connect.verify(
            verifying,
            self._tenants(),
            self.keyring,
            now=int(self.clock()),
            leeway=settings.clock_skew_seconds,
            retry_after=settings.retry_after_seconds,
        )

    def _connect_sign(self, body: dict[str, Any], seen: _Seen) -> dict[str, Any]:
        signing = connect.read_sign(body)
        seen.subject = signing.client_key
        view = self.directory.tenants.get(signing.client_key)
        seen.site = view.row.base_url if view is not None else None
        return connect.sign(
            signing,
            self._tenants(),
            self.keyring,
            app_key=self.settings.app_key,
            now=int(self.clock()),
            retry_after=self.settings.retry_after_seconds,
        )

    async def _forge_verify(self, body: dict[str, Any], seen: _Seen) -> dict[str, Any]:
        app_id = self.settings.forge_app_uuid
        if app_id is None:
            raise AuthRefused(401, "forge_not_configured", "LEDGER_FORGE_APP_ID is not set")
        authorization = body.get("authorization")
        token = bearer_token(authorization) if isinstance(authorization, str) else None
        if token is None:
            raise AuthRefused(401, "missing_token", "authorization must be Bearer <FIT>")
        seen.token = token
        seen.subject, seen.site = claimed_identity(token)
        try:
            verified = await self.forge.verify_token(token, app_id)
        except Refusal as refusal:
            raise AuthRefused(
                refusal.status, refusal.code, refusal.detail, retry_after=refusal.retry_after
            ) from None
        return self._forge_answer(verified)

    def _forge_answer(self, token: ForgeToken) -> dict[str, Any]:
        return {
            "installation_id": token.installation_id,
            "installation_ari": installation_ari(token.installation_id),
            "cloud_ids": list(token.cloud_ids),
            "app_version": token.app_version,
            "environment_type": token.environment_type,
            "license": token.license,
            "principal": token.principal,
            "client_keys": self.directory.client_keys(token.installation_id),
        }

    def _record_rejection(self, request: AuthRequest, refused: AuthRefused, seen: _Seen) -> None:
        record_refusal(
            self.store,
            path=request.path,
            reason=refused.code,
            status=refused.status,
            subject=refused.client_key or seen.subject or _claimed_iss(request, seen.token),
            site=seen.site,
            remote_addr=request.remote_addr,
            token=seen.token,
            detail=refused.detail,
            log_fields={"endpoint": request.path},
        )


def _claimed_iss(request: AuthRequest, token: str | None) -> str | None:
    """The clientKey an unverified Connect token claims, for the rejection log only."""
    if token is None or request.route != "connect/verify":
        return None
    try:
        iss = parse_token(token).token.iss
    except TokenError:  # an unreadable token claims nothing
        return None
    return iss[:255] if iss else None
