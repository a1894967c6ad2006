"""prefork_wasm.eventloop in this process (serving.py): held connections under their deadlines,
the MaxHeldConnections bound, leaving by hand-over or by draining, MaxConnectionsPerChild, and
a worker in a slow request handing its other connections to an idle worker (relief.py). The
arithmetic is test_held.py's; the whole server under a flood is
tests/integration/test_held_connections.py."""

from __future__ import annotations

import dataclasses
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from harness import HOST, wait_for
from prefork_wasm import eventloop, relief
from prefork_wasm.handover import PER_MESSAGE
from prefork_wasm.http1 import Limits
from prefork_wasm.messages import Request, Response
from prefork_wasm.reqtimeout import ReadTimeout
from prefork_wasm.scoreboard import HAND_OVER
from serving import Decision, PathSite, Serving

LIMITS = Limits(
    timeout=5, keep_alive=True, keep_alive_timeout=0.5, max_keep_alive_requests=0,
    request_line=8190, field_size=8190, fields=100, header_read=ReadTimeout(1, 3, 10),
)
REQUEST = b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"


class Site(PathSite):
    """Answers 200 with the path (after `slow` seconds for /slow) and records which requests
    it answered."""

    def __init__(self, slow: float = 0.0) -> None:
        super().__init__()
        self.slow = slow
        self.slow_begun = threading.Event()
        self.paths: list[str] = []
        self.lock = threading.Lock()

    def respond(self, request: Request, decision: Decision, give_up: Callable[[Response], None]) -> Response:
        if request.path == "/slow":
            self.slow_begun.set()
            time.sleep(self.slow)
        return super().respond(request, decision, give_up)

    def finished(self, request: Request, decision: Decision, response: Response, sent: int) -> None:
        with self.lock:
            self.paths.append(request.path)


def connect(port: int) -> socket.socket:
    return socket.create_connection((HOST, port), timeout=10)


def answer(client: socket.socket) -> bytes:
    """The next response (small: head and body end together)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith((b"/hello", b"/slow", b"/more")):
        chunk = client.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_after(client: socket.socket) -> tuple[bytes, float]:
    """What the server sent until it closed, and how long that took."""
    start = time.monotonic()
    data = b""
    while chunk := client.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def test_each_held_connection_ends_by_its_own_deadline() -> None:
    with Serving(Site(), Site(), LIMITS) as server:
        kept, silent, partial = connect(server.port), connect(server.port), connect(server.port)
        kept.sendall(REQUEST)
        assert answer(kept).startswith(b"HTTP/1.1 200 ")
        partial.sendall(REQUEST[:10])
        assert closed_after(kept)[0] == b""  # KeepAliveTimeout: a clean close between requests
        data, waited = closed_after(silent)  # RequestReadTimeout header=1: closed without a word
        assert data == b"" and waited < 2
        data, waited = closed_after(partial)
        assert data.startswith(b"HTTP/1.1 408 ") and b"RequestReadTimeout" in data
        for client in (kept, silent, partial):
            client.close()


def test_a_busy_worker_takes_what_waits_in_the_backlog_in_one_turn_not_one_connection_a_turn() -> None:
    """A worker whose kept-alive connections keep it busy reads their events before its
    listener's: with their requests ready it is not idle, so it takes the connections waiting
    in the backlog together, instead of one a turn while the busy ones go round (which starved
    new connections for seconds under a few hundred busy ones)."""
    busy_count, new_count = 8, 16
    site = Site(slow=0.005)  # a turn of the busy ones takes 40 ms: a wave's connections all wait for the next
    with Serving(site, site, LIMITS) as server:
        busy = [connect(server.port) for _ in range(busy_count)]
        stop, mid_turn = threading.Event(), threading.Event()

        def keep_busy() -> None:  # a closed loop: the busy connections ask again once all are answered
            while not stop.is_set():
                for client in busy:
                    client.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
                for i, client in enumerate(busy):
                    answer(client)
                    if i == 0:
                        mid_turn.set()

        looping = threading.Thread(target=keep_busy, daemon=True)
        looping.start()
        wait_for(lambda: site.paths.count("/slow") >= 2 * busy_count, what="the busy connections going round")
        for _ in range(5):  # waves: the kernel orders one turn's events its own way
            # The wave comes in the middle of a turn: the listener is readable before the busy
            # connections' next requests come, and the worker is not idle.
            mid_turn.clear()
            assert mid_turn.wait(10)
            with site.lock:
                before = len(site.paths)
            new = [connect(server.port) for _ in range(new_count)]
            for client in new:
                client.sendall(b"GET /more HTTP/1.1\r\nHost: x\r\n\r\n")
            for client in new:
                assert answer(client).startswith(b"HTTP/1.1 200 ")
                client.close()
            with site.lock:
                paths = site.paths[before:]
            first, last = paths.index("/more"), len(paths) - 1 - paths[::-1].index("/more")
            # Taken together, a wave is served within a turn or two of the busy ones (three on a
            # slow machine); taken one a turn, a turn of them comes between each two of its own.
            assert paths[first:last].count("/slow") <= 3 * busy_count, paths[first:last + 1]
        stop.set()
        looping.join(10)
        for client in busy:
            client.close()


def test_an_idle_worker_waits_for_a_new_connections_request_once_a_turn_not_once_a_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An idle worker gives a connection it accepts a moment (ACCEPT_WAIT) for its request, to
    serve it at once. A burst of connections that send nothing (a flood) must not cost that
    moment each: 200 of them held one worker, and the client behind them, for 0.4 s (with the
    connections gathered on two workers, held.gatherers, the likely cause of a normal client's
    2.2 s wait in the flood test). At most one wait per turn of the accept loop."""
    waits, turns = [0], [0]
    wait_within, accept = eventloop._readable_within, eventloop.EventLoop._accept

    def counted_wait(sock: socket.socket, seconds: float) -> bool:
        waits[0] += 1
        return wait_within(sock, seconds)

    def counted_accept(self: eventloop.EventLoop, *args: Any) -> None:
        turns[0] += 1
        accept(self, *args)

    monkeypatch.setattr(eventloop, "_readable_within", counted_wait)
    monkeypatch.setattr(eventloop.EventLoop, "_accept", counted_accept)
    with Serving(Site(), Site(), LIMITS) as server:
        silent = [connect(server.port) for _ in range(200)]
        with connect(server.port) as client:
            client.sendall(REQUEST)
            assert answer(client).startswith(b"HTTP/1.1 200 ")
        assert 0 < waits[0] <= turns[0], (waits, turns)
        for sock in silent:
            sock.close()


