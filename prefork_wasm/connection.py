"""One client connection: HTTP/1.1 over a blocking socket, with h11 parsing the requests.

This module moves bytes between the socket and h11 and the checks of http1.py, applies the
server's time limits (Apache's Timeout, KeepAliveTimeout, RequestReadTimeout) and
LimitRequestBody, hands each complete request to a `Handler`, and writes its response. It
knows nothing of Wasm. Read deadlines are `reqtimeout.Deadline`s: Timeout and
RequestReadTimeout.
"""

from __future__ import annotations

import math
import os
import select
import socket
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Protocol

import h11

from .http1 import (
    NO_BODY,
    ChunkedScanner,
    HeadScanner,
    Limits,
    Refused,
    ResponseHeadError,
    body_length,
    check_request_line,
    framed_head,
    max_head_size,
    response_head,
    transfer_coding_refusal,
)
from .messages import FileBody, Request, Response, error_response
from .paths import PathRefused, request_path
from .reqtimeout import Deadline

RECV_SIZE = 65536
# A wait shorter than this (for the next keep-alive request, or by an idle worker for the next
# connection) is not reported: under load the state would flip for a few microseconds per
# request, and each process title change is a syscall.
REPORT_WAIT = 0.01
# After the response, a closing connection reads and drops what the client still sends, so
# that the client reads our response instead of a reset (Apache's lingering close). Bounded in
# time and bytes, so a client still uploading gigabytes after a 413 can't hold the worker.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
# The most one sendfile call is asked for: a file body goes out in steps this size.
SENDFILE_CHUNK = 1 << 24


class Handler(Protocol):
    """What the connection needs from the server behind it."""

    def new_request_id(self) -> str: ...

    def body_limit(self, request: Request) -> int:
        """LimitRequestBody for this request (0 = unlimited), known once the head is read."""
        ...

    def in_flight(self, answer: Callable[[Response], None]) -> None:
        """Told before `respond`: how another thread answers this request and closes the
        connection, for a worker that must give the request up."""
        ...

    def respond(self, request: Request) -> Response:
        """The answer; a failure is a 5xx response, never an exception (the handler's fault
        boundary). Should one escape anyway, the connection answers 500 and goes on."""
        ...

    def finished(self, request: Request, response: Response, sent: int) -> None:
        """After the response is written: access log, scoreboard."""
        ...

    def draining(self) -> bool:
        """True once the worker wants to stop: the current response closes the connection."""
        ...

    def others_waiting(self) -> bool:
        """True when connections wait in the listen backlog for a free worker."""
        ...


class StateHook(Protocol):
    """Told each phase: 'R' reading, 'W' writing (with the request), 'K' keep-alive wait."""

    def __call__(self, letter: str, request: Request | None = None) -> None: ...


