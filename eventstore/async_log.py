"""The log as the event loop uses it (``AsyncEventLog``), and group commit.

The ingestion's hot path runs in the event loop: one read of a stream (with the data
key the store keeps beside it) and one append per accepted call. ``AsyncEventLog`` is
that path's interface. Its backends:

* PostgreSQL (``eventstore.postgres.aio``): an async psycopg pool, binary
  parameters, no thread hop;
* any synchronous store (``ThreadedLog``, the embedded SQLite): each call in a worker
  thread, as the service did before;
* ``InlineLog``: the synchronous store called directly, for synchronous callers that
  run the shell under ``asyncio.run`` (tools and tests).

**Group commit** (``GroupCommit``): the appends that arrive while a commit is in flight
are committed together in one transaction (``commit_batch``), one fsync for all.
Each caller awaits its own outcome: a version conflict fails only its own append
(the shell reads again and retries it), a failure of the batch (the database gone,
the transaction refused) fails every append of it, and no caller hears of success
before the batch's commit returned. The first append of an idle writer is committed
at once: batching costs a lone caller nothing.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from anyio import to_thread

from eventstore.errors import ConcurrencyConflict
from eventstore.values import AppendRequest, AppendResult, BatchOutcome, NewEvent, RecordedEvent

__all__ = [
    "AppendRequest",
    "AsyncEventLog",
    "BatchOutcome",
    "GroupCommit",
    "InlineLog",
    "StreamSnapshot",
    "ThreadedLog",
]


class SyncLog(Protocol):
    """What the adapters below need of a synchronous store (``EventStore`` has it)."""

    def read_stream(self, stream_id: str) -> list[RecordedEvent]: ...

    def get_data_key(self, stream_id: str) -> bytes | None: ...

    def append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        idempotency_key: str | None = ...,
        data_key: bytes | None = ...,
    ) -> AppendResult: ...

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]: ...


@dataclass(frozen=True, slots=True)
class StreamSnapshot:
    """A stream as read for a decision: its events in version order, and the wrapped
    data key the store holds for it (None when it has none)."""

    events: list[RecordedEvent]
    data_key: bytes | None = None


CommitBatch = Callable[[list[AppendRequest]], Awaitable[list[BatchOutcome]]]


@dataclass
class _Waiting:
    request: AppendRequest
    outcome: asyncio.Future[AppendResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class GroupCommit:
    """One writer per process: batches concurrent appends into one transaction.

    ``commit_batch`` commits a list of requests in one transaction and returns one
    outcome per request; it raises (a ``StoreError``) when the batch as a whole failed,
    and then nothing of it was stored. ``on_batch`` hears each batch's size (metrics).
    ``max_batch`` bounds one transaction; the rest wait for the next.
    """

    def __init__(
        self,
        commit_batch: CommitBatch,
        *,
        max_batch: int = 256,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._commit_batch = commit_batch
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._queue: list[_Waiting] = []
        self._writer: asyncio.Task[None] | None = None

    async def append(self, request: AppendRequest) -> AppendResult:
        """Append once committed; ConcurrencyConflict for this request's own conflict."""
        waiting = _Waiting(request)
        self._queue.append(waiting)
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        # shield: a caller that gives up (a client gone) must not cancel the batch of
        # the others; its own append is still committed or refused with the batch.
        return await asyncio.shield(waiting.outcome)

    async def _write(self) -> None:
        try:
            while self._queue:
                batch = self._queue[: self._max_batch]
                del self._queue[: self._max_batch]
                await self._commit(batch)
        finally:
            self._writer = None

    async def _commit(self, batch: list[_Waiting]) -> None:
        if self._on_batch is not None:
            self._on_batch(len(batch))
        try:
            outcomes = await self._commit_batch([w.request for w in batch])
        except BaseException as error:  # the whole batch failed: so does every caller
            for waiting in batch:
                if not waiting.outcome.done():
                    waiting.outcome.set_exception(error)
            if not isinstance(error, Exception):
                raise  # cancellation or exit: the writer stops after telling everyone
            return
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, ConcurrencyConflict):
                waiting.outcome.set_exception(outcome)
            else:
                waiting.outcome.set_result(outcome)


class AsyncEventLog(abc.ABC):
    """What the decider shell needs of a log, awaitable: read a stream, append to it."""

    @abc.abstractmethod
    async def read_stream(self, stream_id: str) -> StreamSnapshot:
        """The stream in version order, with its wrapped data key."""

    @abc.abstractmethod
    async def append(self, request: AppendRequest) -> AppendResult:
        """Append after ``request.expected_version``; committed when it returns.
        Raises ConcurrencyConflict like ``EventLog.append``."""

    async def open(self) -> None:  # noqa: B027  # most logs hold nothing of their own
        """Take what the log needs (connections) before its first use."""

    async def aclose(self) -> None:  # noqa: B027  # most logs hold nothing of their own
        """Let go of what the log holds (connections); the store it came from stays."""


class InlineLog(AsyncEventLog):
    """A synchronous store called directly (blocking): for synchronous callers that run
    the shell in ``asyncio.run``, never inside a serving event loop."""

    def __init__(self, store: SyncLog) -> None:
        self._store = store

    async def read_stream(self, stream_id: str) -> StreamSnapshot:
        return read_snapshot(self._store, stream_id)

    async def append(self, request: AppendRequest) -> AppendResult:
        return append_one(self._store, request)


class ThreadedLog(AsyncEventLog):
    """A synchronous store (the embedded SQLite) from the event loop: each read in a
    worker thread, and the appends group-committed by one writer whose batches run in
    a worker thread (``EventLog.append_batch``)."""

    def __init__(self, store: SyncLog, on_batch: Callable[[int], None] | None = None) -> None:
        self._store = store
        self._writer = GroupCommit(self._commit_batch, on_batch=on_batch)

    async def read_stream(self, stream_id: str) -> StreamSnapshot:
        return await to_thread.run_sync(read_snapshot, self._store, stream_id)

    async def append(self, request: AppendRequest) -> AppendResult:
        return await self._writer.append(request)

    async def _commit_batch(self, requests: list[AppendRequest]) -> list[BatchOutcome]:
        return await to_thread.run_sync(self._store.append_batch, requests)


def read_snapshot(store: SyncLog, stream_id: str) -> StreamSnapshot:
    """A synchronous store's stream and data key (two reads; the append's checks make
    a snapshot taken between two writes harmless: it conflicts and is read again)."""
    events = store.read_stream(stream_id)
    return StreamSnapshot(events, store.get_data_key(stream_id) if events else None)


def append_one(store: SyncLog, request: AppendRequest) -> AppendResult:
    return store.append(
        request.stream_id,
        request.events,
        expected_version=request.expected_version,
        idempotency_key=request.idempotency_key,
        data_key=request.data_key,
    )
