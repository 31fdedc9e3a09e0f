"""The generic decider shell (app/ingest/shell.py) on its own, against both stores, no HTTP."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest

from app.ingest import shell
from app.ingest.known_streams import KnownStreams
from app.ingest.shell import Append, Contention, Decision, Refuse, Skip
from eventstore.async_log import InlineLog, StreamSnapshot
from eventstore.events import EventData, InstallConfirmed, Metadata
from eventstore.store import EventStore
from eventstore.values import NewEvent, RecordedEvent

STREAM = "counter:one"


@dataclass(frozen=True)
class Count:
    stream_id: str
    seen: int = 0


@dataclass(frozen=True)
class Add:
    n: int
    key: str | None = None
    refuse: bool = False


class Counter:
    """A decider that appends ``n`` events unless told to refuse; ``n == 0`` skips."""

    def initial_state(self, stream_id: str) -> Count:
        return Count(stream_id)

    def evolve(self, state: Count, event: RecordedEvent) -> Count:
        return Count(state.stream_id, state.seen + 1)

    def decide(self, state: Count, command: Add) -> Decision:
        if command.refuse:
            return Refuse("refused", "told to")
        if command.n == 0:
            return Skip("nothing")
        return Append(
            [InstallConfirmed()] * command.n,
            Metadata(call_id=f"after-{state.seen}"),
            idempotency_key=command.key,
        )


@dataclass
class Interfering(Counter):
    """Lets another writer append to the stream during the first ``times`` decisions,
    so that the shell's own append meets a real ConcurrencyConflict."""

    other: EventStore
    times: int
    calls: list[int] = field(default_factory=list)

    def decide(self, state: Count, command: Add) -> Decision:
        self.calls.append(state.seen)
        if len(self.calls) <= self.times:
            self.other.append(STREAM, [NewEvent(InstallConfirmed(), Metadata())], state.seen)
        return super().decide(state, command)


def test_fold_and_plan_are_pure_steps() -> None:
    state, version = shell.fold(Counter(), STREAM, [])
    assert (state, version) == (Count(STREAM), 0)
    step = shell.plan(Counter(), STREAM, [], Add(2))
    assert step.version == 0
    assert [e.type for e in step.new_events()] == ["InstallConfirmed", "InstallConfirmed"]
    assert shell.plan(Counter(), STREAM, [], Add(0)).new_events() == []


def test_run_appends_after_the_version_it_read(store: EventStore) -> None:
    first = shell.run_blocking(Counter(), store, STREAM, Add(2))
    assert first.appended and [e.version for e in first.events] == [1, 2]
    second = shell.run_blocking(Counter(), store, STREAM, Add(1))
    assert [e.version for e in second.events] == [3]
    # The decision saw the two earlier events.
    assert second.events[0].metadata.call_id == "after-2"
    assert [e.version for e in store.read_stream(STREAM)] == [1, 2, 3]


def test_skip_and_refuse_append_nothing(store: EventStore) -> None:
    skipped = shell.run_blocking(Counter(), store, STREAM, Add(0))
    refused = shell.run_blocking(Counter(), store, STREAM, Add(1, refuse=True))
    assert isinstance(skipped.decision, Skip) and not skipped.appended
    assert isinstance(refused.decision, Refuse) and refused.decision.code == "refused"
    assert store.read_stream(STREAM) == []


def test_a_conflict_is_read_again_and_decided_again(store_url: str, store: EventStore) -> None:
    from eventstore import open_store

    with open_store(store_url) as other:
        decider = Interfering(other=other, times=2)
        result = shell.run_blocking(decider, store, STREAM, Add(1))
    assert result.attempts == 3
    assert decider.calls == [0, 1, 2]  # each attempt saw the other writer's event
    assert [e.version for e in result.events] == [3]
    assert result.events[0].metadata.call_id == "after-2"


def test_bounded_attempts_end_in_contention(store_url: str, store: EventStore) -> None:
    from eventstore import open_store

    with open_store(store_url) as other:
        decider = Interfering(other=other, times=100)
        with pytest.raises(Contention) as raised:
            shell.run_blocking(decider, store, STREAM, Add(1), max_attempts=4)
    assert raised.value.attempts == 4
    assert len(decider.calls) == 4
    assert len(store.read_stream(STREAM)) == 4  # only the other writer's events


def test_the_idempotency_key_writes_once(store: EventStore) -> None:
    first = shell.run_blocking(Counter(), store, STREAM, Add(1, key="k" * 64))
    again = shell.run_blocking(Counter(), store, STREAM, Add(1, key="k" * 64))
    assert first.appended and not again.appended and again.duplicate
    assert [e.position for e in again.events] == [e.position for e in first.events]
    assert len(store.read_stream(STREAM)) == 1


