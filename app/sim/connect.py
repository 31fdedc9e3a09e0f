"""A simulated Atlassian host: an install-key server and a site that signs lifecycle calls.

Shipped with the product (not only the tests) because ``ledger demo`` and the
end-to-end tests drive a running service with it. Tokens are built the way a
Jira/Confluence Cloud site builds them: RS256 with a ``kid`` for signed installs,
HS256 with the shared secret otherwise, ``qsh`` over the exact request sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, quote, urlsplit

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from app.ingest.connect.tokens import query_string_hash
from app.sim.server import BackgroundServer, QuietHandler

__all__ = [
    "KeyServer",
    "KeyServerMode",
    "LifecycleCall",
    "SimulatedHost",
    "make_install_payload",
]

KeyServerMode = Literal["up", "error", "slow"]
Alg = Literal["RS256", "HS256", "none"]

LIFECYCLE_EVENTS: Final = frozenset({"installed", "uninstalled", "enabled", "disabled"})


# --- key server --------------------------------------------------------------


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        owner = self.server.owner
        kid = urlsplit(self.path).path.lstrip("/")
        owner._count(kid)
        mode = owner.mode
        if mode == "slow":
            # Wakes early on stop() or a mode change, so tests never wait it out.
            owner._wake.wait(owner.slow_seconds)
        if mode == "error":
            self._answer(503, b"service unavailable\n", "text/plain")
            return
        pem = owner._keys.get(kid)
        if pem is None:
            self._answer(404, b"not found\n", "text/plain")
        else:
            self._answer(200, pem.encode("ascii"), "application/x-pem-file")


class KeyServer(BackgroundServer):
    """Serves ``GET /<kid>`` → PEM like connect-install-keys.atlassian.com.

    ``set_mode("error")`` answers 503, ``set_mode("slow")`` holds each answer for
    ``slow_seconds``; ``requests`` counts requests per kid (unknown kids too).
    """

    handler = _Handler
    thread_name = "hostsim-keyserver"

    def __init__(self, *, slow_seconds: float = 5.0, port: int = 0) -> None:
        super().__init__(slow_seconds=slow_seconds, port=port)
        self.mode: KeyServerMode = "up"
        self.requests: dict[str, int] = {}
        self._keys: dict[str, str] = {}

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the key server is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def down(self) -> bool:
        return self.mode == "error"

    @down.setter
    def down(self, value: bool) -> None:
        self.set_mode("error" if value else "up")

    def set_mode(self, mode: KeyServerMode) -> None:
        if mode not in ("up", "error", "slow"):
            raise ValueError(f"unknown key server mode {mode!r}")
        self.mode = mode
        self._rearm(slow=mode == "slow")

    def register(self, kid: str, public_pem: str) -> None:
        with self._lock:
            self._keys[kid] = public_pem

    def request_count(self, kid: str) -> int:
        with self._lock:
            return self.requests.get(kid, 0)

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def _count(self, kid: str) -> None:
        with self._lock:
            self.requests[kid] = self.requests.get(kid, 0) + 1


# --- lifecycle calls ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LifecycleCall:
    """A ready-to-send lifecycle request. ``url_path_with_query`` is relative to the app."""

    method: str
    path: str
    query: list[tuple[str, str]]
    url_path_with_query: str
    headers: dict[str, str]
    body: bytes
    token: str = field(repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


_PRODUCT_NAMES = {"confluence": "Confluence"}


def make_install_payload(
    client_key: str | None = None,
    base_url: str | None = None,
    shared_secret: str | None = None,
    key: str = "tenant-ledger",
    **extra: Any,
) -> dict[str, Any]:
    """A realistic ``installed`` payload; ``extra`` adds or overrides fields (camelCase)."""
    if base_url is None:
        base_url = f"https://site-{secrets.token_hex(4)}.atlassian.net"
    payload: dict[str, Any] = {
        "key": key,
        "clientKey": client_key or str(uuid.uuid4()),
        "sharedSecret": shared_secret or secrets.token_urlsafe(48),
        "serverVersion": "100266",
        "pluginsVersion": "1001.0.0-SNAPSHOT.2d5d2b8",
        "baseUrl": base_url,
        "displayUrl": base_url,
        "productType": extra.get("productType", "jira"),
        # What the host writes: "Atlassian JIRA at …" for Jira, "Atlassian Confluence at …".
        "description": f"Atlassian {_PRODUCT_NAMES.get(str(extra.get('productType')), 'JIRA')} at {base_url}",
        "eventType": "installed",
    }
    payload.update(extra)
    return payload


class SimulatedHost:
    """One Atlassian site signing lifecycle calls like the real cloud does."""

    def __init__(
        self,
        *,
        kid: str | None = None,
        private_key: rsa.RSAPrivateKey | None = None,
        key_server: KeyServer | None = None,
    ) -> None:
        self.kid = kid or f"hostsim-{secrets.token_hex(8)}"
        self.private_key = private_key or rsa.generate_private_key(
            public_exponent=65537, key_size=2048
        )
        self.public_pem = (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode("ascii")
        )
        if key_server is not None:
            self.register_with(key_server)

    def register_with(self, key_server: KeyServer) -> None:
        key_server.register(self.kid, self.public_pem)

    def lifecycle_call(
        self,
        event: str,
        payload: Mapping[str, Any],
        *,
        app_base_url: str,
        descriptor_version: str | None = "1",
        alg: Alg = "RS256",
        shared_secret: str | None = None,
        iat: int | None = None,
        exp_in: int = 180,
        claims_override: Mapping[str, Any] | None = None,
        headers_override: Mapping[str, str | None] | None = None,
    ) -> LifecycleCall:
        """Build ``POST /<event>?v=<descriptor_version>`` carrying ``payload`` as sent.

        HS256 signs with ``shared_secret``, else the payload's ``sharedSecret``.
        In ``claims_override`` and ``headers_override`` a value of None removes
        the claim or header. Every token carries a random ``jti`` (drop it with
        ``{"jti": None}``): the ledger spots replays by token SHA-256, and two
        distinct calls built in the same second must not look like one. To replay,
        send the same ``LifecycleCall`` twice.
        """
        if event not in LIFECYCLE_EVENTS:
            raise ValueError(f"not a lifecycle event: {event!r}")
        app_path = urlsplit(app_base_url).path.rstrip("/")
        relative = "/" + event
        query = [("v", descriptor_version)] if descriptor_version is not None else []
        issued = int(time.time()) if iat is None else iat

        claims: dict[str, Any] = {
            "iss": payload.get("clientKey"),
            "qsh": query_string_hash("POST", relative, query),
            "iat": issued,
            "exp": issued + exp_in,
            "jti": secrets.token_hex(16),
        }
        if alg == "RS256":
            claims["aud"] = [app_base_url]
        if claims["iss"] is None:
            del claims["iss"]  # a payload without clientKey: let the app say what it thinks
        _apply(claims, claims_override)
        token = self._sign(claims, alg, shared_secret or payload.get("sharedSecret"))

        headers: dict[str, str] = {
            "Authorization": f"JWT {token}",
            "Content-Type": "application/json",
            "User-Agent": "Atlassian Connect (hostsim)",
        }
        _apply(headers, headers_override)
        path = app_path + relative
        return LifecycleCall(
            method="POST",
            path=path,
            query=list(query),
            url_path_with_query=path + _encode_query(query),
            headers=headers,
            body=json.dumps(payload, separators=(",", ":")).encode("utf-8"),
            token=token,
        )

    def page_token(
        self,
        client_key: str,
        shared_secret: str,
        *,
        method: str = "GET",
        path: str = "/",
        query: Sequence[tuple[str, str]] = (),
        account_id: str | None = None,
        context: bool = False,
        iat: int | None = None,
        exp_in: int = 180,
        alg: Alg = "HS256",
    ) -> str:
        """The token a site puts on a request to one of the app's pages (``jwt``
        parameter or ``Authorization: JWT``): HS256 with the tenant's secret, ``iss`` the
        clientKey, ``sub`` the user, ``qsh`` over the request (``path`` relative to the
        app's base URL), or ``context-qsh`` as ``AP.context.getToken()`` gives."""
        issued = int(time.time()) if iat is None else iat
        claims: dict[str, Any] = {
            "iss": client_key,
            "iat": issued,
            "exp": issued + exp_in,
            "qsh": "context-qsh" if context else query_string_hash(method, path, query),
            "jti": secrets.token_hex(16),
        }
        if account_id is not None:
            claims["sub"] = account_id
        return self._sign(claims, alg, shared_secret)

    def _sign(self, claims: dict[str, Any], alg: Alg, secret: str | None) -> str:
        # Signed by hand rather than by jwt.encode, which refuses some deliberately
        # broken claims (a non-string iss) and warns on short HS256 secrets.
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        if alg == "RS256":
            header["kid"] = self.kid
        signing_input = f"{_b64_json(header)}.{_b64_json(claims)}".encode("ascii")
        if alg == "RS256":
            signature = self.private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        elif alg == "HS256":
            if not secret:
                raise ValueError("HS256 needs shared_secret or a payload with sharedSecret")
            signature = hmac.new(secret.encode("utf-8"), signing_input, hashlib.sha256).digest()
        elif alg == "none":
            signature = b""
        else:
            raise ValueError(f"unsupported alg {alg!r}")
        return f"{signing_input.decode('ascii')}.{_b64(signature)}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _apply(target: dict[str, Any], override: Mapping[str, Any] | None) -> None:
    for name, value in (override or {}).items():
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value


def _encode_query(query: Sequence[tuple[str, str]]) -> str:
    if not query:
        return ""
    return "?" + "&".join(
        f"{quote(name, safe='-._~')}={quote(value, safe='-._~')}" for name, value in query
    )


# --- a site's license endpoint (SPEC §11) -----------------------------------

SiteMode = Literal["up", "deleted", "app_removed", "forbidden", "error", "slow", "huge", "redirect"]
ADDON_PATH_PREFIX: Final = "/rest/atlassian-connect/1/addons/"


class _SiteHandler(QuietHandler):

    def do_GET(self) -> None:
        owner: SimulatedSite = self.server.owner
        owner._count()
        mode = owner.mode
        if mode == "slow":
            owner._wake.wait(owner.slow_seconds)  # released early by stop() or a mode change
        status, body = owner._answer_for(self.path, self.headers.get("Authorization"), mode)
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._answer(status, body, "application/json")


class SimulatedSite(BackgroundServer):
    """One Jira/Confluence Cloud site's ``GET /rest/atlassian-connect/1/addons/<key>``,
    with a license a test can change (``set_license``), verifying the app's HS256 token
    with the tenant's shared secret (``iss`` = the app key, ``qsh`` of the request).

    Modes: ``up``; ``deleted`` (404: the site is gone, no ``uninstalled`` was sent);
    ``app_removed`` (401) and ``forbidden`` (403); ``error`` (500); ``slow`` (each answer
    held ``slow_seconds``); ``huge`` (an answer of several MiB); ``redirect`` (302).
    """

    handler = _SiteHandler
    thread_name = "hostsim-site"

    def __init__(
        self, *, app_key: str = "tenant-ledger", slow_seconds: float = 30.0, port: int = 0
    ) -> None:
        super().__init__(slow_seconds=slow_seconds, port=port)
        self.app_key = app_key
        self.mode: SiteMode = "up"
        self.shared_secret: str | None = None
        self.license: dict[str, Any] | None = None
        self.requests = 0
        self.refused_tokens = 0  # requests whose token did not verify

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the site is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def install_payload(self, **extra: Any) -> dict[str, Any]:
        """An ``installed`` payload for this site; its secret is the one tokens must use."""
        payload = make_install_payload(base_url=self.base_url, key=self.app_key, **extra)
        self.shared_secret = payload["sharedSecret"]
        return payload

    def set_license(
        self,
        active: bool = True,
        type: str = "COMMERCIAL",
        evaluation: bool = False,
        sen: str = "SEN-1000001",
    ) -> None:
        with self._lock:
            self.license = {
                "active": active,
                "type": type,
                "evaluation": evaluation,
                "supportEntitlementNumber": sen,
            }

    def set_mode(self, mode: SiteMode) -> None:
        self.mode = mode
        self._rearm(slow=mode == "slow")

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _answer_for(self, target: str, authorization: str | None, mode: str) -> tuple[int, bytes]:
        path = urlsplit(target).path
        if mode == "deleted" or path != ADDON_PATH_PREFIX + quote(self.app_key, safe=""):
            return 404, b'{"message": "not found"}'
        if mode in ("app_removed", "forbidden"):
            return (401 if mode == "app_removed" else 403), b'{"message": "refused"}'
        if mode == "error":
            return 500, b'{"message": "oops"}'
        if not self._verified(target, authorization):
            with self._lock:
                self.refused_tokens += 1
            return 401, b'{"message": "bad token"}'
        if mode == "huge":
            return 200, b'{"license": {"type": "' + b"x" * (4 * 1024 * 1024) + b'"}}'
        with self._lock:
            answer = {"key": self.app_key, "state": "ENABLED", "license": self.license}
        if answer["license"] is None:
            del answer["license"]
        return 200, json.dumps(answer).encode()

    def _verified(self, target: str, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme != "JWT" or not token or not self.shared_secret:
            return False
        try:
            claims = pyjwt.decode(token, self.shared_secret, algorithms=["HS256"])
        except pyjwt.PyJWTError:
            return False
        parts = urlsplit(target)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "jwt"]
        return claims.get("iss") == self.app_key and claims.get("qsh") == query_string_hash(
            "GET", parts.path, query
        )
