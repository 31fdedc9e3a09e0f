"""``LEDGER_TRUSTED_PROXIES`` (SPEC §12): behind a reverse proxy, the caller's address
and scheme are what the proxy says, and only when the proxy is one we trust.

A pure ASGI middleware, before every route: from a trusted peer, ``X-Forwarded-For``
sets the request's client (so an event's ``remote_addr``, the rejection log and the
failed-login lines keep the caller's address, not the proxy's) and ``X-Forwarded-Proto``
its scheme (so the console cookie is ``Secure`` behind a TLS proxy). From anyone else
both headers are ignored: a caller cannot choose the address kept as evidence.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.settings import IPNetwork

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None


def trusted(address: str, networks: Sequence[IPNetwork]) -> bool:
    parsed = _address(address)
    return parsed is not None and any(parsed in network for network in networks)


def forwarded_client(values: Iterable[str], networks: Sequence[IPNetwork]) -> str | None:
    """The caller's address in ``X-Forwarded-For``: walking from the nearest hop, the
    first that is not itself a trusted proxy (each proxy appends the peer it saw). A hop
    that is not an address ends the walk: what lies beyond it is the caller's to write."""
    hops = [hop.strip() for value in values for hop in value.split(",") if hop.strip()]
    client: str | None = None
    for hop in reversed(hops):
        parsed = _address(hop)
        if parsed is None:
            break
        client = str(parsed)
        if not any(parsed in network for network in networks):
            break
    return client


class TrustedProxies:
    def __init__(self, app: ASGIApp, networks: Sequence[IPNetwork]) -> None:
        self.app = app
        self.networks = tuple(networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] in ("http", "websocket") and peer and trusted(peer[0], self.networks):
            headers = Headers(scope=scope)
            scope = dict(scope)
            client = forwarded_client(headers.getlist("x-forwarded-for"), self.networks)
            if client is not None:
                scope["client"] = (client, 0)
            proto = headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scope["scheme"] = proto
        await self.app(scope, receive, send)