def test_a_trickling_head_earns_time_by_min_rate_up_to_its_maximum_then_a_408_and_a_clean_close() -> None:
    """The 408 is followed by a lingering close: what the client still sends is drained, not
    answered with a reset, which could destroy the 408 before the client reads it."""
    with Serving(Site(), Site(), LIMITS) as server, connect(server.port) as client:
        start = time.monotonic()
        head = b"GET /hello HTTP/1.1\r\nX-Slow: " + b"a" * 10_000
        # 10 bytes every 0.25 s, until the answer: 10 bytes earn a second, 3 s at most (header=1-3)
        while time.monotonic() - start < 4.5 and not select.select([client], [], [], 0.25)[0]:
            client.sendall(head[:10])
            head = head[10:]
        answered = time.monotonic() - start
        client.sendall(head[:10])  # still sending after the answer
        data, _ = closed_after(client)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 2.9 <= answered < 4.5


def test_at_the_bound_the_oldest_idle_connection_makes_room_and_then_new_ones_wait(tmp_path: Path) -> None:
    log = tmp_path / "error_log"
    with Serving(Site(), Site(), LIMITS, bound=2, error_log=str(log)) as server:
        oldest, newer = connect(server.port), connect(server.port)
        for client in (oldest, newer):
            client.sendall(REQUEST)
            assert answer(client).startswith(b"HTTP/1.1 200 ")
        reading = connect(server.port)  # two idle ones held: the oldest makes room
        assert closed_after(oldest)[0] == b""
        reading.sendall(REQUEST[:5])
        third = connect(server.port)  # room again from `newer`; then one idle, one reading
        assert closed_after(newer)[0] == b""
        third.sendall(REQUEST[:5])
        waiting = connect(server.port)  # nothing idle to close: it waits in the listen backlog
        waiting.sendall(REQUEST)
        waiting.settimeout(0.3)
        with pytest.raises(TimeoutError):
            waiting.recv(100)
        waiting.settimeout(10)
        reading.sendall(REQUEST[5:])  # ... until a held one is served and closed
        assert answer(reading).startswith(b"HTTP/1.1 200 ")
        reading.close()
        assert answer(waiting).startswith(b"HTTP/1.1 200 ")
        for client in (oldest, newer, third, waiting):
            client.close()
    lines = [line for line in log.read_text().splitlines() if "MaxHeldConnections" in line]
    assert len(lines) == 1 and "server reached MaxHeldConnections setting (2)" in lines[0]


