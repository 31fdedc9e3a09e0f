"""`ledger forget`: destroy a tenant's data key, then record who did it (SPEC §5).

The order is the contract's: the key is destroyed first (overwritten, deleted, the
store's copies scrubbed: ``DataKeyStore.destroy_data_key``), then ``TenantForgotten``
is appended at the stream's expected version like every other append. A call that
appends meanwhile (and may have stored a new key with a first install) makes that
append conflict, and the whole is done again on the stream as it is now, so the
event is never recorded while a key of the tenant survives.

Forgetting twice appends nothing the second time: the tenant is already forgotten
(no key, and its row says so). The scrub still runs, so a second run finishes a first
one that could not (``KeyCopiesRemain``: the key's row is gone and the event is
appended all the same; the outcome says what remains).
"""

from __future__ import annotations

import getpass
import socket
import uuid
from dataclasses import dataclass

from eventstore.clock import format_timestamp, utcnow
from eventstore.data_keys import KeyCopiesRemain
from eventstore.errors import ConcurrencyConflict
from eventstore.events import Metadata, TenantForgotten, stream_id_for
from eventstore.store import EventStore
from eventstore.values import NewEvent, RecordedEvent
from projections import tenants as tenants_fold
from projections.model import TenantRow

_ATTEMPTS = 5  # appends that conflict with calls for the same tenant, in a row


@dataclass(frozen=True, slots=True)
class NeverHeld:
    """No event of this clientKey: nothing was changed."""


@dataclass(frozen=True, slots=True)
class AlreadyForgotten:
    row: TenantRow
    copies_remain: str | None = None  # why the store's files may still hold old bytes


@dataclass(frozen=True, slots=True)
class Forgotten:
    event: RecordedEvent
    had_key: bool  # False: its key was gone already (never stored, or destroyed earlier)
    copies_remain: str | None = None


@dataclass(frozen=True, slots=True)
class KeptChanging:
    """Every attempt met another append for the tenant: run it again."""


ForgetOutcome = NeverHeld | AlreadyForgotten | Forgotten | KeptChanging


def operator_name() -> str:
    """The OS user running the command, as the operator to record."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        return "unknown"


def host_name() -> str:
    return socket.gethostname() or "unknown"


def forget_tenant(
    store: EventStore, client_key: str, reason: str, operator: str, host: str
) -> ForgetOutcome:
    """Destroy the tenant's data key and append ``TenantForgotten`` (see the module)."""
    stream_id = stream_id_for(client_key)
    for _attempt in range(_ATTEMPTS):
        events = store.read_stream(stream_id)
        row = tenants_fold.fold(events)
        if row is None:
            return NeverHeld()
        had_key, copies_remain = _destroy(store, stream_id)
        if row.forgotten_at is not None and not had_key:
            return AlreadyForgotten(row, copies_remain)
        metadata = Metadata(
            call_id=uuid.uuid4().hex,
            received_at=format_timestamp(utcnow()),
            operator=operator,
            host=host,
        )
        event = NewEvent(TenantForgotten(reason=reason), metadata)
        try:
            result = store.append(stream_id, [event], expected_version=events[-1].version)
        except ConcurrencyConflict:
            continue
        return Forgotten(result.events[0], had_key, copies_remain)
    return KeptChanging()


def _destroy(store: EventStore, stream_id: str) -> tuple[bool, str | None]:
    """Whether there was a key, and why copies may remain. The key's row is gone
    either way, so the forget is recorded even when the scrub must be run again."""
    try:
        return store.destroy_data_key(stream_id), None
    except KeyCopiesRemain as error:
        return error.destroyed, str(error)
