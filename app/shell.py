"""The generic decider shell: read a stream, fold it, decide, append, retry on conflict.

A *decider* is three pure functions over one stream (see ``Decider``):
``initial_state(stream_id)``, ``evolve(state, event)`` and ``decide(state, command)``.
This module owns everything around them that is the same for every decider:

* the pure steps, ``fold`` and ``plan`` (no I/O: what to append given what was read);
* the one I/O loop, ``run``: read the stream, plan, append with the expected
  version; on ``ConcurrencyConflict`` (another writer got there first) read again
  and decide again, a bounded number of times.

An asynchronous runner (an async connection, group commit) only has to replace
``run``'s two store calls; ``fold`` and ``plan`` stay as they are.

Nothing here knows HTTP: a refusal is a code and words, the caller maps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Generic, Protocol, TypeVar

from eventstore.events import EventData, Metadata
from eventstore.store import ConcurrencyConflict, EventStore, NewEvent, RecordedEvent

__all__ = [
    "MAX_ATTEMPTS",
    "Append",
    "Contention",
    "Decider",
    "Decision",
    "Plan",
    "Refuse",
    "Result",
    "Skip",
    "fold",
    "plan",
    "run",
]

MAX_ATTEMPTS: Final = 25

S = TypeVar("S")
C = TypeVar("C")
C_contra = TypeVar("C_contra", contravariant=True)


@dataclass(frozen=True, slots=True)
class Append:
    """Append these events, in order, in one transaction, all with ``metadata``.

    ``idempotency_key``: the store writes nothing a second time for the same key
    (a last line of defence; the decider should already have seen the repeat).
    """

    events: Sequence[EventData]
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


Decision = Append | Skip | Refuse


class Decider(Protocol[S, C_contra]):
    """The three pure functions of one kind of stream."""

    def initial_state(self, stream_id: str) -> S: ...

    def evolve(self, state: S, event: RecordedEvent) -> S: ...

    def decide(self, state: S, command: C_contra) -> Decision: ...


@dataclass(frozen=True, slots=True)
class Plan(Generic[S]):
    """What one attempt read and decided: the state, the stream's version, the decision."""

    state: S
    version: int
    decision: Decision

    def new_events(self) -> list[NewEvent]:
        if not isinstance(self.decision, Append):
            return []
        return [NewEvent(data, self.decision.metadata) for data in self.decision.events]


@dataclass(frozen=True, slots=True)
class Result:
    """What ``run`` did. ``events`` are the rows appended (empty unless accepted)."""

    decision: Decision
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


def fold(decider: Decider[S, C], stream_id: str, events: Iterable[RecordedEvent]) -> tuple[S, int]:
    """The state after ``events`` and the stream's version (0 for an empty stream)."""
    state = decider.initial_state(stream_id)
    version = 0
    for event in events:
        state = decider.evolve(state, event)
        version = event.version
    return state, version


def plan(
    decider: Decider[S, C], stream_id: str, events: Iterable[RecordedEvent], command: C
) -> Plan[S]:
    """Fold what was read and decide: everything ``run`` does except the I/O."""
    state, version = fold(decider, stream_id, events)
    return Plan(state, version, decider.decide(state, command))


# ---------------------------------------------------------------- the I/O loop


def run(
    decider: Decider[S, C],
    store: EventStore,
    stream_id: str,
    command: C,
    *,
    max_attempts: int = MAX_ATTEMPTS,
) -> Result:
    """Read, decide and append for one command; raises ``Contention`` when every one of
    ``max_attempts`` attempts met a concurrent append, and lets ``StoreError`` through."""
    for attempt in range(1, max_attempts + 1):
        step = plan(decider, stream_id, store.read_stream(stream_id), command)
        decision = step.decision
        if not isinstance(decision, Append):
            return Result(decision, [], attempts=attempt)
        if not decision.events:
            raise ValueError("a decider's Append must carry at least one event")
        try:
            appended = store.append(
                stream_id,
                step.new_events(),
                expected_version=step.version,
                idempotency_key=decision.idempotency_key,
            )
        except ConcurrencyConflict:
            continue  # someone else appended first: read again, decide again
        return Result(decision, appended.events, appended.duplicate, attempt)
    raise Contention(stream_id, max_attempts)