_SERVER_FAULT = "The server failed while handling the request."
_DISCARD = memoryview(bytearray(RECV_SIZE))  # lingering close reads into it (one thread per worker)


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
    server_addr: str = "",
) -> int:
    """Serve requests on `sock` until the connection ends; returns how many were answered.
    `server_addr` is the local IP the client connected to (for virtual hosts by address)."""
    sock.setblocking(False)  # each read and write waits in `_wait`, by its phase's deadline
    served = 0
    # After a read timeout there is no lingering: a trickling client would hold the worker on.
    linger: float | None = LINGER_SECONDS  # None: nothing to drain, close at once
    pending, closed = b"", False  # what the client sent after the last request, and whether it then closed
    try:
        while True:
            # A fresh h11 state per request (about 1 us): `_read_head` must keep empty lines
            # before a pipelined request from h11, which would hold them in its buffer.
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size(limits))
            request: Request | None = None
            try:
                head = _read_head(conn, sock, limits, state, pending, closed, keep_alive=served > 0)
                if head is None:
                    return served
                event, scanner = head
                headers = list(event.headers)
                request = Request(
                    method=event.method.decode("ascii"),
                    target=event.target.decode("latin-1"),
                    http_version=event.http_version.decode("ascii"),
                    headers=headers,
                    remote_addr=peer[0],
                    remote_port=peer[1],
                    server_port=server_port,
                    request_id=handler.new_request_id(),
                    start=time.time(),
                    server_addr=server_addr,
                )
                check_request_line(event, headers)
                try:
                    request.path = request_path(request.target, limits.encoded_slashes)
                except PathRefused as e:
                    raise Refused(e.status, str(e)) from None
                length = body_length(event.http_version, headers, scanner.raw[: scanner.size])
                request.body = _read_body(conn, sock, length, handler.body_limit(request), limits, state)
            except (Refused, h11.RemoteProtocolError) as e:
                state("W", request)
                _refuse(sock, handler, request, e, limits.timeout)
                if isinstance(e, Refused) and e.status == 408:
                    linger = 0.0
                return served + (request is not None)

            state("W", request)
            exchange = _Exchange()
            handler.in_flight(partial(_last_words, exchange, sock, handler, request, limits.timeout))
            try:
                response = handler.respond(request)
            except Exception:  # last resort, behind the handler's own boundary: answer, keep the worker
                traceback.print_exc()
                response = error_response(500, _SERVER_FAULT)
            served += 1
            pending, closed = conn.trailing_data
            # Before our head: the request itself said close (or is HTTP/1.0 without keep-alive).
            client_closes = conn.their_state is h11.MUST_CLOSE
            close = (
                # h11 has the client ready for another request (DONE), or not: it closes, or it
                # asked for an Upgrade (MIGHT_SWITCH_PROTOCOL), which this server never grants.
                conn.their_state is not h11.DONE
                or not limits.keep_alive
                or handler.draining()
                or (limits.max_keep_alive_requests and served >= limits.max_keep_alive_requests)
                # A prefork worker serves one connection at a time: when others are waiting
                # for a worker, this one yields after its response (unless requests are
                # already pipelined on it) instead of making them wait for KeepAliveTimeout.
                or (not pending and handler.others_waiting())
            )
            head_only = request.method == "HEAD"
            try:
                sent = _send_response(exchange, sock, head_only, response, bool(close), limits.timeout)
            except ResponseHeadError:  # nothing sent yet: answer 500 rather than nothing
                traceback.print_exc()
                close, response = True, error_response(500, _SERVER_FAULT)
                sent = _send_response(exchange, sock, head_only, response, True, limits.timeout)
            handler.finished(request, response, sent)
            if client_closes and not pending:
                # The client closes and sent nothing more: nothing to drain, and waiting for its
                # FIN would hold the worker for a round trip per connection. (When we close, as
                # a yield, its next request may be on the way: that one is drained.)
                linger = None
            if close:
                return served
    except _TimedOut:
        linger = 0.0
        return served
    except _ClientGone:
        return served
    finally:
        if linger is None:
            sock.close()
        else:
            _lingering_close(sock, linger)


def _read_head(
    conn: h11.Connection,
    sock: socket.socket,
    limits: Limits,
    state: StateHook,
    pending: bytes,
    closed: bool,
    keep_alive: bool,
) -> tuple[h11.Request, HeadScanner] | None:
    """The next request head, checked as it arrives (`pending` first); None if the client
    closed. A client idle without sending a byte raises _TimedOut (closed silently, as Apache
    does); one that sent part of a head gets 408.

    Timeout and RequestReadTimeout header= bound the head: from the accept for a connection's
    first request, from its first byte after a keep-alive wait, which KeepAliveTimeout bounds.
    """
    scanner = HeadScanner(limits)
    deadline = None if keep_alive else Deadline(time.monotonic(), limits.timeout, limits.header_read)
    idle_until = time.monotonic() + limits.keep_alive_timeout
    data, eof = pending, closed
    if keep_alive and not pending:
        data = _next_request_bytes(sock, idle_until, state)
        eof = not data
    elif not pending:
        state("R")
        arrived = _recv_now(sock)  # a new connection's request is usually there by the accept
        if arrived is not None:
            data, eof = arrived, not arrived
    while True:
        if data:
            skip = scanner.feed(data)
            if deadline is None and skip < len(data):
                state("R")
                deadline = Deadline(time.monotonic(), limits.timeout, limits.header_read)
            if deadline is not None:
                deadline.received(len(data))
            if skip < len(data):
                conn.receive_data(data[skip:] if skip else data)
        if eof:
            conn.receive_data(b"")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            if e.error_status_hint == 501:
                raise transfer_coding_refusal(bytes(scanner.raw)) from None
            raise
        if event is not h11.NEED_DATA:
            if isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)  # what h11 yields for an idle client
            return event, scanner
        try:
            data = _recv(sock, idle_until if deadline is None else deadline.at)
        except _TimedOut:
            if scanner.raw:
                assert deadline is not None
                raise Refused(408, f"The request head was not received within {deadline.limit}.") from None
            raise
        eof = not data


