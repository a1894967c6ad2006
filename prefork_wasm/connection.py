"""One client connection: HTTP/1.1 over a blocking socket, with h11 doing all the protocol work.

h11 decides framing, keep-alive, pipelining and what is malformed; this module only moves
bytes between the socket and h11, applies the server's time and size limits, and hands each
complete request to a `Handler`. It knows nothing of Wasm.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from email.utils import formatdate
from typing import Protocol

import h11

from .messages import SERVER_SOFTWARE, Request, Response, error_response, reason_phrase

RECV_SIZE = 65536
# How long a closing connection keeps reading what the client still sends, so that the
# client reads our response instead of a reset (Apache's lingering close).
LINGER_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float  # Timeout: every read and write
    keep_alive: bool
    keep_alive_timeout: float
    max_keep_alive_requests: int  # 0 = unlimited
    max_head_size: int  # request line plus header fields, in bytes


class Handler(Protocol):
    """What the connection needs from the server behind it."""

    def new_request_id(self) -> str: ...

    def body_limit(self, request: Request) -> int:
        """LimitRequestBody for this request (0 = unlimited), known once the head is read."""
        ...

    def respond(self, request: Request) -> Response: ...

    def finished(self, request: Request, response: Response, sent: int) -> None:
        """After the response is written: access log, scoreboard."""
        ...

    def draining(self) -> bool:
        """True once the worker wants to stop: the current response closes the connection."""
        ...


class StateHook(Protocol):
    """Told each phase: 'R' reading, 'W' writing (with the request), 'K' keep-alive wait."""

    def __call__(self, letter: str, request: Request | None = None) -> None: ...


class _Date:
    """The Date header, formatted once a second instead of once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


http_date = _Date()
_SERVER = SERVER_SOFTWARE.encode()


class _ClientGone(Exception):
    pass


class _TimedOut(Exception):
    pass


def serve(
    sock: socket.socket,
    peer: tuple[str, int],
    server_port: int,
    handler: Handler,
    limits: Limits,
    state: StateHook,
) -> int:
    """Serve requests on `sock` until the connection ends; returns how many were answered."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head_size)
    served = 0
    try:
        while True:
            idle = conn.their_state is h11.IDLE and not conn.trailing_data[0]
            state("K" if idle and served else "R")
            sock.settimeout(limits.keep_alive_timeout if idle and served else limits.timeout)
            try:
                event = _next_event(conn, sock)
            except _TimedOut:
                if conn.their_state is not h11.IDLE or conn.trailing_data[0]:
                    _send_error(conn, sock, 408)
                return served
            except h11.RemoteProtocolError as e:
                _send_error(conn, sock, e.error_status_hint, str(e))
                return served
            if isinstance(event, h11.ConnectionClosed):
                return served
            assert isinstance(event, h11.Request)
            request = Request(
                method=event.method.decode("ascii"),
                target=event.target.decode("latin-1"),
                http_version=event.http_version.decode("ascii"),
                headers=list(event.headers),
                remote_addr=peer[0],
                remote_port=peer[1],
                server_port=server_port,
                request_id=handler.new_request_id(),
                start=time.time(),
            )
            try:
                body = _read_body(conn, sock, handler.body_limit(request))
            except _TimedOut:
                _send_error(conn, sock, 408)
                return served
            except h11.RemoteProtocolError as e:
                _send_error(conn, sock, e.error_status_hint, str(e))
                return served
            if body is None:
                response = error_response(413, "The request body is larger than LimitRequestBody.")
                sent = _send_response(conn, sock, request, response, close=True)
                handler.finished(request, response, sent)
                return served + 1
            request.body = body

            state("W", request)
            response = handler.respond(request)
            served += 1
            close = (
                not limits.keep_alive
                or handler.draining()
                or (limits.max_keep_alive_requests and served >= limits.max_keep_alive_requests)
            )
            sent = _send_response(conn, sock, request, response, close=bool(close))
            handler.finished(request, response, sent)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return served
            conn.start_next_cycle()
    except (_ClientGone, _TimedOut, h11.LocalProtocolError):
        return served
    finally:
        _lingering_close(sock)


def _next_event(conn: h11.Connection, sock: socket.socket) -> h11.Request | h11.ConnectionClosed:
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(_recv(sock))
            continue
        if isinstance(event, (h11.Request, h11.ConnectionClosed)):
            return event
        raise h11.RemoteProtocolError(f"unexpected {type(event).__name__}", error_status_hint=400)


def _read_body(conn: h11.Connection, sock: socket.socket, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds `limit` (nothing more is read)."""
    if conn.they_are_waiting_for_100_continue:
        sock.sendall(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(_recv(sock))
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if limit and size > limit:
                return None
            chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        elif isinstance(event, h11.ConnectionClosed):
            raise _ClientGone()


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(RECV_SIZE)
    except socket.timeout:
        raise _TimedOut() from None
    except (ConnectionResetError, BrokenPipeError):
        raise _ClientGone() from None


def _send_response(
    conn: h11.Connection, sock: socket.socket, request: Request, response: Response, close: bool
) -> int:
    """Write head and body in as few sends as possible; returns the body bytes sent."""
    body = response.body
    headers = [(b"date", http_date()), (b"server", _SERVER), *response.headers]
    headers.append((b"content-length", str(len(body)).encode()))
    if close:
        headers.append((b"connection", b"close"))
    reason = response.reason or reason_phrase(response.status)
    head = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
    assert head is not None
    if request.method == "HEAD" or not body:
        conn.send(h11.EndOfMessage())
        _sendall(sock, head)
        return 0
    # Passthrough: h11 checks the framing but does not copy the body into a new buffer.
    conn.send_with_data_passthrough(h11.Data(data=body))
    conn.send(h11.EndOfMessage())
    if len(body) < RECV_SIZE:
        _sendall(sock, head + body)  # one segment for the common small response
    else:
        _sendall(sock, head)
        _sendall(sock, body)
    return len(body)


def _send_error(conn: h11.Connection, sock: socket.socket, status: int, detail: str = "") -> None:
    """Answer a request we could not read, if the protocol state still allows an answer."""
    if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    response = error_response(status, detail)
    headers = [
        (b"date", http_date()),
        (b"server", _SERVER),
        *response.headers,
        (b"content-length", str(len(response.body)).encode()),
        (b"connection", b"close"),
    ]
    try:
        data = conn.send(h11.Response(status_code=status, headers=headers, reason=reason_phrase(status)))
        _sendall(sock, (data or b"") + bytes(response.body))
    except (h11.LocalProtocolError, _ClientGone, _TimedOut):
        pass


def _sendall(sock: socket.socket, data: bytes | memoryview) -> None:
    try:
        sock.sendall(data)
    except socket.timeout:
        raise _TimedOut() from None
    except (ConnectionResetError, BrokenPipeError):
        raise _ClientGone() from None


def _lingering_close(sock: socket.socket) -> None:
    """Half-close, then read what the client still sends, so it sees our response, not a reset."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + LINGER_SECONDS
        sock.settimeout(0.5)
        while time.monotonic() < deadline and sock.recv(RECV_SIZE):
            pass
    except OSError:
        pass
    finally:
        sock.close()
