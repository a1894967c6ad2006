"""The HTTP request and response as the rest of the server sees them, free of h11 and sockets."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from http import HTTPStatus

SERVER_SOFTWARE = "prefork-wasm"


@dataclass(slots=True)
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
    body: bytes = b""

    @property
    def path(self) -> str:
        """What the server routes on: the target's path, also for an absolute-form target."""
        path = self.target.partition("?")[0]
        return path if path[:1] == "/" else origin_path(path)

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


def origin_path(path: str) -> str:
    """Reduce an absolute-form target ('http://host/p', RFC 9112 3.2.2) to its path, which a
    server must accept (Apache routes it like '/p')."""
    sep = path.find("://")
    if sep < 0:
        return path  # '*' (asterisk-form) or garbage: leave it to the prefix check
    slash = path.find("/", sep + 3)
    return "/" if slash < 0 else path[slash:]


@dataclass(slots=True)
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes | memoryview = b""
    reason: bytes = b""
    # Set by handlers for the error log and the scoreboard, never sent.
    module: str = ""


_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


def reason_phrase(status: int) -> bytes:
    return _PHRASES.get(status, b"")


def error_response(status: int, detail: str = "") -> Response:
    """A short HTML error page, as Apache sends one; `detail` must not leak internals."""
    phrase = reason_phrase(status).decode()
    text = f"<p>{html.escape(detail)}</p>\n" if detail else ""
    body = (
        f"<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head>"
        f"<body>\n<h1>{phrase}</h1>\n{text}</body></html>\n"
    ).encode()
    return Response(status, [(b"content-type", b"text/html; charset=utf-8")], body)
