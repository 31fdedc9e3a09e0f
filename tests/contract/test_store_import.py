"""``EventStore.import_rows`` (bulk import of a synthetic log), on every store.

The rows come from ``eventstore.testing.synthetic`` (chained as an append chains them); the
import must land them exactly, keep the log verifiable and appendable, and refuse,
storing nothing, rows that do not continue the log at its head.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest

from eventstore.bulk import ImportRefused
from eventstore.chain import column_links, raw_links
from eventstore.events import Enabled, Metadata, stream_id_for
from eventstore.store import EventStore
from eventstore.testing.synthetic import RandomLog, chain_rows, decoded, mix
from eventstore.values import NewEvent, RawEvent


def synthetic(count: int, store: EventStore | None = None, seed: int = 3) -> list[RawEvent]:
    log = RandomLog(seed=seed, reuse_share=0.1, vacated_share=0.5)
    after = store.head() if store is not None else None
    events = log.events(count, spread_events=count // 10)
    return list(chain_rows(events, after) if after else chain_rows(events))


def test_imported_rows_read_back_exactly_and_the_log_verifies(store: EventStore) -> None:
    counts: Counter[str] = Counter()
    rows = synthetic(400)
    head = store.import_rows(mix(iter(rows), counts))
    assert (head.position, head.hash) == (400, rows[-1].hash)
    assert store.head() == head
    assert len(counts) >= 6  # a realistic mix, not one type
    assert list(store.read_raw(0, 64)) == rows
    assert list(store.read_all(0, 64)) == list(decoded(rows))
    report = store.verify()
    assert report.ok and report.events == 400
    # A real append afterwards chains onto the imported head.
    appended = store.append(stream_id_for("after"), [NewEvent(Enabled(), Metadata())], 0)
    assert appended.events[0].position == 401
    assert store.verify().ok


def test_an_import_continues_a_log_written_by_appends(store: EventStore) -> None:
    store.append(stream_id_for("first"), [NewEvent(Enabled(), Metadata())], 0)
    rows = synthetic(50, store)
    assert rows[0].position == 2
    store.import_rows(rows)
    assert store.verify().ok and store.head().position == 51


def _refused(store: EventStore, rows: list[RawEvent], reason: str) -> None:
    before = store.head()
    with pytest.raises(ImportRefused, match=reason):
        store.import_rows(rows)
    assert store.head() == before  # nothing half-imported
    assert sum(1 for _ in store.read_raw()) == before.position
    assert store.verify().ok


def test_rows_that_do_not_chain_onto_the_head_are_refused(store: EventStore) -> None:
    store.append(stream_id_for("first"), [NewEvent(Enabled(), Metadata())], 0)
    _refused(store, synthetic(20), "position 1 appears again")  # chained onto genesis


def test_a_row_with_a_wrong_hash_is_refused_whole(store: EventStore) -> None:
    rows = synthetic(20)
    rows[12] = dataclasses.replace(rows[12], data=rows[12].data.replace(b"}", b" }", 1))
    _refused(store, rows, "position 13: the stored hash does not match")


def test_a_gap_in_positions_is_refused(store: EventStore) -> None:
    rows = synthetic(20)
    del rows[5]
    _refused(store, rows, "position 6 missing")


def test_a_stream_version_taken_already_is_refused(store: EventStore) -> None:
    store.import_rows(synthetic(5))
    # The same seed gives the same streams and versions again, chained correctly onto
    # the head: only the (stream, version) uniqueness of the log can refuse them.
    again = synthetic(5, store)
    assert again[0].position == 6
    _refused(store, again, "import refused")


def test_a_time_not_in_the_stored_form_is_refused(store: EventStore) -> None:
    rows = synthetic(3)
    rows[1] = dataclasses.replace(rows[1], recorded_at=rows[1].recorded_at[:-1] + "+00:00")
    _refused(store, rows, "not in the stored form")


def test_read_chain_gives_what_the_chain_needs_between_two_positions(store: EventStore) -> None:
    rows = synthetic(30)
    store.import_rows(rows)
    between = list(store.read_chain(4, through=9))
    assert [r[0] for r in between] == [5, 6, 7, 8, 9]
    # Whatever form a store hands the columns in, they link exactly as the stored rows.
    assert list(column_links(between)) == list(raw_links(rows[4:9]))
    assert [r[0] for r in store.read_chain(25)] == [26, 27, 28, 29, 30]
