"""Which server and which merged Location answer a request: name-based virtual host selection,
and the Location merge as a worker keeps it.

Pure: the connection's local address and port, the request's host name and normalised path in;
a `VirtualHost` (or None: the main server) and a LocationConfig (or None) out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .config import LocationConfig, Locations, VirtualHost

# Paths whose Location a worker remembers per server (see LocationIndex).
ROUTE_MEMORY = 4096


# --- the merged Locations, per worker ------------------------------------------------------------


class LocationIndex:
    """A server's Locations as a worker matches them (config.Locations is the data and merge).

    A merged result is built once per distinct set of matching sections and kept for the
    worker's life, so routing costs a scan of the sections per request, never a merge, and a
    result's identity can key what is prepared for it (handler.Routes). The result for a path is
    remembered too, up to ROUTE_MEMORY paths, then forgotten all at once: clients sending ever
    new paths cost the scan again, not memory.
    """

    __slots__ = ("_by_path", "_merged", "disk", "locations")

    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self.disk = locations.disk
        self._merged: dict[tuple[int, ...], LocationConfig | None] = {}
        self._by_path: dict[str, LocationConfig | None] = {}

    def match(self, path: str) -> LocationConfig | None:
        """The merged settings for `path` (normalised, paths.request_path); None when no section
        matches it and nothing serves at server level (no handler, DocumentRoot or Alias)."""
        try:
            return self._by_path[path]
        except KeyError:
            pass
        key = self.locations.key(path)
        if key not in self._merged:
            self._merged[key] = self.locations.merge(key) if key or self.locations.serving() else None
        if len(self._by_path) >= ROUTE_MEMORY:
            self._by_path.clear()
        found = self._by_path[path] = self._merged[key]
        return found


# --- name-based virtual hosts ------------------------------------------------------------------

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
