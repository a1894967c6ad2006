"""One client connection: the socket side of HTTP/1.1, whose protocol side is http1.py.

A `Held` connection is one a worker holds between requests: its socket, the
`http1.RequestParser` its bytes go to without waiting, and the deadline of what it waits for
(Apache's KeepAliveTimeout, Timeout and RequestReadTimeout's header phase); the worker's event
loop (eventloop.py) waits for all of them at once. Once a head is complete, `serve` sees the
request through: it asks the `Site` for one decision (before the body: it says how large the
body may be) and the answer to it, reads the body under its deadlines, decides whether the
connection is kept alive, and writes the response (sendfile for a file body). Closing lingers
(Apache's lingering close). It knows nothing of Wasm. Read deadlines are `reqtimeout.Deadline`s.

On a TLS port the socket becomes a `tlsio.TLSSocket` once the first byte shows a handshake
(`Held.handshake`, driven by the event loop); it reads and writes as a plain socket does, so
the code below serves both, but for waits (OpenSSL may hold decrypted bytes, or want the other
direction) and file bodies (read and sent: the kernel cannot encrypt for sendfile).
"""

from __future__ import annotations

import math
import os
import select
import socket
import ssl
import time
import traceback
from collections.abc import Callable
from functools import partial
from typing import Protocol, TypeVar

from .handover import Parcel
from .http1 import (
    CONTINUE,
    ClientGone,
    Limits,
    Refused,
    RequestParser,
    ResponseHeadError,
    framed_head,
)
from .keeper import Board
from .messages import FileBody, Request, Response, SpooledBody, TLSInfo, error_response
from .reqtimeout import Deadline
from .tlsio import HANDSHAKE_RECORD, PlainHTTP, TLSSocket, first_byte, handshake, info, plain_http_answer, wrap

RECV_SIZE = 65536
# After the response, a closing connection reads and drops what the client still sends, so
# that the client reads our response instead of a reset (Apache's lingering close). Bounded in
# time and bytes, so a client still uploading gigabytes after a 413 can't hold the worker.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1 << 20
# The most one sendfile call is asked for: a file body goes out in steps this size.
SENDFILE_CHUNK = 1 << 24
# On TLS a file body is read and sent in pieces this size (a few TLS records each).
FILE_PIECE = 1 << 16


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


class StateHook(Protocol):
    """Told each phase of a request: 'R' reading its body, 'W' writing (with the request)."""

    def __call__(self, letter: str, request: Request | None = None) -> None: ...


_SERVER_FAULT = "The server failed while handling the request."
_DISCARD = memoryview(bytearray(RECV_SIZE))  # lingering close reads into it (one thread per worker)


class _TimedOut(Exception):
    pass


