"""What the four read models share: their row types, the runner-facing protocol and
the one base-URL normaliser.

Rows are frozen ``msgspec.Struct``s with ``gc=False``: they hold only strings,
datetimes, ints, bools and ``None``, so they can never be part of a reference
cycle, and keeping them out of the cyclic garbage collector matters when a
rebuild allocates hundreds of thousands of them.

The contract between a projection and the runner that persists it
(``Projection``/``ProjectionState``):

* ``state = projection.initial_state()`` (or a ``from_rows`` constructor of the
  state class, to resume from persisted rows);
* ``state = projection.apply(state, event)`` for every event in log order, or
  ``projection.apply_many(state, batch)`` (same result, faster). The fold is pure
  in what it *computes*: the next state depends only on the state and the event,
  never on a clock, a database or the network. For speed it *updates the state it
  is given in place* and returns it, so the runner must treat the state it passed
  in as consumed and keep only the returned one (they are the same object today).
* ``state.take_changes()`` hands over the rows that changed since the previous
  call (the latest version of each) and forgets them; the first call on a fresh
  ``initial_state()`` hands over every row (all are new), which lets the folds
  skip change tracking entirely during a rebuild. Upserting every batch of
  changes, in order, by ``key_fields`` reproduces the table a full rebuild would
  produce; a rebuild simply calls it once at the end (or every N events). No
  projection ever deletes a row: rows are either current state that stays (an
  uninstalled tenant keeps its row) or history.
* To resume after a restart, build the state with the state class's
  ``from_rows`` from the persisted rows at the checkpoint (``descriptors`` also
  needs the ``tenants`` rows and ``reimports`` the ``base_urls`` rows, at the same
  checkpoint), or replay the log from the start without writing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from typing import Final, Literal, Protocol, TypeVar

import msgspec

from eventstore.events import STREAM_PREFIX, client_key_of
from eventstore.ids import installation_uuid
from eventstore.values import RecordedEvent

TenantState = Literal["installed", "uninstalled"]
INSTALLED: Final = "installed"
UNINSTALLED: Final = "uninstalled"

ReimportKind = Literal["reimport", "url_reused"]
REIMPORT: Final = "reimport"
URL_REUSED: Final = "url_reused"


class TenantRecord(msgspec.Struct, gc=False):
    """One tenant (clientKey) as it stands after the events folded so far.

    The one declaration of a tenant's shape: ``TenantRow`` is its frozen form (what
    the projection hands out), the tenants fold updates mutable ``TenantRecord``s in
    place, the table's columns (``projections.tables.TENANTS``) are derived from
    these fields, the admin answer (``app.answers.TenantAnswer``) is checked against
    them by a test, and the decider's state (``app.lifecycle.TenantState``) holds a
    row folded by the same rules.
    """

    client_key: str
    base_url: str
    display_url: str | None
    product_type: str | None
    state: TenantState
    enabled: bool
    descriptor_version: str | None
    installed_at: datetime
    updated_at: datetime
    last_seen_at: datetime
    version: int  # the tenant stream's version after the last event folded
    # The Forge installation its payload names (``installationId``, as a bare UUID).
    installation_id: str | None = None
    # ``ledger forget`` destroyed its data key (TenantForgotten): when, and by whom
    # (``user@host``). A signed install afterwards starts the tenant afresh, unforgotten.
    forgotten_at: datetime | None = None
    forgotten_by: str | None = None
    # The ledger's own license check (SPEC §11): whether the last license its site
    # reported is active (None: never checked, or the site named none), and since when
    # the site refuses the check (401/403/404) while the tenant is installed.
    license_active: bool | None = None
    site_refused_at: datetime | None = None
    # Since when the tenant is gone (its Uninstalled, or its site's first refusal, the
    # earlier one) and that event's log position: the evidence erasure is due from
    # (SPEC §6). Cleared when the tenant comes back.
    left_at: datetime | None = None
    left_position: int | None = None


# msgspec freezes a subclass of a mutable Struct (tested); mypy applies the dataclass rule.
class TenantRow(TenantRecord, frozen=True, gc=False):  # type: ignore[misc]  # msgspec: a frozen subclass of a mutable struct, on purpose
    """A tenant's ``TenantRecord``, frozen: a row handed over never changes."""