def test_a_leaving_worker_hands_its_connections_to_the_next_as_they_were() -> None:
    first, second = Site(), Site()
    with Serving(first, first, LIMITS) as leaving:
        with Serving(second, second, LIMITS, hand_over=leaving.hand_over):
            kept, partial = connect(leaving.port), connect(leaving.port)
            kept.sendall(REQUEST)
            assert answer(kept).startswith(b"HTTP/1.1 200 ")
            partial.sendall(REQUEST[:12])
            wait_for(lambda: list(leaving.slot.held) == [1, 1, 0, 0, 0], what="one reading, one kept alive")
            leaving.leave(HAND_OVER)
            kept.sendall(REQUEST)  # on the connection the first worker answered
            assert answer(kept).startswith(b"HTTP/1.1 200 ")
            partial.sendall(REQUEST[12:])  # the rest of a head the first worker began to read
            assert answer(partial).startswith(b"HTTP/1.1 200 ")
            kept.close()
            partial.close()
    assert first.paths == ["/hello"]
    assert second.paths == ["/hello", "/hello"]


def test_a_draining_worker_serves_each_connections_next_request_with_close_then_leaves() -> None:
    site = Site()
    with Serving(site, site, LIMITS) as server:
        site.drains = lambda: server.loop.draining
        kept, reading, idle = connect(server.port), connect(server.port), connect(server.port)
        for client in (kept, idle):
            client.sendall(REQUEST)
            assert answer(client).startswith(b"HTTP/1.1 200 ")
        reading.sendall(REQUEST[:12])
        wait_for(lambda: list(server.slot.held) == [1, 2, 0, 0, 0], what="one reading, two kept alive")
        leaving = threading.Thread(target=server.leave)
        leaving.start()
        wait_for(lambda: server.loop.draining, what="the loop draining")
        kept.sendall(REQUEST)  # never reset: answered, and told the connection ends
        reading.sendall(REQUEST[12:])
        for client in (kept, reading):
            data, _ = closed_after(client)
            assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in data
            client.close()  # ends the lingering close at once
        data, waited = closed_after(idle)  # closed cleanly at its KeepAliveTimeout
        assert data == b"" and waited < 0.6
        idle.close()
        leaving.join(10)
        assert not leaving.is_alive()


def test_a_worker_that_stops_gracefully_serves_what_waits_in_the_hand_over_socket_before_it_exits() -> None:
    """A connection a relieved worker handed off while no worker was idle, still in the socket
    when a graceful stop begins: no worker follows to adopt it, so a stopping worker does."""
    from prefork_wasm import handover
    from prefork_wasm.connection import Held

    site = Site()
    with Serving(site, site, LIMITS) as server:
        site.drains = lambda: server.loop.draining
        kept = connect(server.port)  # keeps the stopping worker busy until its KeepAliveTimeout
        kept.sendall(REQUEST)
        assert answer(kept).startswith(b"HTTP/1.1 200 ")
        leaving = threading.Thread(target=server.leave)
        leaving.start()
        wait_for(lambda: server.loop.draining, what="the loop draining")
        with socket.create_server((HOST, 0)) as elsewhere:
            stranded = connect(elsewhere.getsockname()[1])
            accepted, peer = elsewhere.accept()
        held = Held(accepted, peer[:2], server.port, "", LIMITS)
        held.start(time.monotonic())
        sent = handover.send(server.hand_over[0], [held.parcel()], [held.fd], time.monotonic() + 1)
        held.end()
        assert sent == 1
        stranded.sendall(REQUEST)
        data, _ = closed_after(stranded)
        assert data.startswith(b"HTTP/1.1 200 ") and b"Connection: close\r\n" in data
        leaving.join(10)
        assert not leaving.is_alive()
        for client in (kept, stranded):
            client.close()
    assert site.paths == ["/hello", "/hello"]


def test_max_connections_per_child_hands_over_and_leaves() -> None:
    site, replacement = Site(), Site()
    with Serving(site, site, LIMITS, max_connections=2) as server:
        with Serving(replacement, replacement, LIMITS, hand_over=server.hand_over):
            a = connect(server.port)
            a.sendall(REQUEST)
            assert answer(a).startswith(b"HTTP/1.1 200 ")
            b = connect(server.port)
            b.sendall(REQUEST)
            assert answer(b).startswith(b"HTTP/1.1 200 ")  # by either: it may have arrived with the accept
            server.thread.join(5)
            assert not server.thread.is_alive() and server.loop.recycled and server.loop.accepted == 2
            a.sendall(REQUEST)  # the connections go on with the replacement
            assert answer(a).startswith(b"HTTP/1.1 200 ")
            a.close()
            b.close()
    assert len(site.paths) + len(replacement.paths) == 3 and replacement.paths


