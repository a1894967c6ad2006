"""prefork_wasm.connection served by a worker's event loop in this process (serving.py), with a
recording site: the socket layer's own decisions (keep-alive, pipelining, 100 Continue, what a
refusal logs, a kept-alive connection that does not keep its worker). The request checks are
tests/unit/test_http1.py; the event loop's deadlines and hand-over are
tests/unit/test_eventloop.py; a real server is tests/integration/test_hostile_http.py."""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable

import h11

from harness import HOST
from prefork_wasm.http1 import Limits
from prefork_wasm.messages import Request, Response
from serving import Serving

LIMITS = Limits(
    timeout=2, keep_alive=True, keep_alive_timeout=1, max_keep_alive_requests=0,
    request_line=8190, field_size=8190, fields=100,
)


@dataclasses.dataclass(frozen=True)
class Decision:
    body_limit: int = 4


class Recorder:
    """A site (and the worker it runs in) that answers 200 with the request's path and records
    what the connection asks."""

    def __init__(self, draining: bool = False) -> None:
        self.logged: list[tuple[str | None, int, int]] = []  # (path, status, body bytes sent)
        self.routed = 0  # requests whose head was read
        self._draining = draining
        self._ids = 0

    def new_request_id(self) -> str:
        self._ids += 1
        return str(self._ids)

    def route(self, request: Request) -> Decision:
        self.routed += 1
        return Decision()

    def respond(self, request: Request, decision: Decision, give_up: Callable[[Response], None]) -> Response:
        return Response(200, body=request.path.encode() + request.body)

    def finished(self, request: Request, decision: Decision, response: Response, sent: int) -> None:
        self.logged.append((request.path, response.status, sent))

    def draining(self) -> bool:
        return self._draining


def exchange(data: bytes, handler: Recorder, limits: Limits = LIMITS) -> tuple[int, list[h11.Response]]:
    """Serve `data` sent at once on one connection, then the client's FIN (which spares the
    lingering close a wait); returns how many requests were answered (their heads read) and the
    responses the client read."""
    with Serving(handler, handler, limits) as server, socket.create_connection((HOST, server.port)) as client:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        received = until_closed(client)
    return handler.routed, responses(received)


def until_closed(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(65536):
        received += chunk
    return received


def answer(client: socket.socket) -> h11.Response:
    """The next response on a kept-alive connection (a small one: it comes in one piece)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += client.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += client.recv(65536)
    (found,) = responses(data)
    return found


def responses(data: bytes) -> list[h11.Response]:
    """The responses in `data`, read as a client reads them (1xx included)."""
    found: list[h11.Response] = []
    while data:
        client = h11.Connection(h11.CLIENT)
        client.send(h11.Request(method="GET", target="/", headers=[("Host", "a")]))
        client.send(h11.EndOfMessage())
        client.receive_data(data)
        event = client.next_event()
        assert isinstance(event, (h11.Response, h11.InformationalResponse))
        found.append(event)  # type: ignore[arg-type]
        if isinstance(event, h11.InformationalResponse):
            data = client.trailing_data[0]
            continue
        while not isinstance(client.next_event(), h11.EndOfMessage):
            pass
        data = client.trailing_data[0]
    return found


def get(path: str, *fields: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: a\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"


def closes(response: h11.Response) -> bool:
    return (b"connection", b"close") in list(response.headers)  # (names lowercased)


def test_pipelined_requests_are_answered_in_order_until_the_client_closes() -> None:
    handler = Recorder()
    served, answers = exchange(get("/a") + b"\r\n" + get("/b") + get("/c"), handler)
    assert served == 3
    assert [r.status_code for r in answers] == [200, 200, 200]
    assert not any(closes(r) for r in answers)
    assert handler.logged == [("/a", 200, 2), ("/b", 200, 2), ("/c", 200, 2)]


def test_the_request_that_says_close_ends_the_connection() -> None:
    handler = Recorder()
    served, answers = exchange(get("/a", b"Connection: close") + get("/b"), handler)
    assert served == 1
    assert [closes(r) for r in answers] == [True]


def test_max_keep_alive_requests_and_draining_close_with_the_response() -> None:
    limited = dataclasses.replace(LIMITS, max_keep_alive_requests=2)
    served, answers = exchange(get("/a") + get("/b") + get("/c"), Recorder(), limited)
    assert served == 2
    assert [closes(r) for r in answers] == [False, True]
    served, answers = exchange(get("/a") + get("/b"), Recorder(draining=True))
    assert served == 1
    assert [closes(r) for r in answers] == [True]


def test_a_kept_alive_connection_does_not_keep_its_worker_from_another_client() -> None:
    """One worker: while a first client keeps its connection between requests, a second is
    served at once, and the first goes on on the connection it kept."""
    handler = Recorder()
    with Serving(handler, handler, LIMITS) as server:
        with socket.create_connection((HOST, server.port)) as first:
            first.sendall(get("/a"))
            assert not closes(answer(first))
            with socket.create_connection((HOST, server.port)) as second:
                start = time.monotonic()
                second.sendall(get("/b"))
                assert not closes(answer(second))
                assert time.monotonic() - start < 0.5  # not after KeepAliveTimeout
                first.sendall(get("/c"))
                assert not closes(answer(first))
    assert [path for path, _, _ in handler.logged] == ["/a", "/b", "/c"]


def test_100_continue_comes_before_the_final_response() -> None:
    head = b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    handler = Recorder()
    with Serving(handler, handler, LIMITS) as server, socket.create_connection((HOST, server.port)) as client:
        client.sendall(head + b"hi")  # not waiting for the 100: the server sends it all the same
        client.shutdown(socket.SHUT_WR)
        received = until_closed(client)
    assert handler.routed == 1
    assert [r.status_code for r in responses(received)] == [100, 200]
    assert handler.logged == [("/p", 200, 4)]


def test_a_refused_request_is_answered_then_logged_once_its_head_was_read() -> None:
    handler = Recorder()
    served, answers = exchange(b"POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", handler)
    assert served == 1
    assert [(r.status_code, closes(r)) for r in answers] == [(413, True)]
    assert [(path, status) for path, status, _ in handler.logged] == [("/big", 413)]
    handler = Recorder()
    served, answers = exchange(b"GET /x\nHost: a\r\n\r\n", handler)  # no head to log
    assert served == 0
    assert [r.status_code for r in answers] == [400]
    assert handler.logged == []
