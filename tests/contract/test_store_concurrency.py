"""Concurrency contract: several writer processes and a tailing reader (SPEC §8), and a
Hypothesis property over interleaved appends."""

from __future__ import annotations

import multiprocessing
import time
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventstore import open_store
from eventstore.errors import ConcurrencyConflict
from eventstore.events import DetailsChanged, Enabled, Metadata, stream_id_for
from eventstore.store import EventStore
from eventstore.values import NewEvent

WRITERS = 4
EVENTS_PER_WRITER = 150


def _writer(url: str, writer: int, count: int) -> None:
    store = open_store(url)
    try:
        shared = stream_id_for("shared")
        for i in range(count):
            if i % 5 == 0:
                # Contend on one stream too: conflicts are retried, never lost.
                while True:
                    try:
                        store.append(
                            shared,
                            [NewEvent(DetailsChanged(changes={"w": writer, "i": i}), Metadata())],
                            store.stream_version(shared),
                        )
                        break
                    except ConcurrencyConflict:
                        continue
            else:
                own = stream_id_for(f"w{writer}")
                store.append(
                    own,
                    [NewEvent(Enabled(), Metadata(call_id=f"{writer}-{i}"))],
                    store.stream_version(own),
                )
    finally:
        store.close()


def test_tailing_reader_sees_every_event_once_in_order(store_url: str) -> None:
    with open_store(store_url) as reader:
        context = multiprocessing.get_context("spawn")
        writers = [
            context.Process(target=_writer, args=(store_url, w, EVENTS_PER_WRITER))
            for w in range(WRITERS)
        ]
        for process in writers:
            process.start()
        total = WRITERS * EVENTS_PER_WRITER
        seen: list[int] = []
        deadline = time.monotonic() + 120
        while len(seen) < total and time.monotonic() < deadline:
            after = seen[-1] if seen else 0
            batch = [e.position for e in reader.read_all(after_position=after, batch_size=17)]
            seen.extend(batch)
            if not batch:
                time.sleep(0.002)
        for process in writers:
            process.join(timeout=60)
            assert process.exitcode == 0
        # Exactly once, in order, with no position skipped while it was still in flight.
        assert seen == list(range(1, total + 1))
        assert reader.verify().ok
        versions = [e.version for e in reader.read_stream(stream_id_for("shared"))]
        assert versions == list(range(1, WRITERS * (EVENTS_PER_WRITER // 5) + 1))


# Each step appends `size` events to stream `index`.
steps = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=30)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plan=steps)
def test_interleaved_appends_read_back_in_commit_order(
    plan: list[tuple[int, int]], store: EventStore
) -> None:
    # One database serves every example: each example uses fresh stream names and
    # reads only what it appended after the head it started from.
    run = uuid.uuid4().hex[:8]
    start = store.head().position
    committed: list[tuple[str, int]] = []
    for index, size in plan:
        stream = stream_id_for(f"{run}-s{index}")
        version = store.stream_version(stream)
        events = [NewEvent(Enabled(), Metadata(call_id=f"{index}")) for _ in range(size)]
        store.append(stream, events, version)
        committed.extend((stream, version + k) for k in range(1, size + 1))
    everything = list(store.read_all(after_position=start, batch_size=4))
    assert [(e.stream_id, e.version) for e in everything] == committed
    assert [e.position for e in everything] == list(range(start + 1, start + len(committed) + 1))
    for index in {i for i, _ in plan}:
        stream = stream_id_for(f"{run}-s{index}")
        assert [e.version for e in store.read_stream(stream)] == list(
            range(1, store.stream_version(stream) + 1)
        )
