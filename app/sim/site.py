"""A simulated Atlassian site's product REST API (SPEC §11 "Proven end to end").

The site checks an app's signed call as Jira or Confluence Cloud does: ``Authorization:
JWT <token>`` (or a ``jwt`` parameter), HS256 with the tenant's shared secret, ``iss``
the app key, ``qsh`` over the request with the path relative to the site's base URL,
``exp``/``iat`` current. It verifies with the ledger's own token code, on purpose: the
contract's rules are one implementation, and a bug in them shows on both ends.

The site is one tenant of one app: ``install_payload`` is what the site sends to the
app's ``installed`` (with a secret it makes), ``rotate`` makes a new secret for the next.
It answers ``GET /rest/api/3/myself`` (200 with the app's user, or 401), and counts what
it accepted and refused.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from app.ingest.connect.tokens import query_string_hash, relative_path, verify_shared_secret_token
from app.ingest.jwt import TokenError
from app.sim.connect import make_install_payload
from app.sim.server import BackgroundServer, QuietHandler

__all__ = ["SimulatedSite"]

MYSELF: Final = "/rest/api/3/myself"


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        site: SimulatedSite = self.server.owner
        status, body = site.answer(method, self.path, self.headers.get("Authorization"))
        self._answer(status, json.dumps(body).encode(), "application/json")


class SimulatedSite(BackgroundServer):
    handler = _Handler
    thread_name = "hostsim-site"

    def __init__(self, app_key: str = "tenant-ledger", *, port: int = 0) -> None:
        super().__init__(port=port)
        self.app_key = app_key
        self.client_key = str(uuid.uuid4())
        self.account_id = f"557058:{uuid.uuid4()}"
        self.shared_secret = secrets.token_urlsafe(48)
        self.accepted = 0
        self.refused: list[str] = []  # the refusals' reason codes, in order

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the site is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def install_payload(self, **extra: Any) -> dict[str, Any]:
        return make_install_payload(
            client_key=self.client_key,
            base_url=self.url,
            shared_secret=self.shared_secret,
            key=self.app_key,
            **extra,
        )

    def rotate(self) -> str:
        with self._lock:
            self.shared_secret = secrets.token_urlsafe(48)
            return self.shared_secret

    def answer(
        self, method: str, target: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        parts = urlsplit(target)
        query = parse_qsl(parts.query, keep_blank_values=True)
        reason = self._refusal(method, parts.path, query, authorization)
        with self._lock:
            if reason is not None:
                self.refused.append(reason)
                return 401, {"message": "Client must be authenticated", "reason": reason}
            self.accepted += 1
        if parts.path == MYSELF:
            return 200, {"accountId": self.account_id, "displayName": "App user"}
        return 404, {"message": "not found"}

    def _refusal(
        self, method: str, path: str, query: list[tuple[str, str]], authorization: str | None
    ) -> str | None:
        token = _token(authorization, query)
        if token is None:
            return "missing_token"
        qsh = query_string_hash(method, relative_path(path, self.url), query)
        with self._lock:
            secret = self.shared_secret
        try:
            verify_shared_secret_token(
                token, secret, client_key=self.app_key, qsh=qsh, now=int(time.time()), leeway=0
            )
        except TokenError as error:
            return error.code
        return None


def _token(authorization: str | None, query: list[tuple[str, str]]) -> str | None:
    if authorization:
        scheme, _, value = authorization.partition(" ")
        return value.strip() if scheme.upper() == "JWT" and value.strip() else None
    values = [v for k, v in query if k == "jwt"]
    return values[0] if len(values) == 1 else None
