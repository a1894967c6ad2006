"""keeper.py's pure parts with real sockets: the board of movable descriptors, and what a keeper
passes to the hand-over socket once its worker is dead (the keeper process itself, killed
workers and all, is tested through the real server in tests/integration/test_held_connections.py)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from prefork_wasm import handover
from prefork_wasm.held import KEEPALIVE
from prefork_wasm.keeper import Board, pass_on


def test_the_board_lists_the_descriptors_marked_movable_with_their_requests_and_no_others() -> None:
    board = Board()
    for fd, served in ((5, 1), (9, 2), (300, 70000)):
        board.mark(fd, served)
    board.mark(9, None)
    board.mark(5, 3)  # served once more since
    board.mark(1 << 40, 1)  # past the board: never passed on
    assert board.movable() == [(5, 3), (300, 70000)]


@pytest.fixture
def connections() -> Iterator[list[tuple[socket.socket, socket.socket]]]:
    """Three TCP connections over loopback: (client end, server end)."""
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    for _ in range(3):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        pairs.append((client, server))
    listener.close()
    yield pairs
    for client, server in pairs:
        client.close()
        server.close()


def test_a_keeper_passes_on_the_marked_connections_with_the_request_still_unread(
    connections: list[tuple[socket.socket, socket.socket]],
) -> None:
    """Marked: passed with its addresses and a keep-alive deadline, nothing read of it; the
    adopter reads the request the client sent. Unmarked (the one being served): not passed."""
    board = Board()
    send_end, receive_end = handover.pair()
    (waiting_client, waiting), (idle_client, idle), (_, serving) = connections
    board.mark(waiting.fileno(), 4)
    board.mark(idle.fileno(), 1)
    board.mark(serving.fileno(), None)
    waiting_client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    before = time.monotonic()
    assert pass_on(board, send_end, keep_alive_timeout=5.0) == 2
    adopted = {sock.getpeername(): (parcel, sock) for parcel, sock in handover.receive(receive_end)}
    assert set(adopted) == {waiting_client.getsockname(), idle_client.getsockname()}
    for client in (waiting_client, idle_client):
        parcel, sock = adopted[client.getsockname()]
        assert parcel.peer == client.getsockname()
        assert (parcel.server_addr, parcel.port) == client.getpeername()
        assert parcel.state == KEEPALIVE and parcel.buffered == b""
        assert before + 5.0 <= parcel.deadline[0] <= time.monotonic() + 5.0
    assert [adopted[client.getsockname()][0].served for client in (waiting_client, idle_client)] == [4, 1]
    _, sock = adopted[waiting_client.getsockname()]
    sock.setblocking(True)
    assert sock.recv(100) == b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    for _, sock in adopted.values():
        sock.close()
    send_end.close()
    receive_end.close()
