"""Spreading connections evenly between the workers that share one listening socket.

With ``ledger serve --workers N`` every worker waits on the one socket the parent bound,
and the first to wake accepts every connection then pending (libuv accepts until the
queue is empty). A pool of keep-alive connections opened at once (a proxy's, a load
generator's) landed 11 on one worker and 5 on the other, or 4 and 12, for their whole
life, and the busier worker's calls waited in line two or three times as long: much of
the ingestion's p99 (bench/README.md, "The tail").

Here each worker accepts one connection at a time, and only while it holds no more open
connections than every other worker; otherwise it leaves the pending connection to the
others for up to ``PATIENCE`` seconds (a sibling busy with a call may not be looking),
then takes it itself, so no connection waits long. The workers tell each other their
counts through a board: a small file in the serve's run directory (``BOARD_ENV``), one
slot per worker, claimed with a lock that the kernel drops when its worker dies (the
replacement takes the free slot).

uvicorn's loop is replaced by the same loop (uvloop, else asyncio) whose
``create_server`` over a given listening socket returns a ``BalancedServer``; everything
else about serving is uvicorn's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import select
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

log = logging.getLogger("ledger.serve")

BOARD_ENV: Final = "LEDGER_ACCEPT_BOARD"
SLOTS: Final = 64
_SLOT: Final = struct.Struct("<q")  # a worker's open connections + 1; 0: no worker
BOARD_BYTES: Final = SLOTS * _SLOT.size
# How long a pending connection is left to a worker holding fewer, and how often the
# one holding more looks whether it was taken meanwhile.
PATIENCE: Final = 0.02
STEP: Final = 0.002
_RETRY_AFTER_ERROR: Final = 0.1  # accept() failed for want of descriptors or memory


def create_board(path: Path) -> Path:
    """The empty board, made by the serve process before its workers start."""
    path.write_bytes(bytes(BOARD_BYTES))
    return path


class Board:
    """This worker's slot on the board, and a look at the others'."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, BOARD_BYTES)
        self.slot = self._claim()
        self.publish(0)

    def _claim(self) -> int:
        for slot in range(SLOTS):
            try:
                fcntl.lockf(
                    self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SLOT.size, slot * _SLOT.size
                )
            except OSError:
                continue  # a live worker's
            return slot
        raise RuntimeError(f"more than {SLOTS} workers share one board")

    def publish(self, connections: int) -> None:
        _SLOT.pack_into(self._map, self.slot * _SLOT.size, connections + 1)

    def fewest_elsewhere(self) -> int | None:
        """The fewest open connections another worker holds (None: no other worker)."""
        fewest: int | None = None
        for slot in range(SLOTS):
            if slot == self.slot:
                continue
            (value,) = _SLOT.unpack_from(self._map, slot * _SLOT.size)
            if value > 0 and (fewest is None or value - 1 < fewest):
                fewest = value - 1
        return fewest

    def close(self) -> None:
        _SLOT.pack_into(self._map, self.slot * _SLOT.size, 0)
        self._map.close()
        os.close(self._fd)  # and with it the slot's lock


class BalancedServer:
    """What ``create_server(sock=...)`` returns (uvicorn calls ``close`` and
    ``wait_closed``): accepts on ``sock`` by the rule above, each connection served by
    ``protocol_factory``'s protocol as the loop's own server would."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sock: socket.socket,
        board: Board,
    ) -> None:
        self._loop, self._factory, self._sock, self._board = loop, protocol_factory, sock, board
        self._open: set[asyncio.BaseTransport] = set()
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN)
        self._reading = False
        self._task = loop.create_task(self._serve())

    def close(self) -> None:
        if self._task.done():
            return
        self._stop_reading()
        self._task.cancel()
        self._sock.close()
        self._board.close()

    async def wait_closed(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    def _connections(self) -> int:
        self._open = {t for t in self._open if not t.is_closing()}
        return len(self._open)

    def _my_turn(self) -> bool:
        mine = self._connections()
        self._board.publish(mine)
        fewest = self._board.fewest_elsewhere()
        return fewest is None or mine <= fewest

    def _pending(self) -> bool:
        return bool(self._poll.poll(0))

    async def _serve(self) -> None:
        while True:
            await self._readable()
            waited = 0.0
            while not self._my_turn() and waited < PATIENCE:
                await asyncio.sleep(STEP)
                waited += STEP
                if not self._pending():
                    break  # another worker took it
            await self._accept_one()

    async def _accept_one(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # taken by another worker, or gone
        except OSError as error:
            if error.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                raise
            log.error(f"accepting a connection failed: {error.strerror}")
            await asyncio.sleep(_RETRY_AFTER_ERROR)
            return
        conn.setblocking(False)
        try:
            transport, _ = await self._loop.connect_accepted_socket(self._factory, conn)
        except OSError:
            conn.close()  # the client left before it was taken in
            return
        except Exception:  # one connection's failure must not stop the accepting
            log.exception("a connection could not be taken in")
            conn.close()
            return
        self._open.add(transport)

    def _readable(self) -> asyncio.Future[None]:
        ready: asyncio.Future[None] = self._loop.create_future()

        def on_ready() -> None:
            self._stop_reading()
            if not ready.done():
                ready.set_result(None)

        self._loop.add_reader(self._sock.fileno(), on_ready)
        self._reading = True
        ready.add_done_callback(lambda _: self._stop_reading())
        return ready

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._sock.fileno())


_board: Board | None = None


def _this_workers_board() -> Board | None:
    global _board
    path = os.environ.get(BOARD_ENV)
    if _board is None and path:
        _board = Board(path)
    return _board


class _Balancing:
    """``create_server`` over a listening socket, balanced when the serve made a board."""

    async def create_server(
        self, protocol_factory: Callable[[], asyncio.BaseProtocol], *args: Any, **options: Any
    ) -> Any:
        sock = options.get("sock")
        board = _this_workers_board() if isinstance(sock, socket.socket) and not args else None
        if board is None or not isinstance(sock, socket.socket) or options.get("ssl"):
            return await super().create_server(  # type: ignore[misc]  # the loop class mixed in
                protocol_factory, *args, **options
            )
        sock.listen(options.get("backlog", 100))
        sock.setblocking(False)
        loop: asyncio.AbstractEventLoop = self  # type: ignore[assignment]  # mixed into a loop
        return BalancedServer(loop, protocol_factory, sock, board)


def new_loop() -> asyncio.AbstractEventLoop:
    """uvicorn's loop factory for a worker (``loop="app.serve.balance:new_loop"``)."""
    try:
        import uvloop
    except ImportError:  # uvicorn's "auto" falls back the same way
        return _BalancedAsyncio()

    class _BalancedUvloop(_Balancing, uvloop.Loop):  # type: ignore[misc]  # uvloop's stubs disagree with asyncio's
        pass

    return _BalancedUvloop()


class _BalancedAsyncio(_Balancing, asyncio.SelectorEventLoop):
    pass
