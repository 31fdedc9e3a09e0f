"""The PostgreSQL log for the event loop: an async psycopg pool, group commit.

The hot path of an accepted call is two round trips and no thread hop: one read of
the stream and its data key (one statement), and one append, committed with
whatever other appends arrived meanwhile (``GroupCommit``: one transaction and
one fsync for the batch, each append's own conflict its own). Parameters are sent in
binary. Errors pass through the same ``translate_error`` as the synchronous store.
"""

from __future__ import annotations

import select
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from eventstore.async_log import AsyncEventLog, GroupCommit, StreamSnapshot
from eventstore.errors import StoreUnavailable, error_boundary
from eventstore.postgres.append import TRY_APPEND_BATCH, Duplicate, PendingBatch
from eventstore.postgres.schema import STATEMENTS
from eventstore.postgres.session import libpq_url, session_options, translate_error
from eventstore.values import AppendRequest, AppendResult, BatchOutcome, decode_event

# The stream and its data key in one statement (one round trip, no pipeline: see
# eventstore.postgres.append); the key's subquery is evaluated once, not per row.
_READ_STREAM_AND_KEY = (
    f"SELECT {STATEMENTS.event_columns},"
    " (SELECT wrapped FROM data_keys WHERE stream_id = %s)"
    " FROM events WHERE stream_id = %s ORDER BY version"
)


@error_boundary(translate_error)
class AsyncPostgresLog(AsyncEventLog):
    """Made by ``PostgresEventStore.async_log``; ``await open()`` before use."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int = 8,
        timeout: float = 5.0,
        statement_timeout: float = 15.0,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._timeout = timeout
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            libpq_url(url),
            min_size=1,
            max_size=max_connections,
            timeout=timeout,
            kwargs={"connect_timeout": max(1, int(timeout))} | session_options(statement_timeout),
            check=self._check_connection,
            reconnect_timeout=max(1.0, timeout),
            open=False,
            name="ledger-async",
        )
        self._writer = GroupCommit(self._commit_batch, on_batch=on_batch)

    async def open(self) -> None:
        try:
            await self._pool.open(wait=True, timeout=self._timeout)
        except PoolTimeout as exc:
            await self._pool.close()
            raise StoreUnavailable("PostgreSQL did not answer") from exc

    async def read_stream(self, stream_id: str) -> StreamSnapshot:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(_READ_STREAM_AND_KEY, [stream_id, stream_id], prepare=True)
            rows = await cursor.fetchall()
        if not rows:
            return StreamSnapshot([])
        return StreamSnapshot(
            [decode_event(*row[:-1]) for row in rows],
            bytes(rows[0][-1]) if rows[0][-1] is not None else None,
        )

    async def append(self, request: AppendRequest) -> AppendResult:
        return await self._writer.append(request)

    async def _commit_batch(self, requests: Sequence[AppendRequest]) -> list[BatchOutcome]:
        batches = PendingBatch.split(requests)  # encoded before any lock is taken
        async with self._pool.connection() as conn:
            if len(batches) == 1:  # one statement: its own transaction
                cursor = await conn.execute(TRY_APPEND_BATCH, batches[0].params(), prepare=True)
                rows = [await cursor.fetchall()]
            else:  # a stream or key repeated: one statement per part, one transaction
                async with conn.transaction():
                    rows = []
                    for batch in batches:
                        cursor = await conn.execute(TRY_APPEND_BATCH, batch.params(), prepare=True)
                        rows.append(await cursor.fetchall())
            outcomes = PendingBatch.outcomes_of(batches, rows, len(requests))
            return [await self._outcome(conn, outcome) for outcome in outcomes]

    @staticmethod
    async def _outcome(
        conn: psycopg.AsyncConnection[Any], outcome: BatchOutcome | Duplicate
    ) -> BatchOutcome:
        if not isinstance(outcome, Duplicate):
            return outcome
        cursor = await conn.execute(STATEMENTS.read_positions, [outcome.first, outcome.last])
        events = [decode_event(*row) for row in await cursor.fetchall()]
        return AppendResult(events, duplicate=True)

    async def aclose(self) -> None:
        await self._pool.close()

    async def _check_connection(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """The pool's check before it hands out a connection: a round trip only when the
        idle socket has something to say, and one dead connection drains the pool (as
        ``PostgresEventStore._check_connection``, whose reasons hold here too)."""
        try:
            if conn.closed or conn.pgconn.status != psycopg.pq.ConnStatus.OK:
                raise psycopg.OperationalError("the connection is closed")
            readable, _, _ = select.select([conn.fileno()], [], [], 0)
            if readable:
                await AsyncConnectionPool.check_connection(conn)
        except psycopg.Error:
            await self._pool.drain()
            raise
