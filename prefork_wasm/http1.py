"""HTTP/1.1 on bytes, no socket: requests parsed by h11 behind strict checks, response heads.

h11 decides a request's framing, whether the client keeps the connection, pipelining and most
of what is malformed. The common head (an HTTP/1.1 request without a body, whole in its first
packet) is parsed by `common_head` instead, which reads only what h11 reads the same way and
leaves every other head to h11, which cost a fifth of a whole request's CPU.

This module refuses the request shapes h11 lets through but Apache or RFC 9112 do not
(`HeadScanner`, `check_request_line`, `body_length`, `ChunkedScanner`,
`transfer_coding_refusal`), applies Apache's size limits (LimitRequestLine/FieldSize/Fields,
LimitRequestBody), makes `messages.Request`s of what h11 parses (`RequestParser`), and writes
response heads (`response_head`, `framed_head`). connection.py moves the bytes between a socket
and this module, within the time limits.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

import h11

from .messages import (
    FIELD_VALUE_BYTES,
    SERVER_SOFTWARE,
    SPOOL_THRESHOLD,
    TCHAR,
    Request,
    Response,
    SpooledBody,
    reason_phrase,
)
from .paths import PathRefused, request_path
from .reqtimeout import BODY_DEFAULT, HANDSHAKE_DEFAULT, HEADER_DEFAULT, ReadTimeout

# Apache's maximum LimitRequestFields: caps the head when LimitRequestFields 0 says unlimited.
MAX_FIELDS = 32767
# Empty lines ignored before a request line (RFC 9112 2.2 says at least one); Apache's
# DEFAULT_LIMIT_BLANK_LINES. They are what old clients send after a POST body.
MAX_BLANK_LINES = 10


@dataclass(frozen=True, slots=True)
class Limits:
    """Apache's limits on a connection, from the config: the sizes are applied here, the times
    by connection.py."""

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
    handshake_read: ReadTimeout = HANDSHAKE_DEFAULT  # RequestReadTimeout handshake=... (TLS ports)


class Refused(Exception):
    """A request the server will not serve: answer `status` if the protocol still allows, then close."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class ClientGone(Exception):
    """The client closed the connection or it broke: nothing more to read, no one to answer."""


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