def _next_request_bytes(sock: socket.socket, idle_until: float, state: StateHook) -> bytes:
    """The first bytes after a keep-alive response. The keep-alive state (scoreboard K and the
    process title) is reported only when the wait lasts REPORT_WAIT: a client that sends its
    next request at once changes nothing a user sees, and costs no title update."""
    try:
        return _recv(sock, min(idle_until, time.monotonic() + REPORT_WAIT))
    except _TimedOut:
        if time.monotonic() >= idle_until:
            raise
    state("K")
    return _recv(sock, idle_until)


def _read_body(
    conn: h11.Connection, sock: socket.socket, length: int | None, limit: int, limits: Limits, state: StateHook
) -> bytes:
    """The whole body, read within Timeout and RequestReadTimeout body=; a chunked one is checked
    by a ChunkedScanner before h11 sees its bytes.

    Over `limit` (LimitRequestBody, 0 = none) it is refused with 413 without reading the
    excess: at once for a Content-Length, as soon as a chunked body passes it.
    """
    if limit and length is not None and length > limit:
        raise Refused(413, "The request body is larger than LimitRequestBody.")
    if length != 0:
        state("R")  # a new phase: the master's hung-worker check sees a fresh heartbeat
    deadline = Deadline(time.monotonic(), limits.timeout, limits.body_read)
    chunked = ChunkedScanner(limits) if length is None else None
    if chunked is not None:
        chunked.feed(conn.trailing_data[0])  # what came with the head
    if conn.they_are_waiting_for_100_continue:
        _sendall(sock, response_head(100, b"Continue", []), deadline.at)
    chunks: list[bytes] = []
    size = 0
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            try:
                data = _recv(sock, deadline.at)
            except _TimedOut:
                raise Refused(408, f"The request body was not received within {deadline.limit}.") from None
            deadline.received(len(data))
            if chunked is not None:
                chunked.feed(data)
            conn.receive_data(data)
        elif isinstance(event, h11.Data):
            size += len(event.data)
            if limit and size > limit:
                raise Refused(413, "The request body is larger than LimitRequestBody.")
            chunks.append(event.data)
        elif isinstance(event, h11.EndOfMessage):
            return b"".join(chunks)
        else:  # ConnectionClosed: h11 raises for a body cut short, so only after a complete one
            raise _ClientGone()


def _recv(sock: socket.socket, deadline: float) -> bytes:
    """One recv that returns by `deadline` (time.monotonic()); b'' when the client closed."""
    while True:
        _wait(sock, select.POLLIN, deadline)
        data = _recv_now(sock)
        if data is not None:
            return data


def _recv_now(sock: socket.socket) -> bytes | None:
    """What has arrived (b'' when the client closed), or None when nothing has: no wait."""
    try:
        return sock.recv(RECV_SIZE)
    except BlockingIOError:
        return None
    except OSError:
        raise _ClientGone() from None


def _wait(sock: socket.socket, event: int, deadline: float) -> None:
    """Until `sock` is ready for `event` (POLLIN, POLLOUT), by `deadline`.

    The socket is non-blocking for the whole connection, so each wait is one poll: with
    socket.settimeout, every recv and send would also cost an ioctl to set the timeout.
    """
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _TimedOut()
    poller = select.poll()
    poller.register(sock, event)
    if not poller.poll(math.ceil(remaining * 1000)):
        raise _TimedOut()


class _Exchange:
    """One request's answer: whether its response has begun, since at most one is sent (the
    watcher thread's `_last_words` come only when the worker's own response has not)."""

    __slots__ = ("begun",)

    def __init__(self) -> None:
        self.begun = False


def _send_response(
    exchange: _Exchange, sock: socket.socket, head_only: bool, response: Response, close: bool, timeout: float
) -> int:
    """Write head and body within `timeout`, in as few sends as possible; returns the body bytes
    sent. A file body (static.py) is sent with sendfile and its file closed, whatever happens.
    Whatever precedes more bytes or the FIN goes with MSG_MORE, so it shares their segment.
    The head says Content-Length, and len(body) goes as is: there is no other framing."""
    body = response.body
    deadline = time.monotonic() + timeout
    try:
        head = framed_head(response, len(body), close)
        exchange.begun = True
        if head_only or not len(body) or response.status in NO_BODY:  # a guest's body for a 204 or 304 is dropped
            _sendall(sock, head, deadline, more=close)
            sent = 0
        elif isinstance(body, FileBody):
            _sendall(sock, head, deadline, more=True)
            sent = _sendfile(sock, body, timeout)
        else:
            if len(body) < RECV_SIZE:
                _sendall(sock, head + body, deadline, more=close)  # one segment for the common small response
            else:
                _sendall(sock, head, deadline, more=True)
                _sendall(sock, body, deadline, more=close)
            sent = len(body)
    finally:
        if isinstance(body, FileBody):
            body.file.close()
    if close:
        _end_output(sock)
    return sent


