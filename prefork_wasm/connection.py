"""One client connection: HTTP/1.1 over a blocking socket, with h11 parsing the requests.

h11 decides a request's framing, whether the client keeps the connection, pipelining and most
of what is malformed; this module moves bytes between the socket and h11, applies the server's
time and size limits (Apache's Timeout, KeepAliveTimeout, RequestReadTimeout,
LimitRequestLine/FieldSize/Fields, LimitRequestBody), refuses the request shapes h11 lets
through but Apache or RFC 9112 do not, hands each complete request to a `Site`, and writes
its response. It knows nothing of Wasm.

The pure parts (`HeadScanner`, `check_request_line`, `body_length`, `ChunkedScanner`,
`transfer_coding_refusal`, `response_head`) come first; the socket I/O after them. Read
deadlines are `reqtimeout.Deadline`s: Timeout and RequestReadTimeout.
"""

from __future__ import annotations

import math
import os
import re
import select
import socket
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from functools import partial
from typing import Protocol, TypeVar

import h11

from .messages import (
    FIELD_VALUE_BYTES,
    SERVER_SOFTWARE,
    TCHAR,
    FileBody,
    Request,
    Response,
    error_response,
    reason_phrase,
)
from .paths import PathRefused, request_path
from .reqtimeout import BODY_DEFAULT, HEADER_DEFAULT, Deadline, ReadTimeout

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
# Apache's maximum LimitRequestFields: caps the head when LimitRequestFields 0 says unlimited.
MAX_FIELDS = 32767
# Empty lines ignored before a request line (RFC 9112 2.2 says at least one); Apache's
# DEFAULT_LIMIT_BLANK_LINES. They are what old clients send after a POST body.
MAX_BLANK_LINES = 10
# The most one sendfile call is asked for: a file body goes out in steps this size.
SENDFILE_CHUNK = 1 << 24


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float  # Timeout: reading the head, reading the body, writing the response, each whole
    keep_alive: bool
    keep_alive_timeout: float  # the wait for the first byte of the next request
    max_keep_alive_requests: int  # 0 = unlimited
    request_line: int  # LimitRequestLine: bytes of the request line, CRLF excluded
    field_size: int  # LimitRequestFieldSize: bytes of one header field line, CRLF excluded
    fields: int  # LimitRequestFields: header fields in a request, 0 = unlimited
    encoded_slashes: str = "off"  # AllowEncodedSlashes: off, on or nodecode (paths.request_path)
    header_read: ReadTimeout = HEADER_DEFAULT  # RequestReadTimeout header=...
    body_read: ReadTimeout = BODY_DEFAULT  # RequestReadTimeout body=...


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