def check_request_line(method: bytes, target: bytes, version: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse what h11 accepts in a request line but Apache (Strict) or RFC 9112 do not."""
    if version != b"1.1" and version != b"1.0":
        if version[:1] == b"0":  # Apache: HTTP/0.9 only as a bare 'GET /', which h11 refuses
            raise Refused(400, f"Unsupported protocol HTTP/{version.decode()}.")
        if version[:1] != b"1":
            raise Refused(505, f"HTTP/{version.decode()} is not supported.")
        if not any(name == b"host" for name, _ in headers):  # h11 checks only HTTP/1.1
            raise Refused(400, "An HTTP/1.x request needs a Host header.")
    if method == b"CONNECT":  # h11 would switch protocols on a 2xx; this is no proxy
        raise Refused(501, "CONNECT is not supported: this server is not a proxy.")
    if target[:1] != b"/" and not (target == b"*" and method == b"OPTIONS") and not _ABSOLUTE_FORM.match(target):
        raise Refused(400, "Invalid request target.")
    if b"#" in target:
        raise Refused(400, "The request target must not contain a fragment.")


# RFC 3986 3.2.2 and 3.2.3: uri-host [ ":" port ], the host an IP-literal in brackets (checked
# further by `_valid_ipv6`), an IPv4 address or a reg-name.
_HOST = re.compile(
    rb"(?:\[(?P<literal>[0-9A-Fa-f:.]+|[vV][0-9A-Fa-f]+\.[-A-Za-z0-9._~!$&'()*+,;=:]+)\]"
    rb"|(?:[-A-Za-z0-9._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    rb"(?::(?P<port>[0-9]*))?"
)
_AUTHORITY = re.compile(rb"(?i:https?)://([^/?#]*)")
MAX_PORT = 65535


def check_host(target: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    """RFC 9112 3.2: 400 for more than one Host field or one whose value is not uri-host[:port]
    (user info, a path, whitespace, bytes outside ASCII, a port past 65535 or not digits), and
    the same for an absolute-form target's authority, which is what a request is addressed to
    (3.2.2). Virtual hosts and guests see only hosts that are hosts."""
    hosts = [value for name, value in headers if name == b"host"]
    if len(hosts) > 1:
        raise Refused(400, "A request must have one Host header, not several.")
    if hosts and not _valid_host(hosts[0]):
        raise Refused(400, f"Invalid Host header: expected HOST or HOST:PORT (a port up to {MAX_PORT}).")
    authority = _AUTHORITY.match(target)
    if authority and not _valid_host(authority[1]):
        raise Refused(400, f"Invalid host in the request target: expected HOST or HOST:PORT (a port up to {MAX_PORT}).")


def _valid_host(value: bytes) -> bool:
    match = _HOST.fullmatch(value)
    if match is None:
        return False
    literal, port = match["literal"], match["port"]
    if literal is not None and literal[:1] not in b"vV":
        try:
            ipaddress.IPv6Address(literal.decode("ascii"))
        except ValueError:
            return False
    return not port or (len(port) <= 5 and int(port) <= MAX_PORT)


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
_BWS = rb"[ \t]*"
# RFC 9112 7.1: chunk-size [ chunk-ext ], with the BWS that 7.1.1 says a recipient must parse
# ('5 ; name = value'); h11's own limit of 20 hex digits.
_CHUNK_LINE = re.compile(
    rb"([0-9A-Fa-f]{1,20})(?:" + _BWS + rb";" + _BWS + _TOKEN
    + rb"(?:" + _BWS + rb"=" + _BWS + rb"(?:" + _TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*"
)
_TRAILER_FIELD = re.compile(rb"(" + _TOKEN + rb"):[\t\x20-\x7e\x80-\xff]*")
# Trailer fields that would change the message's framing or routing if a proxy merged them into
# the head (RFC 9110 6.5.1): refused. Every other trailer field is discarded unread, as gunicorn
# does: trailers never reach a guest.
FORBIDDEN_TRAILERS = frozenset({b"content-length", b"transfer-encoding", b"host", b"trailer"})

_SIZE, _DATA, _DATA_END, _TRAILER = range(4)


class ChunkedScanner:
    """RFC 9112 7.1 chunked framing checked on a body's raw bytes as they arrive, before h11
    parses them (as HeadScanner does for the head).

    h11 takes anything but LF after a ';' in a chunk-size line (a bare CR, NUL, an unbalanced
    quote), whitespace after the size, and trailer fields of any name. A proxy that ends lines at
    a bare CR frames '41;a=b\\r\\r\\n...' differently from h11: request smuggling. Here a
    chunk-size line is exactly hex digits then `;token[=token|quoted-string]` extensions (with the
    BWS RFC 9112 7.1.1 allows around ';' and '='), chunk data ends with CRLF, lines end with CRLF
    and are LimitRequestFieldSize bytes at most (as in Apache), and the trailer has at most
    LimitRequestFields well-formed fields, none of FORBIDDEN_TRAILERS.

    h11 refuses BWS before the first ';', so `forward` is what h11 gets of each `feed`: the same
    bytes (the data itself is only counted, never copied), except that a chunk-size line goes on
    whole once it is complete, and without its extensions when it has that BWS.
    """

    __slots__ = ("_field_limit", "_fields", "_line", "_remaining", "_state", "_trailers", "done", "forward")

    def __init__(self, limits: Limits) -> None:
        self._field_limit = limits.field_size
        self._fields = limits.fields
        self._state = _SIZE
        self._line = bytearray()  # the current unfinished line
        self._remaining = 0  # bytes of the current chunk's data still to come
        self._trailers = 0
        self.done = False  # the empty line that ends the trailer was seen
        self.forward = b""  # what h11 is to parse of the bytes last fed

    def feed(self, data: bytes) -> int:
        """Check the next bytes; returns how many belong to the body (once `done`, the rest of
        `data` is the next request's) and sets `forward`. Raises Refused for the first rule broken."""
        pos, end = 0, len(data)
        view = memoryview(data)
        out: list[bytes | memoryview] = []  # `forward` in pieces, once it is not `data` itself
        mark = 0  # data[mark:] is not in `out` yet
        while pos < end and not self.done:
            if self._state == _DATA:
                take = min(self._remaining, end - pos)
                pos += take
                self._remaining -= take
                if not self._remaining:
                    self._state = _DATA_END
                continue
            start, held = pos, bool(self._line)  # held: the line began in an earlier feed
            size_line = self._state == _SIZE
            lf = data.find(b"\n", pos)
            self._line += data[pos : end if lf < 0 else lf]
            if len(self._line) > self._field_limit + 1:  # +1: the line's CR may be in
                raise Refused(
                    431 if self._state == _TRAILER else 400, "A line of the chunked body exceeds LimitRequestFieldSize."
                )
            if lf < 0:
                pos = end
                if size_line:  # h11 gets it once it is whole
                    out.append(view[mark:start])
                    mark = end
                break
            pos = lf + 1
            line, self._line = self._line, bytearray()
            if line[-1:] != b"\r":
                raise Refused(400, "Lines of a chunked body must end with CRLF, not a bare LF.")
            instead = self._end_line(bytes(line[:-1]))
            if size_line and (held or instead is not None):
                out += [view[mark:start], instead or bytes(line) + b"\n"]
                mark = pos
        if mark:
            out.append(view[mark:])
            self.forward = b"".join(out)
        else:
            self.forward = data
        return pos

    def _end_line(self, line: bytes) -> bytes | None:
        """Check a complete line (CRLF taken off); for a chunk-size line with BWS before its
        first ';', the line h11 is to get instead."""
        if self._state == _SIZE:
            match = _CHUNK_LINE.fullmatch(line)
            if not match:
                raise Refused(400, "Invalid chunk-size line: hex digits, then only ;name[=value] extensions.")
            self._remaining = int(match[1], 16)
            self._state = _DATA if self._remaining else _TRAILER
            if match.end(1) < len(line) and line[match.end(1)] in b" \t":
                return match[1] + b"\r\n"
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
        return None


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


_BODY_TOO_LARGE = "The request body is larger than LimitRequestBody."


# The common request head, parsed here rather than by h11, which costs twenty times as much (a
# fifth of a whole request's CPU): an HTTP/1.1 request line, and fields with nothing that frames
# a body, switches protocols or waits for 100 Continue. Whatever else a head holds, h11 parses.
_COMMON_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1")
_FIELD_NAME = re.compile(_TOKEN)
_NOT_COMMON = frozenset({b"content-length", b"transfer-encoding", b"expect", b"upgrade"})


@dataclass(frozen=True, slots=True)
class CommonHead:
    """A head `common_head` parsed: what h11's Request would hold (names lowercased), and whether
    the client closes after this request (Connection: close)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    closes: bool


def common_head(head: bytes) -> CommonHead | None:
    """`head` (the request line and fields, without the CRLFs that end the last) exactly as h11
    would parse it, if it is of the common shape; None for anything else, which h11 parses.

    Only what h11 accepts and reads the same way is taken: every CR and LF in a CRLF, no control
    character, a token method and a visible-ASCII target, HTTP/1.1, token field names with
    values stripped of spaces and tabs, one Host field. A body's framing (Content-Length,
    Transfer-Encoding), Expect, Upgrade and CONNECT change h11's course, so they are left to it.
    tests/unit/test_http1.py holds the two to the same answers on hostile and random heads.
    """
    lines = head.split(b"\r\n")
    if head.count(b"\r") != len(lines) - 1 or head.count(b"\n") != len(lines) - 1 or _CONTROL.search(head):
        return None
    line = _COMMON_REQUEST_LINE.fullmatch(lines[0])
    if line is None or line[1] == b"CONNECT":
        return None
    fields = []
    hosts = 0
    closes = False
    for field in lines[1:]:
        name, colon, value = field.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            return None
        name = name.lower()
        if name in _NOT_COMMON:
            return None
        value = value.strip(b" \t")
        if name == b"host":
            hosts += 1
        elif name == b"connection":
            closes = closes or b"close" in [token.strip() for token in value.lower().split(b",")]
        fields.append((name, value))
    if hosts != 1:
        return None
    return CommonHead(line[1], line[2], fields, closes)


class RequestParser:
    """One connection's requests, made of the bytes it receives: each head checked by a
    HeadScanner and each chunked body by a ChunkedScanner before h11 parses them (a head of
    the common shape, `common_head`, without one), each head made a messages.Request. What
    h11 or the checks refuse is raised as Refused.

    The socket layer feeds it bytes and is told what they make (`head`, `body`); it decides
    nothing about their contents.
    """

    __slots__ = (
        "_body", "_chunked", "_conn", "_headers", "_limit", "_limits", "_max_head", "_method", "_peer", "_requests",
        "_server_addr", "_server_port", "_size", "_spool", "_target", "_version", "client_closes", "closed",
        "ready_for_next", "scanner", "trailing",
    )

    def __init__(self, limits: Limits, peer: tuple[str, int], server_port: int, server_addr: str) -> None:
        self._limits = limits
        self._max_head = max_head_size(limits)
        self._peer = peer
        self._server_port = server_port
        self._server_addr = server_addr  # the local IP the client connected to
        self._requests = 0  # heads made Requests on this connection

    def next_request(self) -> None:
        """Start on the next request; h11 state is made fresh when a head needs it (`head`): the
        empty lines `HeadScanner` skips before a pipelined request must not reach h11, which
        would hold them in its buffer."""
        self._conn: h11.Connection | None = None
        self.scanner = HeadScanner(self._limits)
        self.closed = False  # the client closed instead of sending a head

    def head(self, data: bytes, eof: bool) -> bool:
        """Feed the next bytes of a head (`eof`: the client closed after them); whether it is done:
        all of it is here (`request` makes it a Request) or the client closed first (`closed`).
        Until a head begins, `scanner.raw` is empty: empty lines before the request line are
        skipped. A head whose first bytes complete it is parsed by `common_head` if it can be;
        h11 parses any other from its first bytes on."""
        scanner = self.scanner
        skip = scanner.feed(data)
        conn = self._conn
        if conn is None:
            if scanner.done and self._common(eof):
                return True
            if not scanner.raw and not eof:
                return False  # only empty lines so far
            conn = self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
            if scanner.raw:
                conn.receive_data(bytes(scanner.raw))
        elif skip < len(data):
            conn.receive_data(data[skip:] if skip else data)
        if eof:
            conn.receive_data(b"")
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as e:
            if e.error_status_hint == 501:
                raise transfer_coding_refusal(bytes(self.scanner.raw)) from None
            raise Refused(e.error_status_hint, str(e)) from None
        if event is h11.NEED_DATA:
            return False
        if isinstance(event, h11.ConnectionClosed):
            self.closed = True
        else:
            assert isinstance(event, h11.Request)  # what h11 yields for an idle client
            self._method, self._target, self._version = event.method, event.target, event.http_version
            self._headers = list(event.headers)
        return True

    def _common(self, eof: bool) -> bool:
        """Parse the whole head with `common_head`; whether it could. Such a request has no body:
        what follows its head is the next request's."""
        scanner = self.scanner
        head = common_head(bytes(scanner.raw[: scanner.size - 4]))
        if head is None:
            return False
        self._method, self._target, self._version, self._headers = head.method, head.target, b"1.1", head.headers
        self.trailing = (bytes(scanner.raw[scanner.size:]), eof)
        self.client_closes = head.closes
        self.ready_for_next = not head.closes
        return True

    def request(self, request_id: str) -> Request:
        """The head as a Request, not checked yet (`check`): a refused one is still logged."""
        peer = self._peer
        self._requests += 1
        return Request(
            method=self._method.decode("ascii"),
            target=self._target.decode("latin-1"),
            http_version=self._version.decode("ascii"),
            headers=self._headers,
            remote_addr=peer[0],
            remote_port=peer[1],
            server_port=self._server_port,
            request_id=request_id,
            start=time.time(),
            server_addr=self._server_addr,
            head_bytes=self.scanner.size,
            keepalives=self._requests - 1,
        )

    def check(self, request: Request) -> int | None:
        """Refuse what h11 accepted in the head but Apache or RFC 9112 do not, and set the
        request's path; returns its body's declared size (`body_length`)."""
        check_request_line(self._method, self._target, self._version, request.headers)
        check_host(self._target, request.headers)
        try:
            request.path = request_path(request.target, self._limits.encoded_slashes)
        except PathRefused as e:
            raise Refused(e.status, str(e)) from None
        scanner = self.scanner
        return body_length(self._version, request.headers, scanner.raw[: scanner.size])

    def start_body(self, length: int | None, limit: int) -> None:
        """Expect a body of `length` bytes (None: chunked) and at most `limit` (LimitRequestBody,
        0 = none): a Content-Length over it is refused (413) before any of the body is read, the
        part of a chunked body that came with the head is checked."""
        if limit and length is not None and length > limit:
            raise Refused(413, _BODY_TOO_LARGE)
        self._limit = limit
        self._size = 0
        self._body: list[bytes] = []
        self._spool: SpooledBody | None = None  # past SPOOL_THRESHOLD bytes, the body goes here
        self._chunked = ChunkedScanner(self._limits) if length is None else None
        if self._chunked is not None:
            self._forward_chunked()

    def _forward_chunked(self) -> None:
        """Check the part of a chunked body that came with the head, which h11 holds. Should h11
        have to parse it otherwise (`ChunkedScanner.forward`), it parses the head again first: a
        fresh h11 state is the only way to replace bytes it holds. Rare: BWS in a chunk-size line."""
        assert self._chunked is not None and self._conn is not None  # chunked: never a common head
        held, closed = self._conn.trailing_data
        self._chunked.feed(held)
        if self._chunked.forward is held:
            return
        scanner = self.scanner
        self._conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self._max_head)
        self._conn.receive_data(bytes(scanner.raw[: scanner.size]))
        self._conn.next_event()  # the same Request as before
        if self._chunked.forward:  # (b'' would say the client closed)
            self._conn.receive_data(self._chunked.forward)
        if closed:
            self._conn.receive_data(b"")

    @property
    def expects_continue(self) -> bool:
        """The client waits for a 100 Continue before it sends the body."""
        return self._conn is not None and self._conn.they_are_waiting_for_100_continue

    def feed_body(self, data: bytes) -> None:
        """The next bytes of the body (b'': the client closed)."""
        if self._chunked is not None and data:
            self._chunked.feed(data)
            data = self._chunked.forward
            if not data:  # a chunk-size line not yet whole: h11 waits for it
                return
        assert self._conn is not None  # a common head has no body to feed
        self._conn.receive_data(data)

    def body(self) -> bytes | SpooledBody | None:
        """The whole body once h11 has it; None while it needs more bytes. Over the limit it is
        refused (413) as soon as it passes it, without reading the excess. A body past
        SPOOL_THRESHOLD is written to a memfd as it comes (SpooledBody). With the body come
        `trailing` (what the client sent after the request, and whether it then closed),
        `client_closes` (the request said close, or is HTTP/1.0 without keep-alive) and
        `ready_for_next`."""
        conn = self._conn
        if conn is None:  # a common head: no body, and `trailing` and the rest were set with it
            return b""
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as e:
                raise Refused(e.error_status_hint, str(e)) from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Data):
                self._size += len(event.data)
                if self._limit and self._size > self._limit:
                    raise Refused(413, _BODY_TOO_LARGE)
                if self._spool is not None:
                    self._spool.write(event.data)
                    continue
                self._body.append(event.data)
                if self._size > SPOOL_THRESHOLD:
                    self._spool = SpooledBody()
                    for data in self._body:
                        self._spool.write(data)
                    self._body = []
            elif isinstance(event, h11.EndOfMessage):
                self.trailing = conn.trailing_data
                after = conn.their_state
                self.client_closes = after is h11.MUST_CLOSE
                # h11 has the client ready for another request (DONE), or not: it closes, or it
                # asked for an Upgrade (MIGHT_SWITCH_PROTOCOL), which this server never grants.
                self.ready_for_next = after is h11.DONE
                return self._spool if self._spool is not None else b"".join(self._body)
            else:  # ConnectionClosed: h11 raises for a body cut short, so only after a complete one
                raise ClientGone()