def _end_output(sock: socket.socket) -> None:
    """Our side is done: the FIN leaves now, in the same segment as the response's last bytes
    (sent with MSG_MORE, held for it), not after logging in one of its own. Closing is left to
    the caller, which may still drain what the client sends (`_lingering_close`)."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the client is gone: nothing to tell it


def _sendfile(sock: socket.socket, body: FileBody, timeout: float) -> int:
    """Send the file's span straight from the page cache; returns the bytes sent. `timeout`
    bounds each wait for the client (Apache's Timeout), not the whole transfer, so a large file
    reaches a slow client that keeps reading. A file that shrank meanwhile ends the connection
    short of its Content-Length, which the client sees."""
    out, fd = sock.fileno(), body.file.fileno()
    offset, end = body.offset, body.offset + body.length
    while offset < end:
        try:
            sent = os.sendfile(out, fd, offset, min(end - offset, SENDFILE_CHUNK))
        except BlockingIOError:
            _wait(sock, select.POLLOUT, time.monotonic() + timeout)
            continue
        except OSError:
            raise _ClientGone() from None
        if not sent:
            raise _ClientGone()
        offset += sent
    return offset - body.offset


def _refuse(
    sock: socket.socket,
    handler: Handler,
    request: Request | None,
    error: Refused | h11.RemoteProtocolError,
    timeout: float,
) -> None:
    """Answer a request we will not serve with its error status; log it when its head was read
    (a head that could not be read has nothing to log)."""
    status = error.status if isinstance(error, Refused) else error.error_status_hint
    _final_response(_Exchange(), sock, handler, request, error_response(status, str(error)), timeout)


def _last_words(
    exchange: _Exchange, sock: socket.socket, handler: Handler, request: Request, timeout: float, response: Response
) -> None:
    """Answer the request in flight from another thread and close the connection: the worker
    gives up a request it cannot finish, and exits."""
    _final_response(exchange, sock, handler, request, response, timeout)
    _lingering_close(sock, LINGER_SECONDS)


def _final_response(
    exchange: _Exchange,
    sock: socket.socket,
    handler: Handler,
    request: Request | None,
    response: Response,
    timeout: float,
) -> None:
    """Send the connection's last response unless one has begun, and log it when the
    request's head was read."""
    sent = 0
    if not exchange.begun:
        head_only = request is not None and request.method == "HEAD"
        try:
            sent = _send_response(exchange, sock, head_only, response, True, timeout)
        except (_ClientGone, _TimedOut):
            pass
    if request is not None:
        handler.finished(request, response, sent)


def _sendall(sock: socket.socket, data: bytes | memoryview, deadline: float, more: bool = False) -> None:
    """sendall bounded by `deadline` as a whole: it waits only while the socket buffer is full.
    `more`: more follows at once (the body, or the FIN of `_end_output`), so the kernel holds a
    part-filled segment for it (MSG_MORE) instead of sending it alone under TCP_NODELAY."""
    flags = socket.MSG_MORE if more else 0
    view = memoryview(data)
    while view:
        try:
            view = view[sock.send(view, flags) :]
        except BlockingIOError:
            _wait(sock, select.POLLOUT, deadline)
        except OSError:
            raise _ClientGone() from None


def _lingering_close(sock: socket.socket, seconds: float) -> None:
    """Half-close, then drop what the client still sends (`seconds` and LINGER_BYTES at most),
    so that it reads our response instead of a reset; then close. With 0 seconds, only what has
    already arrived is dropped."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        drained = 0
        while drained < LINGER_BYTES:
            try:
                received = sock.recv_into(_DISCARD)
            except BlockingIOError:
                _wait(sock, select.POLLIN, deadline)
                continue
            if not received:
                break
            drained += received
    except (OSError, _TimedOut):
        pass
    finally:
        sock.close()
