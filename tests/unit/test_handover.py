"""prefork_wasm.handover: held connections travel between workers with what is known of them."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from prefork_wasm import handover
from prefork_wasm.handover import PER_MESSAGE, Parcel, batches
from prefork_wasm.held import KEEPALIVE, READING, WAITING


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0), backlog=512) as sock:
        yield sock


def connection(listener: socket.socket) -> tuple[socket.socket, socket.socket]:
    """(client end, server end) of a loopback TCP connection."""
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    return client, server


def parcel(index: int, buffered: bytes = b"", state: int = KEEPALIVE) -> Parcel:
    return Parcel(("127.0.0.1", 40000 + index), 8080, "", index, state, buffered, (1e6 + index,))


def test_connections_arrive_with_their_descriptions_and_still_work(listener: socket.socket) -> None:
    send_end, receive_end = handover.pair()
    pairs = [connection(listener) for _ in range(3)]
    parcels = [
        parcel(0),
        parcel(1, b"GET / HTTP/1.1\r\nHost: \xe9", READING),  # a head not complete yet, a high byte in it
        Parcel(("::1", 5), 80, "10.0.0.1", 7, WAITING, b"GET / HTTP/1.1\r\n\r\n", (1.0, float("inf"), 3.0, 500)),
    ]
    assert handover.send(send_end, parcels, [s.fileno() for _, s in pairs], time.monotonic() + 1) == 3
    for _, server in pairs:
        server.close()  # the sender's copies: the connections live on in the message
    arrived = handover.receive(receive_end)
    assert [p for p, _ in arrived] == parcels
    for (client, _), (_, sock) in zip(pairs, arrived, strict=True):
        assert not sock.getblocking()
        client.sendall(b"ping")
        time.sleep(0.01)
        assert sock.recv(10) == b"ping"
        sock.close()
        client.close()
    assert handover.receive(receive_end) == []  # nothing more: another worker's turn, or none


def test_messages_wait_in_the_socket_while_no_worker_reads(listener: socket.socket) -> None:
    send_end, receive_end = handover.pair()
    clients = []
    count = 20 * PER_MESSAGE  # a few workers' worth, sent before anyone reads
    for index in range(count):
        client, server = connection(listener)
        clients.append(client)
        assert handover.send(send_end, [parcel(index)], [server.fileno()], time.monotonic() + 1) == 1
        server.close()
    received = []
    while arrived := handover.receive(receive_end):
        received += arrived
    assert [p.served for p, _ in received] == list(range(count))
    for client, (_, sock) in zip(clients, received, strict=True):
        sock.close()
        client.close()


def test_connections_in_the_socket_outlive_a_sender_killed_by_sigkill(listener: socket.socket) -> None:
    """What relief.py rests on: a worker killed after sending takes none of its parcels with it
    (the kernel holds their descriptors in the message); the next reader gets working sockets."""
    send_end, receive_end = handover.pair()
    client, server = connection(listener)
    pid = os.fork()
    if pid == 0:  # the worker: send, then die at once, as a SIGKILL takes it
        try:
            sent = handover.send(send_end, [parcel(0)], [server.fileno()], time.monotonic() + 1)
            os.kill(os.getpid(), signal.SIGKILL if sent == 1 else signal.SIGTERM)
        finally:
            os._exit(1)  # never back into the test runner
    server.close()  # the test's copy: only the message holds the connection now
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    ((arrived, sock),) = handover.receive(receive_end)
    assert arrived == parcel(0)
    client.sendall(b"ping")
    sock.setblocking(True)
    assert sock.recv(16) == b"ping"
    sock.sendall(b"pong")
    assert client.recv(16) == b"pong"
    sock.close()
    client.close()


def test_a_full_socket_and_no_reader_give_up_at_the_deadline(listener: socket.socket) -> None:
    send_end, _ = handover.pair()
    send_end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # the kernel's smallest, about
    client, server = connection(listener)
    big = [parcel(i) for i in range(2000)]
    start = time.monotonic()
    sent = handover.send(send_end, big, [server.fileno()] * len(big), start + 0.2)
    assert 0 < sent < len(big) and sent % PER_MESSAGE == 0
    assert 0.2 <= time.monotonic() - start < 2
    client.close()
    server.close()


def test_messages_hold_at_most_per_message_connections_and_bounded_descriptions() -> None:
    spans = batches([parcel(i) for i in range(PER_MESSAGE * 2 + 1)])
    assert [len(s) for s in spans] == [PER_MESSAGE, PER_MESSAGE, 1]
    heads = [parcel(i, b"x" * 40000, READING) for i in range(5)]
    assert [len(s) for s in batches(heads)] == [1, 1, 1, 1, 1]
    assert batches([]) == []