class ResponseHeadError(ValueError):
    """A response field that must not be sent: a server fault (guests' fields are checked
    earlier, by cgi.py, and answered 502)."""


def response_head(status: int, reason: bytes, fields: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The status line and header fields of a response: the one place a head is made, so the
    one place it is checked. A name must be a token; no value, nor the reason, may hold a byte
    that ends a line (or NUL, VT, FF), whoever made it: a head cannot be split.

    h11 parses requests, but does not write responses: its send side (event, state machine,
    header clean-up, writer) cost several times what this does."""
    if not 100 <= status <= 599:
        raise ResponseHeadError(f"status {status} is not in 100-599")
    names = [name for name, _ in fields]
    if not all(names) or b"".join(names).translate(None, TCHAR):
        raise ResponseHeadError(f"a field name is not a token: {names!r}")
    if b"".join([reason, *(value for _, value in fields)]).translate(None, FIELD_VALUE_BYTES):
        raise ResponseHeadError(f"a control character in a field value or the reason: {fields!r} {reason!r}")
    lines = [b"%s: %s\r\n" % field for field in fields]
    return b"HTTP/1.1 %d %s\r\n%s\r\n" % (status, reason, b"".join(lines))


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
_SERVER = [SERVER_SOFTWARE.encode()]  # the Server field: ServerTokens (set_server_tokens)


def set_server_tokens(banner: str) -> None:
    """ServerTokens: the Server field of every response this process sends (set once, by the
    worker's site, before it serves)."""
    _SERVER[0] = banner.encode("latin-1", "replace")

# Statuses whose responses have no body (RFC 9110 6.4.1); 1xx are never sent this way.
_NO_BODY = frozenset({204, 304})
CONTINUE = response_head(100, b"Continue", [])


def framed_head(response: Response, head_only: bool, close: bool) -> tuple[bytes, bool]:
    """The head with the server's own fields: framing (a body always has a Content-Length) and
    whether the connection ends; and whether the body follows it (not for HEAD, and a guest's
    body for a 204 or 304 is dropped)."""
    length = len(response.body)
    status = response.status
    headers = [(b"Date", http_date()), (b"Server", _SERVER[0]), *response.headers]
    if status not in _NO_BODY:  # a 204 has none, a 304's would be the 200's (RFC 9110 8.6)
        headers.append((b"Content-Length", b"%d" % length))
    if close:
        headers.append((b"Connection", b"close"))
    head = response_head(status, response.reason or reason_phrase(status), headers)
    return head, not head_only and length > 0 and status not in _NO_BODY
