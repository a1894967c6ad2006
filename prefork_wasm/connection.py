"""One client connection: the socket side of HTTP/1.1, whose protocol side is http1.py.

This module moves bytes between the socket and an `http1.RequestParser`, applies the server's
time limits (Apache's Timeout, KeepAliveTimeout, RequestReadTimeout), asks the `Site` for one
decision per request (before the body: it says how large the body may be) and the answer to
it, decides whether the connection is kept alive, and writes the response
(sendfile for a file body, lingering close). It knows nothing of Wasm. Read deadlines are
`reqtimeout.Deadline`s: Timeout and RequestReadTimeout.
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
from typing import Protocol, TypeVar

from .http1 import (
    CONTINUE,
    ClientGone,
    Limits,
    Refused,
    RequestParser,
    ResponseHeadError,
    framed_head,
)
from .messages import FileBody, Request, Response, SpooledBody, error_response
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


class Routed(Protocol):
    """A request's routing decision, as far as the connection reads it (router.Decision)."""

    @property
    def body_limit(self) -> int:
        """LimitRequestBody for this request (0 = unlimited), known once the head is read."""
        ...


_D = TypeVar("_D", bound=Routed)


class Site(Protocol[_D]):
    """What the connection needs from the server behind it: one decision per request, the
    answer to it, and the record of the exchange."""

    def route(self, request: Request) -> _D:
        """Decide the request once its head is read (before its body: the decision says how
        large the body may be)."""
        ...

    def respond(self, request: Request, decision: _D, give_up: Callable[[Response], None]) -> Response:
        """The answer; a failure is a 5xx response, never an exception (the site's fault
        boundary). Should one escape anyway, the connection answers 500 and goes on.
        `give_up` answers from another thread and closes the connection, for a worker that must
        give the request up."""
        ...

    def finished(self, request: Request, decision: _D, response: Response, sent: int) -> None:
        """After the response is written: access log, scoreboard."""
        ...


class Worker(Protocol):
    """What the connection needs from the worker process it runs in."""

    def new_request_id(self) -> str: ...

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


class _TimedOut(Exception):
    pass


def serve(
    sock: socket.socket,
    peer: tuple[str, int],
    server_port: int,
    site: Site[_D],
    worker: Worker,
    limits: Limits,
    state: StateHook,
    server_addr: str = "",
) -> int:
    """Serve requests on `sock` until the connection ends; returns how many were answered.
    `server_addr` is the local IP the client connected to (for virtual hosts by address)."""
    sock.setblocking(False)  # each read and write waits in `_wait`, by its phase's deadline
    parser = RequestParser(limits, peer, server_port, server_addr)
    served = 0
    # After a read timeout there is no lingering: a trickling client would hold the worker on.
    linger: float | None = LINGER_SECONDS  # None: nothing to drain, close at once
    pending, closed = b"", False  # what the client sent after the last request, and whether it then closed
    try:
        while True:
            parser.next_request()
            request: Request | None = None
            decision: _D | None = None
            try:
                if not _read_head(parser, sock, limits, state, pending, closed, keep_alive=served > 0):
                    return served
                request = parser.request(worker.new_request_id())
                length = parser.check(request)
                decision = site.route(request)
                request.body = _read_body(parser, sock, length, decision.body_limit, limits, state)
            except Refused as e:
                _refuse(sock, site, state, request, decision, e, limits.timeout)
                if e.status == 408:
                    linger = 0.0
                return served + (request is not None)
            served += 1
            pending, closed = parser.trailing
            exchange = _Exchange()
            response = _respond(exchange, sock, site, state, request, decision, limits.timeout)
            close = _closes(parser, worker, limits, served, pending)
            close = _send(exchange, sock, site, request, decision, response, close, limits.timeout)
            if parser.client_closes and not pending:
                # The client closes and sent nothing more: nothing to drain, and waiting for its
                # FIN would hold the worker for a round trip per connection. (When we close, as
                # a yield, its next request may be on the way: that one is drained.)
                linger = None
            if close:
                return served
    except _TimedOut:
        linger = 0.0
        return served
    except ClientGone:
        return served
    finally:
        if linger is None:
            sock.close()
        else:
            _lingering_close(sock, linger)