class Refused(Exception):
    """A request the server will not serve: answer `status` if the protocol still allows, then close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


# --- pure checks ---------------------------------------------------------------------------


def max_head_size(limits: Limits) -> int:
    """h11's buffer cap: the largest head the three limits allow.

    `HeadScanner` refuses a bad head long before this; the cap still bounds the lines h11 reads
    inside a chunked body (chunk sizes with extensions, trailer fields).
    """
    fields = limits.fields or MAX_FIELDS
    return limits.request_line + 2 + fields * (limits.field_size + 2) + 2


# Control characters RFC 9110 5.5 forbids in a field value, HTAB aside (CR and LF end lines).
# h11 refuses only NUL, VT and FF; a proxy may cut or keep the others (request smuggling).
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class HeadScanner:
    """Apache's LimitRequestLine, LimitRequestFieldSize and LimitRequestFields, checked on one
    request head's raw bytes as they arrive, before h11 parses them.

    h11 alone only caps its whole buffer. It also accepts shapes that Apache's default
    HttpProtocolOptions Strict and RFC 9112 refuse, because a proxy in front may frame them
    differently (request smuggling): a bare LF as line end, obs-fold (a header line that starts
    with a space or tab, continuing the previous one) and control characters in a value. All
    are 400 here. Empty lines before the request line are skipped (RFC 9112 2.2), up to
    MAX_BLANK_LINES; h11 would answer 400, so `feed` says how many bytes it must not see.

    Each byte is looked at once, so a client trickling its head a byte at a time costs O(n).
    """

    __slots__ = (
        "_blank", "_cr", "_field_limit", "_fields", "_last", "_line_limit", "_lines", "_partial", "_short",
        "done", "raw", "size",
    )

    def __init__(self, limits: Limits) -> None:
        self._line_limit = limits.request_line
        self._field_limit = limits.field_size
        self._fields = limits.fields
        self._short = min(limits.request_line, limits.field_size)
        self._lines = 0  # complete lines: the request line, then header fields
        self._partial = 0  # bytes of the current unfinished line, its CR included
        self._last = 0  # the last byte fed: a CR that ends one packet before the LF of the next
        self._blank = 0  # empty lines skipped before the request line
        self._cr = False  # a packet ended with the CR of a skipped empty line
        self.done = False  # the blank line that ends the head was seen
        self.raw: bytes | bytearray = b""  # what was fed, skipped empty lines aside
        self.size = 0  # once done: the head's length in `raw` (what follows is body)

    def feed(self, data: bytes) -> int:
        """Look at the next bytes of the head; raises Refused for the first line that breaks a
        rule. Returns how many leading bytes of `data` are skipped empty lines."""
        if self.done or not data:
            return 0
        skip = 0 if self.raw else self._skip_blank_lines(data)
        if skip:
            data = data[skip:]
            if not data:
                return skip
        if not self.raw:
            self.raw = data  # the common single packet: keep a reference, copy nothing
        elif isinstance(self.raw, bytes):
            self.raw = bytearray(self.raw) + data
        else:
            self.raw += data
        if not self._lines and not self._partial and self._short_head(data):
            return skip
        pos, end = 0, len(data)
        while pos < end:
            if self._lines and not self._partial and data[pos] in b" \t":
                raise Refused(400, "Header field continuation lines (obs-fold) are not accepted.")
            lf = data.find(b"\n", pos)
            if _CONTROL.search(data, pos, end if lf < 0 else lf):
                raise Refused(400, "Control characters other than HTAB are not allowed in a request head.")
            if lf < 0:
                self._partial += end - pos
                self._last = data[-1]
                if self._partial > self._limit() + 1:  # +1: the line's CR may be in
                    raise self._too_long()
                return skip
            length = self._partial + lf - pos
            before = data[lf - 1] if lf > pos else self._last
            if not length or before != 0x0D:
                raise Refused(400, "Request lines must end with CRLF, not a bare LF.")
            length -= 1
            self._partial = 0
            pos = lf + 1
            if not length:  # the blank line
                self.done = True
                self.size = len(self.raw) - end + pos
                return skip
            if length > self._limit():
                raise self._too_long()
            self._lines += 1
            if self._fields and self._lines > self._fields + 1:
                raise Refused(431, "The number of request header fields exceeds LimitRequestFields.")
        return skip

    def _skip_blank_lines(self, data: bytes) -> int:
        """The CRLFs before the request line, also split between packets; a bare CR or LF there
        is left to the line scan (400)."""
        pos = 0
        if self._cr:
            if data[:1] != b"\n":
                raise Refused(400, "Request lines must end with CRLF, not a bare CR.")
            self._cr = False
            pos = self._count_blank_line(1)
        while data.startswith(b"\r\n", pos):
            pos = self._count_blank_line(pos + 2)
        if pos == len(data) - 1 and data[pos] == 0x0D:
            self._cr = True
            pos += 1
        return pos

    def _count_blank_line(self, pos: int) -> int:
        self._blank += 1
        if self._blank > MAX_BLANK_LINES:
            raise Refused(400, f"More than {MAX_BLANK_LINES} empty lines before the request line.")
        return pos

    def _short_head(self, data: bytes) -> bool:
        """The common case in a few C-speed scans: a whole head in one packet, shorter than either
        line limit (so no line can break one), as many CRs as LFs, no line starting with a space
        and no tab (either could be obs-fold), no control character, few enough fields.

        Equal counts let a bare LF through only with a CR elsewhere than before an LF, and h11
        refuses any such CR (400). Anything unusual goes to the exact line-by-line scan.
        """
        end = data.find(b"\r\n\r\n")
        if end < 0 or end > self._short:
            return False
        end += 2
        lines = data.count(b"\n", 0, end)
        if (
            data.count(b"\r", 0, end) == lines
            and data.find(b"\t", 0, end) < 0
            and data.find(b"\n ", 0, end) < 0
            and not _CONTROL.search(data, 0, end)
            and (not self._fields or lines - 1 <= self._fields)
        ):
            self.done = True
            self.size = end + 2
            return True
        return False

    def _limit(self) -> int:
        return self._field_limit if self._lines else self._line_limit

    def _too_long(self) -> Refused:
        if self._lines:
            return Refused(431, "A request header field exceeds LimitRequestFieldSize.")
        return Refused(414, "The request line exceeds LimitRequestLine.")


_ABSOLUTE_FORM = re.compile(rb"(?i:https?)://[^/?#]+")


def check_request_line(event: h11.Request, headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse what h11 accepts in a request line but Apache (Strict) or RFC 9112 do not."""
    version = event.http_version
    if version != b"1.1" and version != b"1.0":
        if version[:1] == b"0":  # Apache: HTTP/0.9 only as a bare 'GET /', which h11 refuses
            raise Refused(400, f"Unsupported protocol HTTP/{version.decode()}.")
        if version[:1] != b"1":
            raise Refused(505, f"HTTP/{version.decode()} is not supported.")
        if not any(name == b"host" for name, _ in headers):  # h11 checks only HTTP/1.1
            raise Refused(400, "An HTTP/1.x request needs a Host header.")
    method, target = event.method, event.target
    if method == b"CONNECT":  # h11 would switch protocols on a 2xx; this is no proxy
        raise Refused(501, "CONNECT is not supported: this server is not a proxy.")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS") and not _ABSOLUTE_FORM.match(target):
        raise Refused(400, "Invalid request target.")
    if b"#" in target:
        raise Refused(400, "The request target must not contain a fragment.")


_CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*(.*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)


def body_length(version: bytes, headers: list[tuple[bytes, bytes]], head: bytes | bytearray) -> int | None:
    """The declared body size: Content-Length, 0 without one, None for chunked (known at its end).

    h11 has already refused conflicting Content-Lengths and every Transfer-Encoding but
    'chunked'. It accepts a Content-Length list of equal values ('5, 5') and a repeated field,
    which Apache refuses (a proxy may take another member): 400 unless `head`, the raw head,
    has exactly one Content-Length of digits. h11 also lets a request with both headers through
    (Transfer-Encoding wins, RFC 9112 6.3); that is the classic smuggling shape, so it is
    refused, as RFC 9112 6.1 allows. So is Transfer-Encoding in an HTTP/1.0 request, whose
    framing RFC 9112 6.1 calls faulty.
    """
    length = 0
    has_length = chunked = False
    for name, value in headers:
        if name == b"content-length":
            length, has_length = int(value), True
        elif name == b"transfer-encoding":
            chunked = True
    if has_length:
        sent = _CONTENT_LENGTH.findall(head)
        if len(sent) != 1 or not sent[0].isdigit():
            raise Refused(400, "Content-Length must be one field of digits only.")
    if not chunked:
        return length
    if has_length:
        raise Refused(400, "A request must not have both Content-Length and Transfer-Encoding.")
    if version == b"1.0":
        raise Refused(400, "Transfer-Encoding is not allowed in an HTTP/1.0 request.")
    return None


