"""The generic decider shell: read a stream, fold it, decide, append, retry on conflict.

A *decider* is three pure functions over one stream (see ``Decider``):
``initial_state(stream_id)``, ``evolve(state, event)`` and ``decide(state, command)``.
This module owns everything around them that is the same for every decider:

* the pure steps, ``fold`` and ``plan``/``plan_with`` (what to append given what was
  read);
* the one I/O loop, ``run``/``run_with``, awaitable over an ``AsyncEventLog``: read
  the stream (and its data key), plan, append with the expected version; on
  ``ConcurrencyConflict`` (another writer got there first, maybe in the same group
  commit) read again and decide again, a bounded number of times. Synchronous callers
  run the same loop on a synchronous store with ``run_blocking``/``run_with_blocking``.

What differs by kind of stream around the decision is given as ``Steps``: the command
to decide given the state read (Connect verifies an HS256 token with the tenant's
current secret, which only the state names), and how a decision becomes rows
(Connect seals the secrets the decider emitted in plain text, and stores a first data
key with them). ``run`` is ``run_with`` for a command known in advance whose events
need no finishing (``Given``).

The service runs the loop in its event loop: on PostgreSQL over an async connection
with group commit (``eventstore.postgres.aio``), with no thread hop.

Nothing here knows HTTP: a refusal is a code and words, the caller maps it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Protocol, TypeAlias, TypeVar

from app.ingest.known_streams import KnownStreams
from eventstore.async_log import AsyncEventLog, InlineLog
from eventstore.errors import ConcurrencyConflict
from eventstore.events import EventData, Metadata
from eventstore.store import EventStore
from eventstore.values import AppendRequest, NewEvent, RecordedEvent

__all__ = [
    "MAX_ATTEMPTS",
    "Append",
    "Contention",
    "Decider",
    "Decision",
    "Given",
    "Plan",
    "Refuse",
    "Result",
    "Rows",
    "Skip",
    "Steps",
    "fold",
    "plan",
    "plan_with",
    "run",
    "run_blocking",
    "run_with",
    "run_with_blocking",
]

MAX_ATTEMPTS: Final = 25

S = TypeVar("S")
C = TypeVar("C")
E = TypeVar("E")
S_contra = TypeVar("S_contra", contravariant=True)
C_co = TypeVar("C_co", covariant=True)
C_contra = TypeVar("C_contra", contravariant=True)
E_co = TypeVar("E_co", covariant=True)
E_contra = TypeVar("E_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Append(Generic[E_co]):
    """Append these events, in order, in one transaction, all with ``metadata``.

    ``E`` is ``EventData`` for most deciders; a decider whose events need finishing
    after the decision (Connect's plain secrets) names its own type, and its
    ``Steps.rows`` turns them into ``EventData``.

    ``idempotency_key``: the store writes nothing a second time for the same key
    (the backstop of a race; the decider should already have seen the repeat).
    """

    events: Sequence[E_co]
    metadata: Metadata
    idempotency_key: str | None = None


@dataclass(frozen=True, slots=True)
class Skip:
    """Nothing to append, and nothing wrong: e.g. a repeat of a delivery already stored."""

    code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refuse:
    """The command is not allowed in this state; nothing is appended."""

    code: str
    detail: str


Decision: TypeAlias = Append[E] | Skip | Refuse


class Decider(Protocol[S, C_contra, E_co]):
    """The three pure functions of one kind of stream."""

    def initial_state(self, stream_id: str) -> S: ...

    def evolve(self, state: S, event: RecordedEvent) -> S: ...

    def decide(self, state: S, command: C_contra) -> Decision[E_co]: ...


@dataclass(frozen=True, slots=True)
class Rows:
    """What the store appends for one ``Append``: the rows, and a wrapped data key to
    store in the same transaction (a first secret sealed with a new key), if any."""

    events: list[NewEvent]
    data_key: bytes | None = None


class Steps(Protocol[S_contra, C_co, E_contra]):
    """The parts of one attempt that differ by kind of stream, around the decision."""

    def command(self, state: S_contra, stored_key: bytes | None) -> C_co:
        """The command to decide, given the state read and the wrapped data key the
        store holds for the stream (None when it has none)."""
        ...

    def rows(
        self,
        stream_id: str,
        state: S_contra,
        version: int,
        decision: Append[E_contra],
        stored_key: bytes | None,
    ) -> Rows:
        """The rows an ``Append`` decided on ``state`` (at ``version``) becomes; given
        all an attempt read, so nothing of the attempt is kept between the two steps."""
        ...


@dataclass(frozen=True, slots=True)
class Given(Generic[C]):
    """Steps for a command known before the read, whose events are appended as decided."""

    command_: C

    def command(self, state: object, stored_key: bytes | None = None) -> C:
        return self.command_

    def rows(
        self,
        stream_id: str,
        state: object,
        version: int,
        decision: Append[EventData],
        stored_key: bytes | None = None,
    ) -> Rows:
        return Rows([NewEvent(data, decision.metadata) for data in decision.events])


@dataclass(frozen=True, slots=True)
class Plan(Generic[S]):
    """What one attempt read and decided: the state, the stream's version, the decision,
    and the rows it becomes (none unless the decision is an ``Append``)."""

    state: S
    version: int
    decision: Decision[object]
    rows: Rows = field(default_factory=lambda: Rows([]))

    def new_events(self) -> list[NewEvent]:
        return self.rows.events


@dataclass(frozen=True, slots=True)
class Result:
    """What ``run`` did. ``events`` are the rows appended (empty unless accepted)."""

    decision: Decision[object]
    events: list[RecordedEvent]
    duplicate: bool = False  # the store had seen the idempotency key: nothing written
    attempts: int = 1

    @property
    def appended(self) -> bool:
        return bool(self.events) and not self.duplicate


class Contention(Exception):
    """Every attempt lost the race to another writer of the same stream: retry later."""

    def __init__(self, stream_id: str, attempts: int) -> None:
        super().__init__(f"stream {stream_id!r}: {attempts} attempts lost to concurrent writers")
        self.stream_id = stream_id
        self.attempts = attempts


# ---------------------------------------------------------------- pure steps


def fold(
    decider: Decider[S, C, E], stream_id: str, events: Iterable[RecordedEvent]
) -> tuple[S, int]:
    """The state after ``events`` and the stream's version (0 for an empty stream)."""
    state = decider.initial_state(stream_id)
    version = 0
    for event in events:
        state = decider.evolve(state, event)
        version = event.version
    return state, version


def plan_with(
    decider: Decider[S, C, E],
    stream_id: str,
    events: Iterable[RecordedEvent],
    steps: Steps[S, C, E],
    stored_key: bytes | None = None,
) -> Plan[S]:
    """Fold what was read, ask, decide, make the rows: everything but the store's I/O
    (``stored_key``: the wrapped data key read with the stream, for ``steps.command``)."""
    state, version = fold(decider, stream_id, events)
    decision = decider.decide(state, steps.command(state, stored_key))
    if not isinstance(decision, Append):
        return Plan(state, version, decision)
    if not decision.events:
        raise ValueError("a decider's Append must carry at least one event")
    rows = steps.rows(stream_id, state, version, decision, stored_key)
    return Plan(state, version, decision, rows)


def plan(
    decider: Decider[S, C, EventData],
    stream_id: str,
    events: Iterable[RecordedEvent],
    command: C,
) -> Plan[S]:
    """``plan_with`` for a command known in advance."""
    return plan_with(decider, stream_id, events, Given(command))


# ---------------------------------------------------------------- the I/O loop


async def run_with(
    decider: Decider[S, C, E],
    log: AsyncEventLog,
    stream_id: str,
    steps: Steps[S, C, E],
    *,
    max_attempts: int = MAX_ATTEMPTS,
    known: KnownStreams | None = None,
) -> Result:
    """Read, decide and append for one command; raises ``Contention`` when every one of
    ``max_attempts`` attempts met a concurrent append, and lets ``StoreError`` through.

    With ``known``, a stream this process has not seen exist is first decided as an
    empty stream without a read (``app.ingest.known_streams``: the append's expected version
    checks that guess; a decision on it that appends nothing is made again on a read).
    The append is committed when this returns (with other calls' appends, when the log
    group-commits): nothing is acknowledged before its commit."""
    guess_empty = known is not None and not known.exists(stream_id)
    for attempt in range(1, max_attempts + 1):
        if guess_empty:
            assert known is not None
            known.guesses += 1
            step = plan_with(decider, stream_id, (), steps)
        else:
            read = await log.read_stream(stream_id)
            if known is not None and read.events:
                known.saw(stream_id)
            step = plan_with(decider, stream_id, read.events, steps, read.data_key)
        decision = step.decision
        if not isinstance(decision, Append) and guess_empty:
            guess_empty = False  # never answered on a guess: read, decide again
            continue
        if not isinstance(decision, Append):
            return Result(decision, [], attempts=attempt)
        request = AppendRequest(
            stream_id,
            step.rows.events,
            expected_version=step.version,
            idempotency_key=decision.idempotency_key,
            data_key=step.rows.data_key,
        )
        try:
            appended = await log.append(request)
        except ConcurrencyConflict:
            # Someone else appended first, or the stream guessed empty was not.
            if guess_empty:
                assert known is not None
                known.wrong += 1
                guess_empty = False
            continue
        if known is not None:
            known.saw(stream_id)
            if appended.duplicate and guess_empty:
                guess_empty = False  # a repeat is the read's to judge, as without a guess
                continue
        return Result(decision, appended.events, appended.duplicate, attempt)
    raise Contention(stream_id, max_attempts)


async def run(
    decider: Decider[S, C, EventData],
    log: AsyncEventLog,
    stream_id: str,
    command: C,
    *,
    max_attempts: int = MAX_ATTEMPTS,
    known: KnownStreams | None = None,
) -> Result:
    """``run_with`` for a command known in advance whose events are appended as decided."""
    return await run_with(
        decider, log, stream_id, Given(command), max_attempts=max_attempts, known=known
    )


def run_with_blocking(
    decider: Decider[S, C, E],
    store: EventStore,
    stream_id: str,
    steps: Steps[S, C, E],
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> Result:
    """``run_with`` on a synchronous store, for synchronous callers (tools, tests):
    the same loop, the store called directly. Not from inside a running event loop."""
    log = InlineLog(store)
    return asyncio.run(run_with(decider, log, stream_id, steps, max_attempts=max_attempts))


def run_blocking(
    decider: Decider[S, C, EventData],
    store: EventStore,
    stream_id: str,
    command: C,
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> Result:
    """``run`` on a synchronous store, for synchronous callers (see ``run_with_blocking``)."""
    return run_with_blocking(decider, store, stream_id, Given(command), max_attempts=max_attempts)
