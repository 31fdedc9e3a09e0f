"""Rebuild read models from the whole log, then swap them in atomically.

The folds run over the log into memory (read as lean events, ``projections.lean``,
each dispatched once to the handlers of every fold; rows that can no longer change
move to a temporary file as they appear, ``_Spool``) while the service keeps
answering from the live tables; the rows are then written in bulk (COPY on PostgreSQL) into fresh
``<name>__rebuild`` tables; finally, with the checkpoints locked (the runner waits),
the events that arrived meanwhile are folded too and the fresh tables replace the
live ones in the same transaction. A rebuild killed at any point leaves the live
tables untouched; the next one drops the half-built tables and starts clean.

Two rebuilds never run at once: each holds the "rebuild" lock (PostgreSQL advisory
lock, ``flock`` on SQLite; see ``projections.locks``) from before it touches the
rebuild tables until after the swap. A second one waits for it, or with
``wait=False`` raises RebuildRunning. The lock dies with its process, so a killed
rebuild never blocks the next one.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from eventstore.events import EVENT_TYPES
from eventstore.store import EventLog
from projections.backends import lock_for, storage_for
from projections.health import short_message
from projections.lean import LeanEvent, lean_pages
from projections.model import Row
from projections.registry import PROJECTIONS
from projections.storage.base import ProjectionStorage
from projections.storage.tables import SPECS, group_of

Progress = Callable[[int, int], None]  # (position folded, head position when started)


class RebuildRunning(Exception):
    """Another rebuild holds the lock (and the caller chose not to wait)."""


class RebuildFoldFailed(Exception):
    """A fold raised (a bug): nothing was swapped in; the live tables are untouched."""

    def __init__(self, names: Sequence[str], first: Any, last: Any, error: Exception) -> None:
        super().__init__(
            f"the {', '.join(names)} fold failed on an event in positions"
            f" {first.position}-{last.position} (from {first.type}):"
            f" {type(error).__name__}: {short_message(error)}"
        )
        self.position = first.position


@dataclass(frozen=True)
class RebuildReport:
    names: tuple[str, ...]
    events: int
    position: int
    rows: dict[str, int]
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def with_dependencies(names: Iterable[str]) -> tuple[str, ...]:
    """The named projections plus those whose folds resume from their rows."""
    wanted = list(names) or list(SPECS)
    chosen: list[str] = []
    for name in wanted:
        for member in group_of(name):
            if member not in chosen:
                chosen.append(member)
    return tuple(n for n in SPECS if n in chosen)


def rebuild(
    store: EventLog,
    names: Sequence[str] = (),
    *,
    storage: ProjectionStorage | None = None,
    # Pages of 2,000: at 10,000 the pages read ahead and in the batch lifted the peak RSS
    # (200,000 events: 131 MB -> 201 MB) for no gain in speed.
    batch_size: int = 2_000,
    progress: Progress | None = None,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> RebuildReport:
    """Rebuild ``names`` (and their dependencies), one rebuild at a time: a second
    one waits for the first (``on_wait`` is told once), or with ``wait=False``
    raises RebuildRunning."""
    lock = lock_for(store, "rebuild")
    if not wait and not lock.try_acquire():
        lock.release()
        raise RebuildRunning("another rebuild is running on this database")
    try:
        lock.acquire(on_wait)
        with _no_cycle_collection():
            return _rebuild(store, names, storage or storage_for(store), batch_size, progress)
    finally:
        lock.release()


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """The cyclic garbage collector paused for the rebuild (~10% of its CPU): it would
    scan the driver's million short-lived row tuples and the folds' large states over and
    over, while nothing a fold keeps can form a cycle (``gc=False`` rows, strings, times).
    Reference counting still frees everything as usual; the collector resumes after."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_spool_encoder: Final = msgspec.msgpack.Encoder()


class _Spool:
    """Rows that never change once made (links, reimports, closed ``base_urls``
    intervals: their projections' ``finished_rows``) moved from memory to a temporary
    file (msgpack, unlinked from the start: a killed rebuild leaves nothing) page by page,
    read back, in order, by COPY at the end: at 250,000 tenants the links alone (row and
    ``link_id`` text, ~200 bytes a tenant) otherwise stayed in memory until then."""

    def __init__(self, row_type: type) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115  # closed by close(), after the swap
        self._decoder = msgspec.msgpack.Decoder(list[row_type])  # type: ignore[valid-type]  # a row class known at run time

    def keep(self, rows: list[Row]) -> None:
        if rows:
            data = _spool_encoder.encode(rows)
            self._file.write(len(data).to_bytes(8, "little"))
            self._file.write(data)

    def take(self) -> Iterator[Row]:
        """Every row kept so far, in order, then forgotten."""
        file = self._file
        file.seek(0)
        while header := file.read(8):
            yield from self._decoder.decode(file.read(int.from_bytes(header, "little")))
        file.seek(0)
        file.truncate()

    def close(self) -> None:
        self._file.close()


