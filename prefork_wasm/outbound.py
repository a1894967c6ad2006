"""Outbound HTTP for wasi:http guests: which destinations a Location allows, and the request.

Nothing is allowed unless a Location says so with `WasmAllowOutbound`, whose patterns read as
Spin's `allowed_outbound_hosts`: `SCHEME://HOST[:PORT]`, where the scheme may be `*`, the
host `*` or `*.example.com` (its subdomains, not itself), and the port `*`; without a port the
scheme's own (80, 443) is meant.

The request itself is made when the guest waits for its response (a worker runs one request
at a time, so there is nothing else to do meanwhile), with `http.client`: bounded by the
guest's request options, `WasmOutboundTimeout`, what is left of `WasmTimeout`, and by
`WasmOutboundLimit` on the size of the response body.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Destination:
    """One allowed destination pattern (a WasmAllowOutbound argument)."""

    scheme: str  # 'http', 'https' or '*'
    host: str  # lowercase name or address, '*', or '*.suffix'
    port: int | None  # None: any port

    def allows(self, scheme: str, host: str, port: int) -> bool:
        if self.scheme not in ("*", scheme):
            return False
        if self.port is not None and self.port != port:
            return False
        host = host.lower().rstrip(".")
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{'*' if self.port is None else self.port}"


def parse_destination(text: str) -> Destination:
    """`SCHEME://HOST[:PORT]`; ValueError naming the expected form otherwise."""
    scheme, sep, rest = text.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in ("http", "https", "*") or not rest or "/" in rest:
        raise ValueError(f"{text!r} is not SCHEME://HOST[:PORT] (scheme http, https or *; e.g. https://api.example.com)")
    if rest.startswith("["):  # an IPv6 address
        host, _, tail = rest[1:].partition("]")
        port_text = tail.removeprefix(":") if tail.startswith(":") else None
        if tail and port_text is None:
            raise ValueError(f"{text!r}: unexpected {tail!r} after the IPv6 address")
    else:
        host, colon, port_text_or_empty = rest.rpartition(":") if ":" in rest else (rest, "", "")
        port_text = port_text_or_empty if colon else None
    if port_text == "*":
        port: int | None = None
    elif port_text is None:
        if scheme == "*":
            raise ValueError(f"{text!r}: with scheme '*' name the port, or '*' for any")
        port = DEFAULT_PORTS[scheme]
    elif port_text.isdigit() and 0 < int(port_text) < 65536:
        port = int(port_text)
    else:
        raise ValueError(f"{text!r}: the port must be 1-65535 or '*'")
    host = host.lower().rstrip(".")
    if not host or ("*" in host and host != "*" and not (host.startswith("*.") and "*" not in host[2:])):
        raise ValueError(f"{text!r}: the host must be a name, an address, '*' or '*.DOMAIN'")
    return Destination(scheme, host, port)


@dataclass(frozen=True)
class Policy:
    """What a Location allows its guest's outbound requests (fixed per Location)."""

    allowed: tuple[Destination, ...] = ()
    timeout: float = 30.0  # connect, first byte and between bytes, unless the guest asks for less
    max_body: int = 16 << 20  # bytes of a response body

    def allows(self, scheme: str, host: str, port: int) -> bool:
        return any(d.allows(scheme, host, port) for d in self.allowed)


class OutboundError(Exception):
    """A request that failed, with its wasi:http error-code (a case name, or (case, payload))."""

    def __init__(self, code: Any, detail: str) -> None:
        super().__init__(detail)
        self.code = code


@dataclass
class Upstream:
    """An upstream's answer: status, fields and the whole body (at most Policy.max_body)."""

    status: int
    headers: list[tuple[str, bytes]]
    body: bytes


@dataclass
class Timeouts:
    """Seconds for each phase (the guest's request-options, capped by the policy)."""

    connect: float
    first_byte: float
    between_bytes: float
    deadline: float = field(default=0.0)  # time.monotonic() when WasmTimeout ends

    def left(self, phase: float) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("WasmTimeout reached")
        return min(phase, remaining)


def fetch(
    scheme: str, host: str, port: int, authority: str, method: str, target: str,
    headers: list[tuple[str, bytes]], body: bytes, timeouts: Timeouts, max_body: int,
) -> Upstream:
    """Make one request; OutboundError with the matching error-code if it fails."""
    connection_class = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
    phase = "connect"
    try:
        connection = connection_class(host, port, timeout=timeouts.left(timeouts.connect))
        try:
            connection.connect()
            phase = "write"
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", authority)
            for name, value in headers:
                connection.putheader(name, value)
            if body or method not in ("GET", "HEAD", "DELETE", "OPTIONS", "TRACE"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            phase = "first-byte"
            _set_timeout(connection, timeouts.left(timeouts.first_byte))
            response = connection.getresponse()
            phase = "body"
            _set_timeout(connection, timeouts.left(timeouts.between_bytes))
            data = response.read(max_body + 1) if method != "HEAD" else b""
            if len(data) > max_body:
                raise OutboundError(
                    ("HTTP-response-body-size", None), f"the response body passes WasmOutboundLimit {max_body}"
                )
            return Upstream(response.status, [(k.lower(), v.encode("latin-1")) for k, v in response.getheaders()], data)
        finally:
            connection.close()
    except OutboundError:
        raise
    except TimeoutError as e:
        codes = {"connect": "connection-timeout", "first-byte": "HTTP-response-timeout"}
        code = codes.get(phase, "connection-read-timeout")
        raise OutboundError(code, f"{phase}: timed out") from e
    except ConnectionRefusedError as e:
        raise OutboundError("connection-refused", str(e)) from e
    except socket.gaierror as e:
        raise OutboundError(("DNS-error", (None, None)), f"cannot resolve {host}: {e.strerror}") from e
    except ssl.SSLCertVerificationError as e:
        raise OutboundError("TLS-certificate-error", str(e)) from e
    except ssl.SSLError as e:
        raise OutboundError("TLS-protocol-error", str(e)) from e
    except (http.client.HTTPException, ConnectionError) as e:
        code = "connection-terminated" if phase in ("write", "body") else "HTTP-protocol-error"
        raise OutboundError(code, f"{phase}: {type(e).__name__}: {e}") from e
    except OSError as e:
        raise OutboundError("destination-unavailable", f"{phase}: {e.strerror or e}") from e


def _set_timeout(connection: http.client.HTTPConnection, seconds: float) -> None:
    if connection.sock is not None:
        connection.sock.settimeout(seconds)


def split_authority(authority: str, scheme: str) -> tuple[str, int]:
    """'host', 'host:port' or '[v6]:port' -> (host, port); ValueError if it is none of them."""
    if authority.startswith("["):
        host, _, rest = authority[1:].partition("]")
        port_text = rest.removeprefix(":") if rest else ""
        if rest and not rest.startswith(":"):
            raise ValueError(f"invalid authority {authority!r}")
    else:
        host, _, port_text = authority.partition(":")
    if "@" in authority or not host or (port_text and not port_text.isdigit()):
        raise ValueError(f"invalid authority {authority!r}")
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise ValueError(f"invalid port in {authority!r}")
    return host, port