def enabled_after(state: str, enable: bool) -> bool:
    """Whether a tenant in ``state`` is enabled after an ``Enabled`` (``enable``) or a
    ``Disabled``: only an installed tenant is enabled, so an ``Enabled`` (or a
    ``Disabled``) that races in after ``Uninstalled`` does not bring it back."""
    return enable and state == INSTALLED


class DescriptorRow(msgspec.Struct, frozen=True, gc=False):
    """A descriptor version ever seen and the installed tenants on it now.

    ``first_seen_position`` is the log position of the first sighting: "the latest
    version" is the one first seen last *in log order*, which timestamps from
    several writers cannot always tell (see ``descriptors.latest_version``).
    """

    version: str
    first_seen_at: datetime
    tenants: int
    first_seen_position: int


class BaseUrlRow(msgspec.Struct, frozen=True, gc=False, rename={"from_": "from"}):
    """A tenant held ``base_url`` from ``from_`` until ``to`` (``None``: still holds it).

    Encoded (``msgspec.to_builtins``/JSON) as ``from``/``to``. ``from_position`` is
    the log position of the event that opened the interval: it orders arrivals
    exactly, which the reimports state needs when it is rebuilt from these rows.
    """

    base_url: str
    client_key: str
    from_: datetime
    to: datetime | None
    from_position: int


class ReimportRow(msgspec.Struct, frozen=True, gc=False):
    """Evidence that a new clientKey appeared at a base URL another clientKey held.

    Links are evidence for a person to judge, never an automatic migration.
    """

    base_url: str
    previous_client_key: str
    client_key: str
    detected_at: datetime
    kind: ReimportKind


Row = TenantRow | DescriptorRow | BaseUrlRow | ReimportRow

R_co = TypeVar("R_co", covariant=True)
R = TypeVar("R")
S = TypeVar("S")


class ProjectionState(Protocol[R]):
    """The fold state the runner owns between calls (see the module docstring)."""

    def take_changes(self) -> list[R]:
        """Rows changed since the previous call, latest version of each; resets."""
        ...

    def drain_changes(self) -> Iterator[R]:
        """The same rows as ``take_changes``, produced lazily (a rebuild streams them
        into COPY instead of holding a second copy of every row)."""
        ...


class Projection(Protocol[S, R_co]):
    """A read model: a name, a row type with its key, and a pure fold."""

    @property
    def name(self) -> str: ...

    @property
    def row_type(self) -> type[R_co]: ...

    @property
    def key_fields(self) -> tuple[str, ...]:
        """Attribute names of ``row_type`` that identify a row (the upsert key)."""
        ...

    @property
    def event_types(self) -> frozenset[str]:
        """The event types that can change this model: folding only those gives the
        same rows, so a rebuild may read just them (e.g. filter by type in SQL)."""
        ...

    def initial_state(self) -> S: ...

    def apply(self, state: S, event: RecordedEvent) -> S: ...

    def apply_many(self, state: S, events: Iterable[RecordedEvent]) -> S: ...


def normalize_base_url(url: str) -> str:
    """The form base URLs are compared in: scheme and host lower-case, no trailing ``/``.

    Sites' base URLs are ``https://<host>[/<path>]`` (Confluence adds ``/wiki``);
    the path keeps its case. Written with plain string methods because it runs
    for every install during a rebuild and ``urllib.parse`` is several times
    slower. A string without ``://`` is compared as given, minus trailing ``/``.
    """
    if url.islower():  # the usual case: nothing to lower-case anywhere
        return url.rstrip("/")
    url = url.rstrip("/")
    scheme_end = url.find("://")
    if scheme_end < 0:
        return url
    host_end = url.find("/", scheme_end + 3)
    if host_end < 0:
        return url.lower()
    return url[:host_end].lower() + url[host_end:]


# ------------------------------------------------ values read from event data
#
# The one rule for a value of an event's data that a read model keeps in a text column
# (SPEC §6: every fold is total). The log holds whatever earlier releases accepted
# before the door checked field types (SPEC §4 rule 1): any JSON value in any payload
# field. So a string is kept as it is and null stays null, and any other JSON value
# (number, boolean, object, list) is recorded as its canonical JSON text; so is a
# string holding NUL, which a PostgreSQL text cannot hold (its JSON text escapes it).
# Columns a table indexes also get a length bound (``key_text``). Every fold reads
# such values through these functions, so rows hold only what both stores accept.