def test_a_worker_in_a_slow_request_hands_off_the_requests_that_come_and_keeps_idle_connections(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """relief.py: a kept-alive connection and one with half a head, held by a worker that runs a
    slow request, have their next requests answered by another worker meanwhile; an idle one
    stays (until relief.IDLE_AFTER, here never)."""
    monkeypatch.setattr(relief, "IDLE_AFTER", float("inf"))
    busy, idle = Site(slow=3.0), Site()
    with Serving(busy, busy, LIMITS) as server:
        with Serving(idle, idle, LIMITS, hand_over=server.hand_over):
            slow, kept, reading, quiet = (connect(server.port) for _ in range(4))
            for client in (kept, quiet):
                client.sendall(REQUEST)
                assert answer(client).startswith(b"HTTP/1.1 200 ")
            reading.sendall(REQUEST[:12])
            wait_for(lambda: list(server.slot.held) == [2, 2, 0, 0, 0], what="two reading, two kept alive")
            start = time.monotonic()
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(busy.slow_begun.is_set, what="the slow request running")
            kept.sendall(REQUEST)
            reading.sendall(REQUEST[12:])
            assert answer(kept).startswith(b"HTTP/1.1 200 ")
            assert answer(reading).startswith(b"HTTP/1.1 200 ")
            assert time.monotonic() - start < busy.slow  # answered while the slow one still ran
            wait_for(lambda: list(server.slot.held) == [0, 1, 0, 0, 0], what="the idle one still held")
            quiet.sendall(REQUEST)  # ... and is handed off once its request comes
            assert answer(quiet).startswith(b"HTTP/1.1 200 ")
            assert answer(slow).startswith(b"HTTP/1.1 200 ")
            for client in (slow, kept, reading, quiet):
                client.close()
    assert busy.paths == ["/hello", "/hello", "/slow"]
    assert idle.paths == ["/hello", "/hello", "/hello"]


def test_a_slow_request_has_every_connection_of_its_worker_handed_off_a_message_at_a_time() -> None:
    """More idle connections than one message holds: each look of the relief thread sends one
    message of them, until the busy worker holds none; every one is then answered by the other."""
    limits = dataclasses.replace(LIMITS, keep_alive_timeout=30)
    busy, idle = Site(slow=3.0), Site()
    with Serving(busy, busy, limits) as server:
        with Serving(idle, idle, limits, hand_over=server.hand_over):
            clients = [connect(server.port) for _ in range(3 * PER_MESSAGE + 1)]
            for client in clients:
                client.sendall(REQUEST)
                assert answer(client).startswith(b"HTTP/1.1 200 ")
            slow = connect(server.port)
            slow.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            wait_for(busy.slow_begun.is_set, what="the slow request running")
            wait_for(lambda: list(server.slot.held) == [0, 0, 0, 0, 0], what="the busy worker holding no other")
            for client in clients:
                client.sendall(REQUEST)
            for client in clients:
                assert answer(client).startswith(b"HTTP/1.1 200 ")
            assert "/slow" not in busy.paths  # all answered while the slow one ran
            assert answer(slow).startswith(b"HTTP/1.1 200 ")
            for client in (slow, *clients):
                client.close()
    assert len(idle.paths) == len(clients)


def test_a_connection_in_any_state_is_adopted_as_it_was() -> None:
    """Held.parcel then Held.adopted, for each state a leaving or relieved worker hands over."""
    from prefork_wasm.connection import Held

    def held(*feeds: tuple[bytes, bool], served: int = 0) -> Held:
        server, client = socket.socketpair()
        client.close()
        one = Held(server, ("192.0.2.1", 5), 8080, "", LIMITS, served)
        one.start(100.0)
        for data, eof in feeds:
            one.feed(data, eof, 100.5)
        return one

    kept = held()
    kept.head, kept.until = None, 105.0  # idle after a kept-alive response
    cases = [held(), held((REQUEST[:9], False)), held((REQUEST, False), served=3), kept]
    for one in cases:
        copy = Held.adopted(one.parcel(), socket.socket(fileno=socket.dup(one.fd)), LIMITS, 102.0)
        assert (copy.complete, copy.deadline, copy.served, bytes(copy.parser.scanner.raw)) == (
            one.complete, one.deadline, one.served, bytes(one.parser.scanner.raw)
        )
        copy.end()
        one.end()
    closed = held()
    closed.head = None
    assert closed.feed(b"", True, 101.0)  # the client closed between requests: complete, no head
    copy = Held.adopted(closed.parcel(), socket.socket(fileno=socket.dup(closed.fd)), LIMITS, 102.0)
    assert copy.receive(102.0) and copy.parser.closed  # the close is the socket's: read again there
    copy.end()
    closed.end()


def test_a_listeners_backlog_is_read_from_the_kernel_and_a_non_tcp_socket_says_none() -> None:
    with socket.create_server((HOST, 0), backlog=16) as listener:
        waiting = [socket.create_connection(listener.getsockname()) for _ in range(5)]
        assert eventloop._backlog(listener) == 5
        listener.accept()[0].close()
        assert eventloop._backlog(listener) == 4
        for client in waiting:
            client.close()
    left, right = socket.socketpair()
    with left, right:
        assert eventloop._backlog(left) == 0