class Held:
    """A connection the worker holds: its socket, the parser of the request it is reading, and
    the deadline by which that must go on. The event loop (eventloop.py) owns it between
    requests and keeps its `state` (held.READING ...); `serve` has it for one request."""

    __slots__ = (
        "board", "complete", "context", "drained", "fd", "head", "limits", "linger", "parser", "peer", "port",
        "refused",
        "registered", "served", "server_addr", "sock", "state", "tls", "until",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: tuple[str, int],
        port: int,
        server_addr: str,
        limits: Limits,
        served: int = 0,
        context: ssl.SSLContext | None = None,
    ) -> None:
        sock.setblocking(False)  # each read and write waits in `_wait` or the event loop, by its phase's deadline
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.port = port
        self.server_addr = server_addr
        self.limits = limits
        self.served = served  # requests answered on it (MaxKeepAliveRequests)
        self.parser = RequestParser(limits, peer, port, server_addr)
        self.state = 0  # the event loop's
        self.registered = False  # in the event loop's epoll
        self.drained = 0
        # A TLS port's connection: the port's context until the handshake, and what it settled
        # after. Such a connection never leaves this process (its session lives in it).
        self.context = context
        self.tls: TLSInfo | None = None
        self.board: Board | None = None  # the worker's keeper's, set by the event loop (keeper.py)
        self._next(float("inf"))

    def _next(self, until: float) -> None:
        self.parser.next_request()
        self.complete = False  # a head is complete, refused, or the client closed instead
        self.refused: Refused | None = None
        self.head: Deadline | None = None  # the head's deadline, once it has begun
        self.until = until  # the deadline while no head has begun: KeepAliveTimeout, or a lingering close's
        # After a read timeout there is no lingering: a trickling client would hold the connection on.
        self.linger: float | None = LINGER_SECONDS  # None: nothing to drain, close at once

    @property
    def deadline(self) -> float:
        return self.head.at if self.head is not None else self.until

    def start(self, now: float) -> None:
        """A new connection: Timeout and RequestReadTimeout bound its first head from the accept
        (on a TLS port: from the handshake's end, which RequestReadTimeout handshake= bounds)."""
        if self.context is not None and self.tls is None:
            self.until = Deadline(now, self.limits.timeout, self.limits.handshake_read).at
        else:
            self.head = Deadline(now, self.limits.timeout, self.limits.header_read)

    def answered(self, keeps: bool) -> None:
        """Its response is out: a kept-alive connection with nothing of the next request read is
        one the keeper may pass on from now, before the access log is written."""
        if keeps and self.board is not None and self.portable and not self.parser.trailing[0]:
            self.board.mark(self.fd, self.served)

    @property
    def untouched(self) -> bool:
        """A plain-HTTP connection with nothing of its next request read: what the client sent is
        all in the socket, so another worker (or a keeper, keeper.py) can take it on as it is."""
        return self.context is None and not self.complete and not self.parser.scanner.raw

    @property
    def portable(self) -> bool:
        """Whether another worker can go on with it (handover.py): not a TLS connection."""
        return self.context is None

    def handshake(self) -> int:
        """The next step of a TLS port's connection without waiting: 0 once its handshake is
        done (`tls` set), else what to wait for (select.POLLIN, POLLOUT). Raises
        tlsio.PlainHTTP when the client speaks plain HTTP, tlsio.HandshakeFailed else."""
        sock = self.sock
        if not isinstance(sock, TLSSocket):
            assert self.context is not None
            first = first_byte(sock)
            if first is None:
                return select.POLLIN
            if first != HANDSHAKE_RECORD:
                raise PlainHTTP()
            self.sock = sock = wrap(sock, self.context)
        wants = handshake(sock)
        if not wants:
            self.tls = info(sock)
        return wants

    def answer_plain_http(self) -> None:
        """Apache's 400 for plain HTTP on a TLS port, if the socket takes it at once; the caller
        closes the connection (lingering: the client's request is still unread)."""
        try:
            self.sock.send(plain_http_answer())
        except OSError:
            pass

    @classmethod
    def adopted(cls, parcel: Parcel, sock: socket.socket, limits: Limits, now: float) -> Held:
        """A connection another worker handed over, as it was there: waiting for a head's first
        byte until a time, or with a head begun under its deadline (a whole one, even)."""
        held = cls(sock, parcel.peer, parcel.port, parcel.server_addr, limits, parcel.served)
        if len(parcel.deadline) == 1:
            held.until = parcel.deadline[0]
        else:
            held.head = Deadline.restored(parcel.deadline)
            held.feed(parcel.buffered, False, now, counted=True)
        return held

    def parcel(self) -> Parcel:
        """What the next worker needs to go on with it (handover.py)."""
        deadline = self.head.saved() if self.head is not None else (self.until,)
        raw = bytes(self.parser.scanner.raw)
        return Parcel(self.peer, self.port, self.server_addr, self.served, self.state, raw, deadline)

    def idle(self, now: float) -> bool:
        """After a kept-alive response: KeepAliveTimeout bounds the wait for the next head's
        first byte, whose own deadline starts with that byte. True when what the client sent
        after the request already completes the next head."""
        pending, closed = self.parser.trailing
        self._next(now + self.limits.keep_alive_timeout)
        return self.feed(pending, closed, now) if pending or closed else False

    def receive(self, now: float) -> bool:
        """Read what has arrived; True once there is something to serve: a complete head, one to
        refuse, or a client that closed."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""  # reset: as good as closed
        return self.feed(data, not data, now)

    def feed(self, data: bytes, eof: bool, now: float, counted: bool = False) -> bool:
        """The next bytes of a head (`counted`: its deadline has already seen them)."""
        try:
            self.complete = self.parser.head(data, eof)
        except Refused as e:
            self.refused, self.complete = e, True
        if self.head is None and self.parser.scanner.raw:  # a head begins after a keep-alive wait
            self.head = Deadline(now, self.limits.timeout, self.limits.header_read)
        if self.head is not None and not counted:
            self.head.received(len(data))
        return self.complete

    def expire(self) -> bool:
        """Its head's deadline passed: a client that sent part of one gets 408, if its socket
        takes it at once (the worker waits for no one here); whether it was sent. The caller
        closes it."""
        if self.head is None or not self.parser.scanner.raw:
            return False
        error = error_response(408, f"The request head was not received within {self.head.limit}.")
        head, _ = framed_head(error, False, True)
        assert isinstance(error.body, bytes)
        try:
            self.sock.send(head + error.body)
        except OSError:
            return False
        return True

    def close(self, now: float) -> bool:
        """End the connection after its last response: at once, or (lingering close) half-close
        it and drop what the client still sends, so that it reads our response instead of a
        reset. True when it is closed; False while it lingers (until `drain` says it is done)."""
        if self.linger is None:
            self.sock.close()
            return True
        _end_output(self.sock)
        self.head = None
        self.until = now + self.linger
        return self.drain()

    def drain(self) -> bool:
        """Drop what has arrived; True (and closed) at the client's FIN, past LINGER_BYTES or an
        error, or once nothing is left to wait for."""
        try:
            while self.drained < LINGER_BYTES:
                received = self.sock.recv_into(_DISCARD)
                if not received:
                    break
                self.drained += received
        except (BlockingIOError, InterruptedError):
            if self.linger:
                return False
        except OSError:
            pass
        self.sock.close()
        return True

    def end(self) -> None:
        """Close this process's descriptor: a FIN for an idle connection (after close_notify
        on TLS), nothing for one handed over (the next worker has it)."""
        self.sock.close()


def serve(held: Held, site: Site[_D], worker: Worker, limits: Limits, state: StateHook) -> bool:
    """Serve the request whose head is complete on `held` (or answer its refusal); True when
    the connection stays open for the next one (`Held.idle`), False when the caller closes it
    (`Held.close`). The body is read here, each wait bounded by its phase's deadline, and the
    response written."""
    parser = held.parser
    sock = held.sock
    if held.refused is not None:
        _refuse(sock, site, state, None, None, held.refused, limits.timeout)
        return False
    if parser.closed:
        held.linger = None  # the client closed between requests: nothing to say, nothing to drain
        return False
    request: Request | None = None
    decision: _D | None = None
    try:
        request = parser.request(worker.new_request_id())
        request.tls = held.tls
        length = parser.check(request)
        decision = site.route(request)
        request.body = _read_body(parser, sock, length, decision.body_limit, limits, state)
        held.served += 1
        exchange = _Exchange()
        response = _respond(exchange, sock, site, state, request, decision, limits.timeout)
        close = _closes(parser, worker, limits, held.served)
        close = _send(exchange, sock, site, request, decision, response, close, limits.timeout, held.answered)
    except Refused as e:
        _refuse(sock, site, state, request, decision, e, limits.timeout)
        if e.status == 408:
            held.linger = 0.0
        return False
    except _TimedOut:
        held.linger = 0.0
        return False
    except ClientGone:
        return False
    pending, _ = parser.trailing
    if parser.client_closes and not pending:
        # The client closes and sent nothing more: nothing to drain, and waiting for its FIN
        # would cost a round trip per connection.
        held.linger = None
    return not close


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
    if isinstance(sock, TLSSocket):
        event = sock.wait_event(event)
        if not event:
            return
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


def _closes(parser: RequestParser, worker: Worker, limits: Limits, served: int) -> bool:
    """Whether the connection ends after this response (the keep-alive decision)."""
    return (
        not parser.ready_for_next
        or not limits.keep_alive
        or worker.draining()
        or (limits.max_keep_alive_requests > 0 and served >= limits.max_keep_alive_requests)
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
    answered: Callable[[bool], None],
) -> bool:
    """Send the response, say so (`answered`: whether the connection stays), then tell the site;
    returns whether the connection ends. A head that must not be sent is a server fault found
    before anything is sent: a 500 goes instead."""
    head_only = request.method == "HEAD"
    try:
        sent = _send_response(exchange, sock, head_only, response, close, timeout)
    except ResponseHeadError:
        traceback.print_exc()
        close, response = True, error_response(500, _SERVER_FAULT)
        sent = _send_response(exchange, sock, head_only, response, True, timeout)
    answered(not close)
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
    if isinstance(sock, TLSSocket):
        return _copy_file(sock, body, timeout)
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


def _copy_file(sock: TLSSocket, body: FileBody, timeout: float) -> int:
    """sendfile for TLS: the span read and sent in pieces, `timeout` bounding each."""
    fd = body.file.fileno()
    offset, end = body.offset, body.offset + body.length
    while offset < end:
        piece = os.pread(fd, min(end - offset, FILE_PIECE), offset)
        if not piece:
            raise ClientGone()  # the file shrank: the connection ends short of its Content-Length
        _sendall(sock, piece, time.monotonic() + timeout)
        offset += len(piece)
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