@dataclass
class Doubling:
    """Steps whose command depends on the state read, and whose rows carry a data key."""

    wrapped: bytes
    asked: list[int] = field(default_factory=list)

    def command(self, state: Count, stored_key: bytes | None = None) -> Add:
        self.asked.append(state.seen)
        return Add(state.seen + 1)

    def rows(
        self,
        stream_id: str,
        state: object,
        version: int,
        decision: Append[EventData],
        stored_key: bytes | None = None,
    ) -> shell.Rows:
        events = [NewEvent(data, decision.metadata) for data in decision.events]
        return shell.Rows(events, self.wrapped if version == 0 else None)


def test_steps_ask_from_the_state_and_store_a_data_key_with_the_rows(store: EventStore) -> None:
    steps = Doubling(wrapped=b"w" * 60)
    first = shell.run_with_blocking(Counter(), store, STREAM, steps)
    second = shell.run_with_blocking(Counter(), store, STREAM, steps)
    assert steps.asked == [0, 1]
    assert [e.version for e in first.events] == [1]
    assert [e.version for e in second.events] == [2, 3]
    assert store.get_data_key(STREAM) == b"w" * 60  # stored by the first append
    # The pure step makes the same rows without the store.
    step = shell.plan_with(Counter(), STREAM, store.read_stream(STREAM), Doubling(b"x"))
    assert (step.version, len(step.new_events()), step.rows.data_key) == (3, 4, None)


class CountingLog(InlineLog):
    """The store called inline, counting the shell's reads."""

    def __init__(self, store: EventStore) -> None:
        super().__init__(store)
        self.reads = 0

    async def read_stream(self, stream_id: str) -> StreamSnapshot:
        self.reads += 1
        return await super().read_stream(stream_id)


@dataclass
class RefusesTheUnknown(Counter):
    """Refuses a stream with no events (as Connect refuses an unknown tenant's call)."""

    seen: list[int] = field(default_factory=list)

    def decide(self, state: Count, command: Add) -> Decision:
        self.seen.append(state.seen)
        if state.seen == 0:
            return Refuse("unknown", "no events yet")
        return super().decide(state, command)


def run_known(decider: Counter, log: CountingLog, known: KnownStreams, n: int = 1) -> shell.Result:
    return asyncio.run(shell.run(decider, log, STREAM, Add(n), known=known))


def test_a_stream_never_seen_is_decided_empty_and_appended_without_a_read(
    store: EventStore,
) -> None:
    log, known = CountingLog(store), KnownStreams()
    first = run_known(Counter(), log, known, 2)
    assert (log.reads, first.attempts, [e.version for e in first.events]) == (0, 1, [1, 2])
    assert known.exists(STREAM) and (known.guesses, known.wrong) == (1, 0)
    # Seen to exist: read before every decision from now on.
    second = run_known(Counter(), log, known)
    assert (log.reads, [e.version for e in second.events]) == (1, [3])
    assert second.events[0].metadata.call_id == "after-2"


def test_a_wrong_guess_conflicts_and_is_decided_again_on_a_read(store: EventStore) -> None:
    store.append(STREAM, [NewEvent(InstallConfirmed(), Metadata())] * 2, 0)  # another process
    log, known = CountingLog(store), KnownStreams()
    result = run_known(Counter(), log, known)
    assert (result.attempts, log.reads, known.wrong) == (2, 1, 1)
    assert [e.version for e in result.events] == [3]
    assert result.events[0].metadata.call_id == "after-2"  # decided on what was read
    assert len(store.read_stream(STREAM)) == 3


def test_nothing_is_refused_on_a_guess(store: EventStore) -> None:
    store.append(STREAM, [NewEvent(InstallConfirmed(), Metadata())], 0)
    decider, log, known = RefusesTheUnknown(), CountingLog(store), KnownStreams()
    accepted = run_known(decider, log, known)
    assert decider.seen == [0, 1] and log.reads == 1  # refused on the guess: read, decided again
    assert accepted.appended and [e.version for e in accepted.events] == [2]
    # On a stream that really is empty the refusal stands, decided on a read.
    other = "counter:two"
    refused = asyncio.run(shell.run(RefusesTheUnknown(), log, other, Add(1), known=known))
    assert isinstance(refused.decision, Refuse) and log.reads == 2
    assert store.read_stream(other) == [] and not known.exists(other)


def test_known_streams_are_bounded_least_recently_used_out() -> None:
    known = KnownStreams(max_streams=2)
    known.saw("a")
    known.saw("b")
    assert known.exists("a")  # "a" is now the most recent
    known.saw("c")
    assert (known.exists("a"), known.exists("b"), known.exists("c"), len(known)) == (
        True,
        False,
        True,
        2,
    )
