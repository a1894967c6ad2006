"""The HTTP request and response as the rest of the server sees them, free of h11 and sockets."""

from __future__ import annotations

import html
import io
import os
import ssl
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Final

SERVER_SOFTWARE = "prefork-wasm"

# RFC 9110 5.6.2 tchar, what a field name is made of: name.translate(None, TCHAR) leaves only
# the bytes that do not belong.
TCHAR: Final = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# What a response field value (or reason phrase) may hold: all but NUL, CR and LF, which would
# split the response, and VT and FF, which clients refuse (h11's rule); other controls pass, as
# h11 lets them. value.translate(None, FIELD_VALUE_BYTES) leaves only the forbidden bytes.
FIELD_VALUE_BYTES: Final = bytes(range(256)).translate(None, b"\x00\r\n\x0b\x0c")


# A request body past this size is written to a memfd as it arrives (SpooledBody), not held as bytes.
SPOOL_THRESHOLD = 1 << 20


class SpooledBody:
    """A large request body, written to a memfd as it arrives: held once, in the memfd's pages,
    never as bytes, and given to the guest as its stdin file (`path`), which wasmtime reads as
    the guest reads. Closed when the last reference goes (the request and its parser)."""

    __slots__ = ("fd", "length")

    def __init__(self) -> None:
        self.fd = os.memfd_create("prefork-wasm-body", os.MFD_CLOEXEC)
        self.length = 0

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]
        self.length += len(data)

    @property
    def path(self) -> str:
        return f"/proc/self/fd/{self.fd}"

    def __len__(self) -> int:
        return self.length

    def read(self) -> bytes:
        """The whole body as bytes, for a guest that takes it as a value (wasi:http's stream)."""
        return os.pread(self.fd, self.length, 0)

    def __del__(self) -> None:
        os.close(self.fd)


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What the TLS handshake of a request's connection settled: mod_ssl's SSL_* variables and
    %{VAR}x come from it."""

    protocol: str  # 'TLSv1.3' (SSL_PROTOCOL)
    cipher: str  # the OpenSSL name (SSL_CIPHER)
    bits: int  # secret bits (SSL_CIPHER_USEKEYSIZE)
    server_name: str  # what the client sent by SNI, '' for none (SSL_TLS_SNI)
    resumed: bool  # a resumed session (SSL_SESSION_RESUMED)
    context: ssl.SSLContext  # the context the handshake used: the SNI-chosen host's (a tls.HostContext)


@dataclass(slots=True, weakref_slot=True)  # weakly referable: tests check what keeps one alive
class Request:
    method: str
    target: str  # raw request-target, e.g. '/app/x?y=1'
    http_version: str  # '1.1'
    headers: list[tuple[bytes, bytes]]  # lowercased names, in order
    remote_addr: str
    remote_port: int
    server_port: int
    request_id: str
    start: float  # time.time() when the request head was complete
    body: bytes | SpooledBody = b""
    # The normalised, decoded path (paths.request_path), set once when the head is read: the
    # only path that routing, access control, the guest and %U see. '' matches no Location.
    path: str = ""
    server_addr: str = ""  # the connection's local IP; '' when no virtual host needs it
    head_bytes: int = 0  # the head as received (%I)
    keepalives: int = 0  # requests served on the connection before this one (%k)
    # The request's environment (Apache's subprocess_env): what a guest was given, else the
    # Location's WasmEnv. env= conditions and %{VAR}e read it; the site sets it.
    env: dict[str, str] = field(default_factory=dict)
    tls: TLSInfo | None = None  # None: plain HTTP

    @property
    def scheme(self) -> str:
        """What the request came over: 'https' on a TLS connection (REQUEST_SCHEME, the URLs the
        server makes itself), else 'http'."""
        return "http" if self.tls is None else "https"

    @property
    def query(self) -> str:
        return self.target.partition("?")[2]

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} HTTP/{self.http_version}"

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class FileBody:
    """A body sent from an open file (`length` bytes from `offset`) with sendfile, never read
    into memory; the connection closes the file once the response is written."""

    file: io.FileIO
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | memoryview | FileBody = b""
    reason: bytes = b""
    # Set by handlers for the error log and the scoreboard, never sent.
    module: str = ""
    # Set by the connection as it sends the response, for the access log (%O, %X).
    head_bytes: int = 0
    keeps_alive: bool = False
    local_error: bool = False  # an error page the server made itself (error_response)


_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"")


def error_response(status: int, detail: str = "", signature: str = "") -> Response:
    """A short HTML error page, as Apache sends one; `detail` must not leak internals.
    `signature`: ServerSignature's line ('' for none). Marked `local_error`: a page the server
    made itself (mod_headers' onsuccess actions and ErrorDocument go by it)."""
    phrase = reason_phrase(status).decode()
    text = f"<p>{html.escape(detail)}</p>\n" if detail else ""
    footer = f"<hr>\n<address>{html.escape(signature)}</address>\n" if signature else ""
    body = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>"
        f"<body>\n<h1>{phrase}</h1>\n{text}{footer}</body></html>\n"
    ).encode()
    return Response(status, [(b"Content-Type", b"text/html; charset=utf-8")], body, local_error=True)


def server_banner(tokens: str | None, version: str, platform: str) -> str:
    """What ServerTokens says of the server (the Server field, SERVER_SOFTWARE, ServerSignature):
    Prod 'prefork-wasm', Major 'prefork-wasm/0', Minor '.../0.1', Minimal '.../0.1.0', OS
    '.../0.1.0 (Linux)', Full that and `platform`'s runtime versions. None (not set): Prod,
    this server's default (Apache's is Full)."""
    match (tokens or "prod").lower():
        case "prod" | "productonly":
            return SERVER_SOFTWARE
        case "major":
            return f"{SERVER_SOFTWARE}/{version.split('.')[0]}"
        case "minor":
            return f"{SERVER_SOFTWARE}/{'.'.join(version.split('.')[:2])}"
        case "min" | "minimal":
            return f"{SERVER_SOFTWARE}/{version}"
        case "os":
            return f"{SERVER_SOFTWARE}/{version} (Linux)"
    return f"{SERVER_SOFTWARE}/{version} (Linux) {platform}"