_JSON: Final = msgspec.json.Encoder(order="sorted")

KEY_TEXT_BYTES: Final = 1024
"""The longest text (UTF-8 bytes) an indexed column keeps: PostgreSQL refuses an
index entry over 2,704 bytes, and ``base_urls`` indexes a clientKey (at most 255
characters, 1,020 bytes) with its base URL."""


def as_text(value: object) -> str | None:
    """A value of event data as a text column keeps it (the rule above)."""
    if type(value) is str:
        if "\x00" not in value:
            return value
    elif value is None:
        return None
    return _JSON.encode(value).decode()


def key_text(value: object) -> str | None:
    """``as_text`` for an indexed column (a base URL, a descriptor version): a text over
    ``KEY_TEXT_BYTES`` is kept as its start, "…" and the SHA-256 of the whole, so two
    different values stay different and every replay writes the same text."""
    text = as_text(value)
    if text is None or len(text) <= KEY_TEXT_BYTES // 4:  # at most 4 bytes a character
        return text
    raw = text.encode()
    if len(raw) <= KEY_TEXT_BYTES:
        return text
    head = raw[: KEY_TEXT_BYTES - 67].decode(errors="ignore")  # "…" is 3 bytes, the hash 64
    return head + "…" + hashlib.sha256(raw).hexdigest()


SHARED_LIMIT = 10_000
_SHARED: dict[str, str] = {}


def shared(text: str | None) -> str | None:
    """One string object per value, for the few values that many rows repeat (product
    types, descriptor versions): 250,000 tenants otherwise keep 250,000 copies of a
    handful of strings, in each fold that keeps them. Only for such small sets of
    values: the table keeps the values it is given for the life of the process, up to
    ``SHARED_LIMIT`` of them (then a value is kept as given: nothing grows without bound
    in a long-lived runner, whatever the calls' descriptor versions say)."""
    if text is None:
        return None
    found = _SHARED.get(text)
    if found is not None:
        return found
    if len(_SHARED) < SHARED_LIMIT:
        _SHARED[text] = text
    return text


def url_text(value: object) -> str:
    """A tenant's base URL: ``as_text``, and "" for none (a ``BaseUrlChanged`` of an
    old log may say ``to: null``). Not shortened: the decider compares it with the
    next call's ``baseUrl``, and the ``tenants`` table does not index it."""
    return as_text(value) or ""


def url_key(value: object) -> str:
    """A base URL where a table indexes it (``base_urls``; ``reimports``, which resumes
    from those rows): ``url_text`` within ``KEY_TEXT_BYTES``."""
    return key_text(value) or ""


def stream_client_key(event: RecordedEvent, claimed: object) -> str:
    """The tenant's clientKey: its stream's (SPEC §4 rule 5). ``claimed`` (the event's
    ``clientKey``, the very same string in every event the service writes) is returned
    when it is that string, so rows share one object per tenant in a rebuild."""
    stream_id = event.stream_id
    if (
        type(claimed) is str
        and stream_id.startswith(STREAM_PREFIX)
        and len(stream_id) == len(STREAM_PREFIX) + len(claimed)
        and stream_id.endswith(claimed)
    ):
        return claimed
    return client_key_of(stream_id)


_last_installation: tuple[object, str | None] = (None, None)


def installation_id(named: object) -> str | None:
    """``eventstore.ids.installation_uuid`` of an event's ``installationId``, the last
    answer remembered: the tenants and the Forge folds both read every ``Installed``'s,
    one after the other (one tuple, swapped whole: safe between threads)."""
    global _last_installation
    last = _last_installation
    if last[0] is named and named is not None:
        return last[1]
    found = installation_uuid(named)
    if found is not None and found == named:
        found = named  # already bare and lower-case: one string per tenant, not two
    _last_installation = (named, found)
    return found


StateT = TypeVar("StateT")


def fold_by_type(
    handlers: Mapping[str, Callable[[StateT, RecordedEvent], None]],
    state: StateT,
    events: Iterable[RecordedEvent],
) -> StateT:
    """The one dispatch loop of every fold: each event to the handler of its type (an
    event type with no handler leaves the state as it is); the state is updated in
    place and returned (see the contract above)."""
    get = handlers.get
    for event in events:
        handler = get(event.type)
        if handler is not None:
            handler(state, event)
    return state
