"""What the tenant authority (SPEC §11) decides from: each tenant's current secret state,
held in memory per service process and folded from the log.

``step`` is the pure fold of one tenant: the tenant's row by the ``tenants`` projection's
own rules (state, base URL, forgotten) and the sealed secret the last ``Installed`` or
``SecretRotated`` carried, with the version whose associated data opens it. The secret
stays sealed here; a request opens it with the tenant's data key (``Directory`` keeps
the wrapped keys) and lets go of it when it is answered.

``Directory`` is the one mutable object: the views of every tenant, the wrapped data
keys, and the Forge installations' linked tenants, replaced entry by entry by the
follower (``app.authority.follower``). Every entry is immutable, so a request reading it
while the follower writes sees one tenant's state before or after an event, never half.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from app.queries.reads import tenant_object
from eventstore.events import (
    STREAM_PREFIX,
    Installed,
    SealedSecret,
    SecretRotated,
    TenantForgotten,
    client_key_of,
)
from eventstore.values import RecordedEvent
from projections import tenants
from projections.model import INSTALLED, TenantRow


@dataclass(frozen=True, slots=True)
class TenantView:
    """One tenant as the authority sees it."""

    stream_id: str
    row: TenantRow
    secret: SealedSecret | None = None
    secret_version: int = 0
    # The tenant as answers show it (the admin API's object), made once per event rather
    # than once per verification.
    answer: Mapping[str, Any] = field(default_factory=dict)

    @property
    def client_key(self) -> str:
        return self.row.client_key

    @property
    def installed(self) -> bool:
        return self.row.state == INSTALLED

    @property
    def forgotten(self) -> bool:
        return self.row.forgotten_at is not None


def step(view: TenantView | None, event: RecordedEvent) -> TenantView | None:
    """The tenant after one of its own stream's events (None until its first install)."""
    row = tenants.apply(None if view is None else view.row, event)
    if row is None:
        return None
    if view is None:
        view = TenantView(event.stream_id, row)
    view = replace(view, row=row, answer=tenant_object(row))
    data = event.data
    if isinstance(data, Installed | SecretRotated):
        return replace(view, secret=data.shared_secret, secret_version=event.version)
    return view


@dataclass(slots=True)
class Changes:
    """What a batch of events changed: the tenants to publish, the streams whose data
    key must be read again (a secret sealed with a key the directory may not hold), and
    the streams whose key was destroyed."""

    views: dict[str, TenantView] = field(default_factory=dict)
    rekey: set[str] = field(default_factory=set)
    forgotten: set[str] = field(default_factory=set)
    position: int = 0


def fold_batch(
    current: dict[str, TenantView], events: Iterable[RecordedEvent], position: int
) -> Changes:
    """The changes a batch of events (in log order) makes to ``current``. Pure."""
    changes = Changes(position=position)
    for event in events:
        changes.position = max(changes.position, event.position)
        if not event.stream_id.startswith(STREAM_PREFIX):
            continue
        key = client_key_of(event.stream_id)
        after = step(changes.views.get(key, current.get(key)), event)
        if after is not None:
            changes.views[key] = after
        if isinstance(event.data, Installed | SecretRotated):
            changes.rekey.add(event.stream_id)
            changes.forgotten.discard(event.stream_id)
        elif isinstance(event.data, TenantForgotten):
            changes.forgotten.add(event.stream_id)
            changes.rekey.discard(event.stream_id)
    return changes


class Directory:
    """Every tenant's view, the wrapped data keys, and the installations' tenants."""

    def __init__(self) -> None:
        self.tenants: dict[str, TenantView] = {}
        self.data_keys: dict[str, bytes] = {}  # stream id -> wrapped data key
        # installation UUID -> client keys whose payload named it, oldest link first
        self.linked: dict[str, tuple[str, ...]] = {}
        self.position = 0
        self.refreshed_at: float | None = None

    def publish(self, changes: Changes, keys: dict[str, bytes | None]) -> None:
        """Apply ``changes`` with the data keys read for ``changes.rekey``: keys first,
        so a reinstalled tenant's new secret is never published without its key."""
        for stream_id, wrapped in keys.items():
            if wrapped is None:
                self.data_keys.pop(stream_id, None)
            else:
                self.data_keys[stream_id] = wrapped
        for stream_id in changes.forgotten:
            self.data_keys.pop(stream_id, None)
        for key, view in changes.views.items():
            self._link(self.tenants.get(key), view)
            self.tenants[key] = view
        self.position = max(self.position, changes.position)

    def _link(self, before: TenantView | None, after: TenantView) -> None:
        installation = after.row.installation_id
        if installation is None or (
            before is not None and before.row.installation_id == installation
        ):
            return
        known = self.linked.get(installation, ())
        if after.client_key in known:
            known = tuple(k for k in known if k != after.client_key)
        self.linked[installation] = (*known, after.client_key)

    def client_keys(self, installation: str) -> list[str]:
        return list(self.linked.get(installation, ()))