_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
# RFC 9112 7.1: chunk-size [ chunk-ext ], without the BWS that senders SHOULD NOT send (h11
# refuses it after the size); h11's own limit of 20 hex digits.
_CHUNK_LINE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;" + _TOKEN + rb"(?:=(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*")
_TRAILER_FIELD = re.compile(rb"(" + _TOKEN + rb"):[\t\x20-\x7e\x80-\xff]*")
# Fields that RFC 9110 6.5.1 says cannot be processed after the content, by its kinds: message
# framing and connection handling, routing, authentication and cookies, request modifiers
# (conditionals, Range, Expect, Max-Forwards, caching controls, TE) and the content's format.
# Trailers never reach a guest; one of these there is an attempt at a proxy that merges them.
FORBIDDEN_TRAILERS = frozenset(
    {
        b"content-length", b"transfer-encoding", b"trailer", b"te", b"connection", b"keep-alive",
        b"upgrade", b"proxy-connection",
        b"host",
        b"authorization", b"proxy-authorization", b"cookie", b"set-cookie",
        b"expect", b"max-forwards", b"range", b"if-match", b"if-none-match", b"if-modified-since",
        b"if-unmodified-since", b"if-range", b"cache-control", b"pragma",
        b"content-type", b"content-encoding", b"content-range",
    }
)

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedScanner:
    """RFC 9112 7.1 chunked framing checked on a body's raw bytes as they arrive, before h11
    parses them (as HeadScanner does for the head).

    h11 takes anything but LF after a ';' in a chunk-size line (a bare CR, NUL, an unbalanced
    quote), whitespace after the size, and trailer fields of any name. A proxy that ends lines at
    a bare CR frames '41;a=b\\r\\r\\n...' differently from h11: request smuggling. Here a
    chunk-size line is exactly hex digits then `;token[=token|quoted-string]` extensions, chunk
    data ends with CRLF, lines end with CRLF and are LimitRequestFieldSize bytes at most (as in
    Apache), and the trailer has at most LimitRequestFields well-formed fields, none of
    FORBIDDEN_TRAILERS. The data itself is only counted, never copied.
    """

    __slots__ = ("_field_limit", "_fields", "_line", "_remaining", "_state", "_trailers", "done")

    def __init__(self, limits: Limits) -> None:
        self._field_limit = limits.field_size
        self._fields = limits.fields
        self._state = _SIZE
        self._line = bytearray()  # the current unfinished line
        self._remaining = 0  # bytes of the current chunk's data still to come
        self._trailers = 0
        self.done = False  # the empty line that ends the trailer was seen

    def feed(self, data: bytes) -> int:
        """Check the next bytes; returns how many belong to the body (once `done`, the rest of
        `data` is the next request's). Raises Refused for the first rule broken."""
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            lf = data.find(b"\n", pos)
            self._line += data[pos : end if lf < 0 else lf]
            if len(self._line) > self._field_limit + 1:  # +1: the line's CR may be in
                raise Refused(431 if self._state == _TRAILER else 400, "A line of the chunked body exceeds LimitRequestFieldSize.")
            if lf < 0:
                return end
            pos = lf + 1
            line, self._line = self._line, bytearray()
            if line[-1:] != b"\r":
                raise Refused(400, "Lines of a chunked body must end with CRLF, not a bare LF.")
            self._end_line(bytes(line[:-1]))
        return pos

    def _end_line(self, line: bytes) -> None:
        if self._state == _SIZE:
            match = _CHUNK_LINE.fullmatch(line)
            if not match:
                raise Refused(400, "Invalid chunk-size line: hex digits, then only ;name[=value] extensions.")
            self._remaining = int(match[1], 16)
            self._state = _DATA if self._remaining else _TRAILER
        elif self._state == _DATA_END:
            if line:
                raise Refused(400, "Chunk data must be followed by CRLF.")
            self._state = _SIZE
        elif not line:
            self.done = True
        else:
            if line[0] in b" \t":
                raise Refused(400, "Header field continuation lines (obs-fold) are not accepted.")
            match = _TRAILER_FIELD.fullmatch(line)
            if not match:
                raise Refused(400, "Invalid trailer field.")
            if match[1].lower() in FORBIDDEN_TRAILERS:
                raise Refused(400, f"{match[1].decode()} is not allowed in a trailer.")
            self._trailers += 1
            if self._fields and self._trailers > self._fields:
                raise Refused(431, "The number of trailer fields exceeds LimitRequestFields.")


_TRANSFER_ENCODING = re.compile(rb"^transfer-encoding:(.*)$", re.IGNORECASE | re.MULTILINE)


def transfer_coding_refusal(head: bytes) -> Refused:
    """The answer to a Transfer-Encoding h11 refused (it says 501 for all of them).

    RFC 9112 6.3 and Apache answer 400 when chunked is not the final coding, or is applied
    twice: the body's length is then unknowable. Only a coding before a final chunked
    ('gzip, chunked') is well-formed but not implemented: 501.
    """
    head = head.split(b"\r\n\r\n", 1)[0]
    codings = [c.strip().lower() for m in _TRANSFER_ENCODING.finditer(head) for c in m[1].split(b",")]
    codings = [c for c in codings if c]
    if codings[-1:] == [b"chunked"] and codings.count(b"chunked") == 1:
        return Refused(501, "Only the chunked transfer coding is implemented.")
    return Refused(400, "Transfer-Encoding must end with chunked, applied once.")


class ResponseHeadError(ValueError):
    """A response field that must not be sent: a server fault (guests' fields are checked
    earlier, by cgi.py, and answered 502)."""


def response_head(status: int, reason: bytes, fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The status line and header fields of a response: the one place a head is made, so the
    one place it is checked. A name must be a token; no value, nor the reason, may hold a byte
    that ends a line (or NUL, VT, FF), whoever made it: a head cannot be split.

    h11 parses requests, but does not write responses: its send side cost 21 us of a request's
    31 us of h11 (event, state machine, header clean-up, writer), for what this does in 2."""
    if not 100 <= status <= 599:
        raise ResponseHeadError(f"status {status} is not in 100-599")
    names = [name for name, _ in fields]
    if not all(names) or b"".join(names).translate(None, TCHAR):
        raise ResponseHeadError(f"a field name is not a token: {names!r}")
    if b"".join([reason, *(value for _, value in fields)]).translate(None, FIELD_VALUE_BYTES):
        raise ResponseHeadError(f"a control character in a field value or the reason: {fields!r} {reason!r}")
    lines = [b"%s: %s\r\n" % field for field in fields]
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join(lines))


# --- socket I/O ----------------------------------------------------------------------------


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
    site: Site[_D],
    worker: Worker,
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
            decision: _D | None = None
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
                    request_id=worker.new_request_id(),
                    start=time.time(),
                    server_addr=server_addr,
                )
                check_request_line(event, headers)
                try:
                    request.path = request_path(request.target, limits.encoded_slashes)
                except PathRefused as e:
                    raise Refused(e.status, str(e)) from None
                decision = site.route(request)
                length = body_length(event.http_version, headers, scanner.raw[: scanner.size])
                request.body = _read_body(conn, sock, length, decision.body_limit, limits, state)
            except (Refused, h11.RemoteProtocolError) as e:
                state("W", request)
                _refuse(sock, site, request, decision, e, limits.timeout)
                if isinstance(e, Refused) and e.status == 408:
                    linger = 0.0
                return served + (request is not None)

            state("W", request)
            exchange = _Exchange()
            give_up = partial(_last_words, exchange, sock, site, request, decision, limits.timeout)
            try:
                response = site.respond(request, decision, give_up)
            except Exception:  # last resort, behind the site's own boundary: answer, keep the worker
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
                or worker.draining()
                or (limits.max_keep_alive_requests and served >= limits.max_keep_alive_requests)
                # A prefork worker serves one connection at a time: when others are waiting
                # for a worker, this one yields after its response (unless requests are
                # already pipelined on it) instead of making them wait for KeepAliveTimeout.
                or (not pending and worker.others_waiting())
            )
            head_only = request.method == "HEAD"
            try:
                sent = _send_response(exchange, sock, head_only, response, bool(close), limits.timeout)
            except ResponseHeadError:  # nothing sent yet: answer 500 rather than nothing
                traceback.print_exc()
                close, response = True, error_response(500, _SERVER_FAULT)
                sent = _send_response(exchange, sock, head_only, response, True, limits.timeout)
            site.finished(request, decision, response, sent)
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


# Statuses whose responses have no body (RFC 9110 6.4.1); 1xx are never sent this way.
_NO_BODY = frozenset({204, 304})


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
        head = _response_head(response, len(body), close)
        exchange.begun = True
        if head_only or not len(body) or response.status in _NO_BODY:  # a guest's body for a 204 or 304 is dropped
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


def _response_head(response: Response, length: int, close: bool) -> bytes:
    """The head with the server's own fields: framing (a body always has a Content-Length) and
    whether the connection ends."""
    headers = [(b"date", http_date()), (b"server", _SERVER), *response.headers]
    if response.status not in _NO_BODY:  # a 204 has none, a 304's would be the 200's (RFC 9110 8.6)
        headers.append((b"content-length", b"%d" % length))
    if close:
        headers.append((b"connection", b"close"))
    return response_head(response.status, response.reason or reason_phrase(response.status), headers)


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
    site: Site[_D],
    request: Request | None,
    decision: _D | None,
    error: Refused | h11.RemoteProtocolError,
    timeout: float,
) -> None:
    """Answer a request we will not serve with its error status; log it when its head was read
    (a head that could not be read has nothing to log). One refused before it was routed is
    routed now, for its server's logs (with no path yet, it matches no Location)."""
    status = error.status if isinstance(error, Refused) else error.error_status_hint
    if request is not None and decision is None:
        decision = site.route(request)
    _final_response(_Exchange(), sock, site, request, decision, error_response(status, str(error)), timeout)


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
        except (_ClientGone, _TimedOut):
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
