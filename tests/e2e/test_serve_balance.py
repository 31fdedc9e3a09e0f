"""Workers sharing one listening socket spread the connections between them
(app.serve.balance): two processes, as ``ledger serve --workers 2`` runs them, each
serving on the socket the parent bound through the balanced loop; a pool of keep-alive
connections opened at once ends up split evenly, and every connection is served."""

from __future__ import annotations

import asyncio
import multiprocessing
import socket
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from app.serve import balance

CONNECTIONS = 12


class _Echo(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.WriteTransport = transport  # type: ignore[assignment]  # a stream's

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _worker(listening: socket.socket, board: str, report: Connection) -> None:
    """One worker: serve until the parent says stop, then report the connections held."""
    balance.os.environ[balance.BOARD_ENV] = board
    loop = balance.new_loop()
    asyncio.set_event_loop(loop)

    async def serve() -> int:
        server = await loop.create_server(_Echo, sock=listening)
        report.send("ready")
        await loop.run_in_executor(None, report.poll, 30)
        report.recv()
        held = server._connections()  # type: ignore[attr-defined]  # a BalancedServer's
        server.close()
        await server.wait_closed()
        return int(held)

    report.send(loop.run_until_complete(serve()))


@pytest.fixture
def two_workers(tmp_path: Path) -> tuple[int, list[Connection], list[multiprocessing.Process]]:
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    board = balance.create_board(tmp_path / "board")
    context = multiprocessing.get_context("fork")
    pipes, workers = [], []
    for _ in range(2):
        ours, theirs = context.Pipe()
        process = context.Process(target=_worker, args=(listening, str(board), theirs))
        process.start()
        pipes.append(ours)
        workers.append(process)
    for pipe in pipes:
        assert pipe.poll(30) and pipe.recv() == "ready"
    port = listening.getsockname()[1]
    listening.close()
    return port, pipes, workers


def test_a_pool_opened_at_once_is_split_evenly_and_every_connection_served(
    two_workers: tuple[int, list[Connection], list[multiprocessing.Process]],
) -> None:
    port, pipes, workers = two_workers
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(CONNECTIONS)]
    try:
        for n, client in enumerate(clients):
            client.sendall(b"ping %d" % n)
        for n, client in enumerate(clients):
            assert client.recv(64) == b"ping %d" % n
        time.sleep(0.1)
        for pipe in pipes:
            pipe.send("stop")
        held = [pipe.recv() for pipe in pipes if pipe.poll(30)]
    finally:
        for client in clients:
            client.close()
        for process in workers:
            process.join(10)
    assert sum(held) == CONNECTIONS
    assert max(held) - min(held) <= 1, held


def _hold_a_slot(board_path: str, connections: int, pipe: Connection) -> None:
    board = balance.Board(board_path)
    board.publish(connections)
    pipe.send(board.slot)
    pipe.recv()  # until the parent lets go; then the process ends, without closing the board


def test_a_dead_workers_slot_is_taken_by_its_replacement(tmp_path: Path) -> None:
    board_path = str(balance.create_board(tmp_path / "board"))
    context = multiprocessing.get_context("fork")

    def start(connections: int) -> tuple[Connection, multiprocessing.Process]:
        ours, theirs = context.Pipe()
        process = context.Process(target=_hold_a_slot, args=(board_path, connections, theirs))
        process.start()
        return ours, process

    first, first_process = start(3)
    assert first.recv() == 0
    board = balance.Board(board_path)
    try:
        assert board.slot == 1  # slot 0 is a live worker's
        assert board.fewest_elsewhere() == 3
        first.send("go")
        first_process.join(10)
        second, second_process = start(5)
        assert second.recv() == 0  # the dead worker's slot, taken over
        assert board.fewest_elsewhere() == 5
        second.send("go")
        second_process.join(10)
    finally:
        board.close()