def _read_head(
    parser: RequestParser,
    sock: socket.socket,
    limits: Limits,
    state: StateHook,
    pending: bytes,
    closed: bool,
    keep_alive: bool,
) -> bool:
    """Feed `parser` the next request head, checked as it arrives (`pending` first); False if
    the client closed instead. A client idle without sending a byte raises _TimedOut (closed
    silently, as Apache does); one that sent part of a head gets 408.

    Timeout and RequestReadTimeout header= bound the head: from the accept for a connection's
    first request, from its first byte after a keep-alive wait, which KeepAliveTimeout bounds.
    """
    now = time.monotonic()
    deadline = None if keep_alive else Deadline(now, limits.timeout, limits.header_read)
    idle_until = now + limits.keep_alive_timeout
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
        done = parser.head(data, eof)
        if deadline is None and parser.scanner.raw:  # the first bytes of a head
            state("R")
            deadline = Deadline(time.monotonic(), limits.timeout, limits.header_read)
        if done:
            return not parser.closed
        if deadline is not None:
            deadline.received(len(data))
        try:
            data = _recv(sock, idle_until if deadline is None else deadline.at)
        except _TimedOut:
            if parser.scanner.raw:
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
    parser: RequestParser, sock: socket.socket, length: int | None, limit: int, limits: Limits, state: StateHook
) -> bytes | SpooledBody:
    """The whole body of `length` bytes (None: chunked), read within Timeout and RequestReadTimeout
    body=; over `limit` (LimitRequestBody, 0 = unlimited) it is refused with 413 without reading
    the excess. Its deadline is made once there is something to wait for: none for the common
    request without a body."""
    parser.start_body(length, limit)
    if length != 0:
        state("R")  # a new phase: the master's hung-worker check sees a fresh heartbeat
    deadline = None
    if parser.expects_continue:
        deadline = Deadline(time.monotonic(), limits.timeout, limits.body_read)
        _sendall(sock, CONTINUE, deadline.at)
    while True:
        body = parser.body()
        if body is not None:
            return body
        if deadline is None:
            deadline = Deadline(time.monotonic(), limits.timeout, limits.body_read)
        try:
            data = _recv(sock, deadline.at)
        except _TimedOut:
            raise Refused(408, f"The request body was not received within {deadline.limit}.") from None
        deadline.received(len(data))
        parser.feed_body(data)


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
        raise ClientGone() from None


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


def _respond(
    exchange: _Exchange,
    sock: socket.socket,
    site: Site[_D],
    state: StateHook,
    request: Request,
    decision: _D,
    timeout: float,
) -> Response:
    """The site's answer, told how another thread answers instead (`_last_words`)."""
    state("W", request)
    give_up = partial(_last_words, exchange, sock, site, request, decision, timeout)
    try:
        return site.respond(request, decision, give_up)
    except Exception:  # last resort, behind the site's own boundary: answer, keep the worker
        traceback.print_exc()
        return error_response(500, _SERVER_FAULT)


def _closes(parser: RequestParser, worker: Worker, limits: Limits, served: int, pending: bytes) -> bool:
    """Whether the connection ends after this response (the keep-alive decision)."""
    return (
        not parser.ready_for_next
        or not limits.keep_alive
        or worker.draining()
        or (limits.max_keep_alive_requests > 0 and served >= limits.max_keep_alive_requests)
        # A prefork worker serves one connection at a time: when others are waiting for a
        # worker, this one yields after its response (unless requests are already pipelined on
        # it) instead of making them wait for KeepAliveTimeout.
        or (not pending and worker.others_waiting())
    )


def _send(
    exchange: _Exchange,
    sock: socket.socket,
    site: Site[_D],
    request: Request,
    decision: _D,
    response: Response,
    close: bool,
    timeout: float,
) -> bool:
    """Send the response, then tell the site; returns whether the connection ends. A head
    that must not be sent is a server fault found before anything is sent: a 500 goes instead."""
    head_only = request.method == "HEAD"
    try:
        sent = _send_response(exchange, sock, head_only, response, close, timeout)
    except ResponseHeadError:
        traceback.print_exc()
        close, response = True, error_response(500, _SERVER_FAULT)
        sent = _send_response(exchange, sock, head_only, response, True, timeout)
    site.finished(request, decision, response, sent)
    return close


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
        head, with_body = framed_head(response, head_only, close)
        response.head_bytes, response.keeps_alive = len(head), not close
        exchange.begun = True
        if not with_body:
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
            raise ClientGone() from None
        if not sent:
            raise ClientGone()
        offset += sent
    return offset - body.offset


def _refuse(
    sock: socket.socket,
    site: Site[_D],
    state: StateHook,
    request: Request | None,
    decision: _D | None,
    error: Refused,
    timeout: float,
) -> None:
    """Answer a request we will not serve with its error status; log it when its head was read
    (a head that could not be read has nothing to log). One refused before it was routed is
    routed now, for its server's logs (with no path yet, it matches no Location)."""
    state("W", request)
    if request is not None and decision is None:
        decision = site.route(request)
    _final_response(_Exchange(), sock, site, request, decision, error_response(error.status, str(error)), timeout)


def _last_words(
    exchange: _Exchange,
    sock: socket.socket,
    site: Site[_D],
    request: Request,
    decision: _D,
    timeout: float,
    response: Response,
) -> None:
    """Answer the request in flight from another thread and close the connection: the worker
    gives up a request it cannot finish, and exits."""
    _final_response(exchange, sock, site, request, decision, response, timeout)
    _lingering_close(sock, LINGER_SECONDS)


def _final_response(
    exchange: _Exchange,
    sock: socket.socket,
    site: Site[_D],
    request: Request | None,
    decision: _D | None,
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
        except (ClientGone, _TimedOut):
            pass
    if request is not None and decision is not None:
        site.finished(request, decision, response, sent)


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
            raise ClientGone() from None


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
