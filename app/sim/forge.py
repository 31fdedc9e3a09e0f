"""The simulated host's Forge side: a JWKS server and a platform that signs Forge
Invocation Tokens (FIT) and sends the three lifecycle calls and their retries.

Shipped with the product, like ``app.sim.connect``: ``ledger demo`` and the end-to-end
tests drive a running service with it. Tokens follow the real claim layout: ``iss``
``forge/invocation-token``, ``aud`` the app ARI, ``app.id``, ``app.installationId``
(an ARI), ``app.installation.contexts[].cloudId``, ``app.appVersion``,
``app.environment``, ``app.license`` (Forge's 2026 layout: ``active``, no
``isActive``; see ``license_2026``), a ``jti`` and a 25-second lifetime. Retries
carry a new token and wrap the body as ``{"payload": {…, "retryContext": {…}}}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.sim.server import BackgroundServer, QuietHandler
from eventstore.ids import app_ari, installation_ari

__all__ = ["ForgeCall", "ForgeInstallation", "ForgePlatform", "JwksServer"]

FIT_LIFETIME: Final = 25
JwksMode = Literal["up", "error", "slow", "not_found", "redirect"]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _b64_int(number: int) -> str:
    return _b64(number.to_bytes((number.bit_length() + 7) // 8, "big"))


# --- JWKS server ---------------------------------------------------------------


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        owner = self.server.owner
        owner._count()
        mode = owner.mode
        if mode == "slow":
            owner._wake.wait(owner.slow_seconds)
        if mode == "error":
            self._answer(503, b"unavailable\n", "text/plain")
        elif mode == "not_found":
            self._answer(404, b"not found\n", "text/plain")
        elif mode == "redirect":
            # A JWKS that moved: the ledger must not follow (it would let the answerer
            # point it anywhere).
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere.json")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._answer(200, json.dumps(owner.document()).encode(), "application/json")


class JwksServer(BackgroundServer):
    """Serves ``GET <anything>`` → the JWKS of the keys published on it."""

    handler = _Handler
    thread_name = "hostsim-jwks"

    def __init__(self, *, slow_seconds: float = 5.0) -> None:
        super().__init__(slow_seconds=slow_seconds)
        self.mode: JwksMode = "up"
        self.requests = 0
        self._keys: dict[str, rsa.RSAPublicKey] = {}

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the JWKS server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"

    def set_mode(self, mode: JwksMode) -> None:
        self.mode = mode
        self._rearm(slow=mode == "slow")

    def publish(self, kid: str, key: rsa.RSAPublicKey) -> None:
        with self._lock:
            self._keys[kid] = key

    def withdraw(self, kid: str) -> None:
        with self._lock:
            self._keys.pop(kid, None)

    def document(self) -> dict[str, Any]:
        with self._lock:
            keys = list(self._keys.items())
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "kid": kid,
                    "use": "sig",
                    "alg": "RS256",
                    "n": _b64_int(key.public_numbers().n),
                    "e": _b64_int(key.public_numbers().e),
                }
                for kid, key in keys
            ]
        }

    def _count(self) -> None:
        with self._lock:
            self.requests += 1


# --- the platform ------------------------------------------------------------------


def license_2026(*, odd: bool = False, **fields: Any) -> dict[str, Any]:
    """``app.license`` as Forge sends it after 17 October 2026: ``active`` (``isActive``
    is gone), the documented fields, and ``modes``. ``odd``: values a real token has
    been seen or documented to carry that do not have the documented type (the
    getAppContext example's ``"isEvaluation": "NULL"``, the FIT example's end dates in
    epoch milliseconds, ``type`` in capitals, ``null``s); ``fields`` override any key."""
    license: dict[str, Any] = {
        "active": True,
        "type": "commercial",
        "isEvaluation": False,
        "trialEndDate": None,
        "subscriptionEndDate": "2027-01-01T00:00:00.000Z",
        "billingPeriod": "ANNUAL",
        "supportEntitlementNumber": "SEN-12345678",
        "ccpEntitlementId": str(uuid.uuid4()),
        "ccpEntitlementSlug": "E-3SH-1A6-33A-AS0",
        "capabilitySet": "capabilityStandard",
        "modes": ["USER_ACCESS"],
    }
    if odd:
        license |= {
            "type": "COMMERCIAL",
            "isEvaluation": "NULL",
            "trialEndDate": "1989949707000",
            "subscriptionEndDate": 1689949707000,
            "billingPeriod": None,
            "ccpEntitlementId": "NULL",
            "capabilitySet": {"name": "capabilityAdvanced"},
            "modes": "USER_ACCESS",
        }
    return license | fields


@dataclass
class ForgeInstallation:
    """One installation of the app on one site, as the platform knows it (mutable: an
    upgrade or a license change is an assignment before the next call)."""

    installation_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    cloud_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    product: str = "jira"
    app_version: str = "1.0.0"
    environment_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    environment_type: str = "PRODUCTION"
    # None: no license object (a free, non-production or unlisted app). Any other JSON
    # value is sent as is, so a test can send what Forge never documented.
    license: Any = field(default_factory=license_2026)
    installer_account_id: str = field(default_factory=lambda: f"5b10{secrets.token_hex(10)}")

    @property
    def site_ari(self) -> str:
        return f"ari:cloud:{self.product}::site/{self.cloud_id}"


@dataclass(frozen=True)
class ForgeCall:
    """A ready-to-send Forge call. ``payload`` is the event without any retry envelope."""

    route: str
    path: str
    headers: dict[str, str]
    payload: dict[str, Any]
    claims: dict[str, Any]
    body: bytes
    token: str = field(repr=False)


class ForgePlatform:
    """Signs FITs for one Forge app with two keys, either of which can be current."""

    def __init__(self, app_id: str | None = None, jwks: JwksServer | None = None) -> None:
        self.app_id = (app_id or str(uuid.uuid4())).lower()
        self.keys = [
            (f"forge/{secrets.token_hex(6)}", rsa.generate_private_key(65537, 2048))
            for _ in range(2)
        ]
        self.current = 0
        if jwks is not None:
            for kid, key in self.keys:
                jwks.publish(kid, key.public_key())

    @property
    def app_ari(self) -> str:
        return app_ari(self.app_id)

    @property
    def kid(self) -> str:
        return self.keys[self.current][0]

    def rotate(self) -> str:
        """Sign with the other key from now on; the new kid."""
        self.current = (self.current + 1) % len(self.keys)
        return self.kid

    def claims(
        self,
        installation: ForgeInstallation,
        *,
        iat: int | None = None,
        lifetime: int = FIT_LIFETIME,
    ) -> dict[str, Any]:
        issued = int(time.time()) if iat is None else iat
        app: dict[str, Any] = {
            "id": self.app_ari,
            "installationId": installation_ari(installation.installation_id),
            "appVersion": installation.app_version,
            "environment": {
                "type": installation.environment_type,
                "id": installation.environment_id,
            },
            "installation": {
                "id": installation_ari(installation.installation_id),
                "contexts": [{"cloudId": installation.cloud_id, "ari": installation.site_ari}],
            },
            "module": {"type": "core:endpoint", "key": "ledger-lifecycle"},
        }
        license = installation.license
        if license is not None:  # any JSON value: a test may send an odd one as is
            app["license"] = dict(license) if isinstance(license, dict) else license
        return {
            "iss": "forge/invocation-token",
            "aud": self.app_ari,
            "iat": issued,
            "nbf": issued,
            "exp": issued + lifetime,
            "jti": str(uuid.uuid4()),
            "app": app,
            "context": {"cloudId": installation.cloud_id},
        }

    def sign(self, claims: Mapping[str, Any], *, alg: str = "RS256", kid: str | None = None) -> str:
        """A token over ``claims``; ``alg`` "HS256"/"none" make deliberately wrong ones."""
        header = {"alg": alg, "typ": "JWT", "kid": self.kid if kid is None else kid}
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
        if alg == "RS256":
            # A kid of no key of ours (a test's "unknown kid") is signed with the current key.
            key = dict(self.keys).get(header["kid"], self.keys[self.current][1])
            signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "HS256":
            signature = hmac.new(b"guessable", signing_input, hashlib.sha256).digest()
        else:
            signature = b""
        return f"{signing_input.decode('ascii')}.{_b64(signature)}"

    # -- the three calls

    def installed(self, installation: ForgeInstallation, **options: Any) -> ForgeCall:
        payload = {
            "id": installation_ari(installation.installation_id),
            "installerAccountId": installation.installer_account_id,
            "app": {
                "id": self.app_ari,
                "version": installation.app_version,
                "name": "Tenant ledger",
            },
            "environment": {"id": installation.environment_id},
            "context": installation.site_ari,
            "eventType": "avi:forge:installed:app",
            "selfGenerated": False,
        }
        return self.call("installed", installation, payload, **options)

    def upgraded(self, installation: ForgeInstallation, **options: Any) -> ForgeCall:
        payload = {
            "id": installation_ari(installation.installation_id),
            "upgraderAccountId": installation.installer_account_id,
            "app": {
                "id": self.app_ari,
                "version": installation.app_version,
                "name": "Tenant ledger",
            },
            "environment": {"id": installation.environment_id},
            "context": installation.site_ari,
            "eventType": "avi:forge:upgraded:app",
        }
        return self.call("upgraded", installation, payload, **options)

    def pre_uninstall(self, installation: ForgeInstallation, **options: Any) -> ForgeCall:
        payload = {
            "context": {"cloudId": installation.cloud_id, "moduleKey": "ledger-pre-uninstall"},
            "contextToken": f"ctx.{secrets.token_urlsafe(32)}",
        }
        return self.call("pre-uninstall", installation, payload, **options)

    def call(
        self,
        route: str,
        installation: ForgeInstallation,
        payload: dict[str, Any],
        *,
        claims: dict[str, Any] | None = None,
        alg: str = "RS256",
        kid: str | None = None,
        retry: dict[str, Any] | None = None,
    ) -> ForgeCall:
        claims = claims if claims is not None else self.claims(installation)
        token = self.sign(claims, alg=alg, kid=kid)
        sent: dict[str, Any] = payload
        if retry is not None:
            sent = {"payload": {**payload, "retryContext": retry}}
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "x-b3-traceid": secrets.token_hex(16),
            "x-b3-spanid": secrets.token_hex(8),
            # What the real platform adds when asked: a token the ledger must never keep.
            "x-forge-oauth-system": f"system.{secrets.token_urlsafe(40)}",
        }
        return ForgeCall(
            route=route,
            path=f"/forge/{route}",
            headers=headers,
            payload=payload,
            claims=claims,
            body=json.dumps(sent, separators=(",", ":")).encode(),
            token=token,
        )

    def retry(self, call: ForgeCall, count: int = 1, reason: str = "TIMEOUT") -> ForgeCall:
        """Forge's retry of ``call``: a new token (new jti, times), the body in an envelope."""
        claims = {**call.claims, "jti": str(uuid.uuid4())}
        now = int(time.time())
        claims.update(iat=now, nbf=now, exp=now + FIT_LIFETIME)
        retry = {"retryCount": count, "retryReason": reason, "retryData": {}}
        token = self.sign(claims)
        return ForgeCall(
            route=call.route,
            path=call.path,
            headers={**call.headers, "Authorization": f"Bearer {token}"},
            payload=call.payload,
            claims=claims,
            body=json.dumps(
                {"payload": {**call.payload, "retryContext": retry}}, separators=(",", ":")
            ).encode(),
            token=token,
        )
