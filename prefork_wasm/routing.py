"""Which server answers a request: Apache's name-based virtual host selection.

Pure: the connection's local address and port and the request's host name in, a
`VirtualHost` (or None: the main server) out. Decided here only, once per request.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .config import VirtualHost

_ABSOLUTE = re.compile(r"(?i:https?)://([^/?#]*)")


def request_host(target: str, host_header: bytes | None) -> str:
    """The name a request is addressed to, canonical: an absolute-form target's authority wins
    over the Host header (RFC 9112 3.2.2, as Apache); lower case, without port, user info or
    trailing dot. '' when there is none."""
    match = _ABSOLUTE.match(target)
    if match:
        name = match[1].rpartition("@")[2]
    elif host_header:
        name = host_header.decode("latin-1")
    else:
        return ""
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    else:
        name = name.partition(":")[0]
    return name.rstrip(".").lower()


def select_host(hosts: Sequence[VirtualHost], ip: str, port: int, name: str) -> VirtualHost | None:
    """Apache's choice. The hosts whose address is the connection's local IP are the candidates,
    else those on '*' (or _default_); a port given must be the local port. Among them, the first
    whose ServerName or a ServerAlias is `name` (from request_host); if none is, the first
    candidate (the default for that address). No candidate: None, the main server answers."""
    if not hosts:
        return None
    candidates = _on(hosts, ip, port) or _on(hosts, "", port)
    if not candidates:
        return None
    if name:
        for host in candidates:
            if host.answers(name):
                return host
    return candidates[0]


def _on(hosts: Sequence[VirtualHost], ip: str, port: int) -> list[VirtualHost]:
    """The hosts with an address for exactly `ip` ('' = '*') on `port`, or on any port."""
    return [host for host in hosts if any(a.host == ip and a.port in (port, 0) for a in host.addresses)]