@dataclass
class _Fold:
    """One fold of a rebuild, its state, and the projections whose rows it gives."""

    projection: Any
    state: Any
    names: list[str]
    spools: dict[str, _Spool] = field(default_factory=dict)

    def rows(self, name: str) -> Iterable[Row]:
        """``name``'s changed rows (lazily, for COPY), forgotten once taken."""
        if len(self.names) == 1:
            rows = self.state.drain_changes()
        else:
            rows = PROJECTIONS[name].rows_from(self.state)
        spool = self.spools.get(name)
        return rows if spool is None else itertools.chain(spool.take(), rows)

    def spill(self) -> None:
        """Move the rows finished so far out of memory."""
        for name, spool in self.spools.items():
            spool.keep(PROJECTIONS[name].finished_rows(self.state))


def _folds(names: Sequence[str]) -> list[_Fold]:
    """Each fold once: projections that declare the same ``shared_fold`` (the two Forge
    tables) are fed by one state, folded once, instead of folding every event twice."""
    folds: list[_Fold] = []
    shared: dict[str, _Fold] = {}
    for name in names:
        projection = PROJECTIONS[name]
        key = getattr(projection, "shared_fold", None)
        if key is not None and key in shared:
            shared[key].names.append(name)
            continue
        fold = _Fold(projection, projection.initial_state(), [name])
        folds.append(fold)
        if key is not None:
            shared[key] = fold
    for fold in folds:
        for name in fold.names:
            if hasattr(PROJECTIONS[name], "finished_rows"):
                fold.spools[name] = _Spool(PROJECTIONS[name].row_type)
    return folds


Step = tuple[Callable[[Any, Any], None], Any, _Fold]


class _Dispatch:
    """Every fold's handlers by event type: one lookup per event for all folds, instead
    of one per fold. The handlers are the projections' own (``handlers``, what their
    ``apply_many`` runs), updating each fold's state in place (``projections.model``)."""

    def __init__(self, folds: Sequence[_Fold]) -> None:
        # Every type of the catalog, none for types these folds leave alone (a page
        # never holds any other: the reader reads unknown types through read_all, which
        # refuses them).
        steps: dict[str, list[Step]] = {event_type: [] for event_type in EVENT_TYPES}
        for fold in folds:
            for event_type, handler in fold.projection.handlers.items():
                steps.setdefault(event_type, []).append((handler, fold.state, fold))
        self._steps = {event_type: tuple(each) for event_type, each in steps.items()}
        self._names = [name for fold in folds for name in fold.names]

    def fold(self, batch: Sequence[LeanEvent]) -> None:
        steps = self._steps
        fold: _Fold | None = None
        try:
            for event in batch:
                for handler, state, fold in steps[event.type]:  # noqa: B007  # read by the except
                    handler(state, event)
        except Exception as error:
            names = fold.names if fold is not None else self._names
            raise RebuildFoldFailed(names, batch[0], batch[-1], error) from error


def _rebuild(
    store: EventLog,
    names: Sequence[str],
    storage: ProjectionStorage,
    batch_size: int,
    progress: Progress | None,
) -> RebuildReport:
    started = time.perf_counter()
    storage.ensure()
    chosen = with_dependencies(names)
    storage.prepare_rebuild(chosen)
    folds = _folds(chosen)
    try:
        return _fold_and_swap(store, chosen, storage, folds, batch_size, progress, started)
    finally:
        for fold in folds:
            for spool in fold.spools.values():
                spool.close()


def _fold_and_swap(
    store: EventLog,
    chosen: tuple[str, ...],
    storage: ProjectionStorage,
    folds: list[_Fold],
    batch_size: int,
    progress: Progress | None,
    started: float,
) -> RebuildReport:
    dispatch = _Dispatch(folds)
    head = store.head().position
    position = 0
    events = 0
    for batch in lean_pages(store, 0, batch_size):
        dispatch.fold(batch)
        for fold in folds:
            fold.spill()
        position = batch[-1].position
        events += len(batch)
        if progress:
            progress(position, head)

    rows = storage.bulk_load_all({name: fold.rows(name) for fold in folds for name in fold.names})

    def catch_up() -> tuple[int, Mapping[str, Sequence[Row]]]:
        nonlocal position, events
        for batch in lean_pages(store, position, batch_size):
            dispatch.fold(batch)
            position = batch[-1].position
            events += len(batch)
        return position, {name: list(fold.rows(name)) for fold in folds for name in fold.names}

    final = storage.swap(chosen, catch_up)
    if progress:
        progress(final, max(head, final))
    return RebuildReport(chosen, events, final, rows, time.perf_counter() - started)
