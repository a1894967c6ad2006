"""One decision per request: which server answers it, which merged Location, which file on
disk under which directory settings, whether the client may have it, and what answers it.

Apache's request.c makes the same decision as fixed phases over one request record; so does
`Router.route`, each phase a short function:

1. the server: name-based virtual hosts (`Router.select_server`);
2. the location walk: every <Location> matching the path, merged (`LocationIndex.match`);
3. translate name and map to storage, with the directory walk: a Location without a handler
   maps its URL to a file (filemap.py) under that file's <Directory>/<Files> settings
   (dirconfig.py) (`map_to_storage`);
4. access check: Require, of the Location or of the file's settings (config.require_allows);
5. choose handler: what answers (a guest, a script, a file with its content type, a listing,
   a redirect, a server page, or a refusal) (`Router.choose_handler`, `choose_file_handler`).

The result is one immutable `Decision`, made before the body is read (it says the body limit).
No sockets, no processes, nothing of Wasm; the only I/O is the walk's stat calls.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from . import redirects, static
from .config import (
    LocationConfig,
    Locations,
    ServerConfig,
    VirtualHost,
    canonical_name,
    require_allows,
)
from .dirconfig import DirSettings, DiskSection, settings_for
from .filemap import Mapped, Unmapped, resolve
from .logs import AccessLog, ErrorLog
from .messages import Request

WASM_HANDLER = "wasm-handler"

# Paths whose Location a worker remembers per server (see LocationIndex).
ROUTE_MEMORY = 4096

NOT_FOUND_TEXT = "The requested URL was not found on this server."
FORBIDDEN_TEXT = "You don't have permission to access this resource."
BAD_REQUEST_TEXT = "Your browser sent a request that this server could not understand."
MISDIRECTED_TEXT = (  # Apache's page for 421
    "The client needs a new connection for this request as the requested host name does not match "
    "the Server Name Indication (SNI) in use for this connection."
)
NO_SNI_TEXT = (  # mod_ssl's error-notes beside the 403's text (SSLStrictSNIVHostCheck)
    f"{FORBIDDEN_TEXT} Reason: The client software did not provide a hostname using Server Name "
    f"Indication (SNI), which is required to access this server."
)
GONE_TEXT = (
    "The requested resource is no longer available on this server and there is no forwarding address. "
    "Please remove all references to this resource."
)


# --- what answers a request ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunGuest:
    """SetHandler wasm-handler: the Location's module answers."""


@dataclass(frozen=True, slots=True)
class RunScript:
    """A file on disk whose handler is wasm-handler: the module runs it, as mod_cgi a script."""

    script: Mapped


@dataclass(frozen=True, slots=True)
class SendFile:
    """Apache's default handler: the file itself."""

    file: Path
    content_type: str | None  # None: no Content-Type header (an unknown extension)
    etag: frozenset[str] = static.DEFAULT_ETAG  # FileETag: what its ETag is made of


@dataclass(frozen=True, slots=True)
class Trace:
    """TraceEnable On or extended: core answers TRACE with the request it received."""


@dataclass(frozen=True, slots=True)
class ListDirectory:
    """Options Indexes: a directory without an index file, listed."""

    directory: Path
    url: str


@dataclass(frozen=True, slots=True)
class Redirect:
    """mod_dir: a directory asked for without its trailing slash (301 to the URL with it); or a
    mod_alias Redirect (`status` 3xx; a '/path' location is made absolute by the site)."""

    location: bytes
    status: int = 301


@dataclass(frozen=True, slots=True)
class ServerPage:
    """A handler that answers from the server's own state: server-status, metrics, health."""

    name: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Nothing to serve (404) or not for this client (403)."""

    status: int
    text: str


@dataclass(frozen=True, slots=True)
class Fault:
    """What the server cannot do for this request (a config it could not check up front, a
    bug): answered 500, with `cause` in the error log."""

    cause: str


Target = RunGuest | RunScript | SendFile | ListDirectory | Redirect | ServerPage | Refusal | Fault | Trace

RUN_GUEST = RunGuest()
NOT_FOUND = Refusal(404, NOT_FOUND_TEXT)
FORBIDDEN = Refusal(403, FORBIDDEN_TEXT)
GONE = Refusal(410, GONE_TEXT)
TRACE = Trace()
TRACE_OFF = Refusal(405, "The requested method TRACE is not allowed for this URL.")
TRACE_BODY_LIMIT = 65536  # TraceEnable extended: Apache's limit on the body it echoes


# --- the record --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Server:
    """One server a request can reach, the main one (`host` None) or a <VirtualHost>, with what
    is its own: its Locations, its logs, and its name as %v logs it."""

    host: VirtualHost | None
    name: str
    locations: LocationIndex
    access_logs: tuple[AccessLog, ...]  # its own, or the main server's if it has none (Apache's)
    error_log: ErrorLog


class Decision(NamedTuple):
    """Everything routing decided about one request; made once, read by whatever answers and
    logs it. A named tuple: immutable, and built without a frozen dataclass's setattr per
    field, once per request."""

    server: Server
    location: LocationConfig | None  # None: no Location serves the path (or it has none)
    settings: DirSettings | None  # the file's merged <Directory>/<Files> settings, when mapped to one
    target: Target
    body_limit: int  # LimitRequestBody, 0 = unlimited


# --- the merged Locations, per worker ------------------------------------------------------------


class LocationIndex:
    """A server's Locations as a worker matches them (config.Locations is the data and merge).

    A merged result is built once per distinct set of matching sections and kept for the
    worker's life, so routing costs a scan of the sections per request, never a merge, and a
    result's identity can key what is prepared for it (site.Guests). The result for a path is
    remembered too, up to ROUTE_MEMORY paths, then forgotten all at once: clients sending ever
    new paths cost the scan again, not memory.
    """

    __slots__ = ("_by_path", "_merged", "defaults", "disk", "locations")

    def __init__(self, locations: Locations) -> None:
        self.locations = locations
        self.disk = locations.disk
        # The server's own settings, for a request no Location serves (its ErrorDocument, Header).
        self.defaults = locations.merge(())
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


# --- the phases ----------------------------------------------------------------------------------


class Router:
    """A worker's routing: one `Decision` per request, from the config and the worker's caches."""

    def __init__(
        self,
        config: ServerConfig,
        access_logs: Sequence[AccessLog],
        error_log: ErrorLog,
        pages: Collection[str],
    ) -> None:
        self.config = config
        self.pages = {name: ServerPage(name) for name in pages}
        main_logs = tuple(log for log in access_logs if log.host is None)
        self.main = Server(
            None, canonical_name(config.server_name or ""), LocationIndex(config.routes), main_logs, error_log
        )
        self.hosts = {
            id(host): Server(
                host,
                host.server_name,
                LocationIndex(host.routes),
                tuple(log for log in access_logs if log.host == index) or main_logs,
                error_log.hosts.get(index, error_log),
            )
            for index, host in enumerate(config.virtual_hosts)
        }

    def route(self, request: Request) -> Decision:
        """Decide `request` (its head read, its path normalised; '' matches no Location). Any
        failure on the way is a Fault: the request's answer, not the worker's end."""
        server = self.select_server(request)
        if request.tls is not None:
            misdirected = self.check_sni(request, server)
            if misdirected is not None:
                return Decision(server, None, None, misdirected, 0)
        if request.method == "TRACE":  # answered by core, whatever the URL (TraceEnable)
            if self.config.trace_enable == "off":
                return Decision(server, None, None, TRACE_OFF, 0)
            return Decision(server, None, None, TRACE, TRACE_BODY_LIMIT)
        return self.decide(request, server, request.path, fallback=True)

    def check_sni(self, request: Request, server: Server) -> Refusal | None:
        """mod_ssl's rule for a request on a TLS connection (ssl_hook_ReadReq, Apache 2.4): with
        SNI, a request without a host name is 400, and one whose Host chose another server than
        SNI did is 421 Misdirected Request unless the two servers' TLS settings are compatible
        (TLSSettings.compatible); without SNI, a request to a <VirtualHost> is 403 when that host
        or the one that made the handshake (the address's default) has SSLStrictSNIVHostCheck on."""
        tls = request.tls
        assert tls is not None
        handshake = getattr(tls.context, "settings", None)
        settings = server.host.tls if server.host is not None else self.config.tls
        if tls.server_name:
            if not request_host(request.target, request.header(b"host")):
                server.error_log.error(f"AH02031: Hostname {tls.server_name} provided via SNI, but no hostname "
                                       f"provided in HTTP request", "ssl")
                return Refusal(400, BAD_REQUEST_TEXT)
            if getattr(tls.context, "host", server.host) is not server.host and not (
                handshake is not None and handshake.compatible(settings)
            ):
                server.error_log.error(f"AH02032: Hostname {tls.server_name} provided via SNI and hostname "
                                       f"{request_host(request.target, request.header(b'host'))} provided via HTTP "
                                       f"have no compatible SSL setup", "ssl")
                return Refusal(421, MISDIRECTED_TEXT)
        elif server.host is not None and (settings.strict_sni or (handshake is not None and handshake.strict_sni)):
            server.error_log.info("AH02033: No hostname was provided via SNI for a name based virtual host", "ssl")
            return Refusal(403, NO_SNI_TEXT)
        return None

    def decide(self, request: Request, server: Server, path: str, fallback: bool) -> Decision:
        """The phases for `path` on `server`: `request`'s own, or the local URL that answers for
        it (FallbackResource, whose own misses are not sent on again: `fallback` False; an
        ErrorDocument's)."""
        loc = None
        try:
            loc = server.locations.match(path) if path else None  # the location walk
            if loc is None:
                return Decision(server, None, None, NOT_FOUND, 0)
            limit, addr = loc.limit_request_body, request.remote_addr
            redirect = self.redirect(loc, path, request, in_location=False)  # translate name
            if redirect is not None:
                return Decision(server, loc, None, redirect, limit)
            if loc.handler is not None:  # SetHandler: nothing on disk to map
                if not require_allows(loc.require, addr):
                    return Decision(server, loc, None, FORBIDDEN, limit)
                target = self.redirect(loc, path, request, in_location=True) or self.choose_handler(loc)
                return Decision(server, loc, None, target, limit)
            mapped = map_to_storage(path, loc, server.locations.disk, addr)
            if isinstance(mapped, Refusal):
                redirect = self.redirect(loc, path, request, in_location=True) if mapped.status == 404 else None
                return Decision(server, loc, None, redirect or mapped, limit)
            if isinstance(mapped, Fallback):
                redirect = self.redirect(loc, path, request, in_location=True)
                if redirect is not None or not fallback:
                    return Decision(server, loc, None, redirect or NOT_FOUND, limit)
                return self.fall_back(request, server, mapped.url)
            settings = mapped.settings  # access check, on the file's merged settings:
            if not require_allows(settings.require, addr):
                return Decision(server, loc, settings, FORBIDDEN, limit)
            target = self.redirect(loc, path, request, in_location=True) or self.choose_file_handler(
                request, mapped, loc.file_etag
            )
            return Decision(server, loc, settings, target, limit)
        except Exception as e:
            fault = Fault(f"internal error: {cause(e)}")
            return Decision(server, loc, None, fault, loc.limit_request_body if loc else 0)

    def fall_back(self, request: Request, server: Server, url: str) -> Decision:
        """mod_dir's FallbackResource: what maps to nothing is answered by the local URL's file
        (a front controller), found as a request for it would be; the request keeps its own URI
        (REQUEST_URI), as Apache's fast internal redirect keeps it. A local URL that answers
        nothing itself is a 404."""
        decision = self.decide(request, server, url.partition("?")[0], fallback=False)
        return decision._replace(target=NOT_FOUND) if isinstance(decision.target, Redirect) else decision

    def redirect(
        self, loc: LocationConfig, path: str, request: Request, in_location: bool
    ) -> Redirect | Refusal | None:
        """mod_alias: the first Redirect or RedirectMatch of the phase that matches (those given
        at server level before the access check, those of a <Location> after it). A target
        that is a path gets this server's scheme and name, as Apache adds them."""
        if not loc.redirects:
            return None
        found = redirects.find(loc.redirects, path, request.query, in_location)
        if found is None:
            return None
        rule, target = found
        if not 300 <= rule.status <= 399:
            return GONE if rule.status == 410 else Refusal(rule.status, "")
        if target.startswith("/"):
            host = request.header(b"host")
            name = host.decode("latin-1") if host else self.config.server_name or request.server_addr
            target = f"{request.scheme}://{name}{target}"
        return Redirect(target.encode("utf-8"), rule.status)

    def select_server(self, request: Request) -> Server:
        """Which server answers: Apache's name-based virtual host choice."""
        hosts = self.config.virtual_hosts
        if not hosts:
            return self.main
        name = request_host(request.target, request.header(b"host"))
        host = select_host(hosts, request.server_addr, request.server_port, name)
        return self.main if host is None else self.hosts[id(host)]

    def choose_handler(self, loc: LocationConfig) -> Target:
        """What answers for a Location's SetHandler: a server page or its guest."""
        page = self.pages.get(loc.handler or "")
        if page is not None:
            return page
        if loc.handler == WASM_HANDLER and loc.module is None:  # a <LocationMatch> merge -t could not see
            return Fault(f"SetHandler wasm-handler without a WasmModule at {loc.source}")
        return RUN_GUEST

    def choose_file_handler(self, request: Request, mapped: Mapped, etag: frozenset[str]) -> Target:
        """What answers for what a URL names on disk: a file through its handler (AddHandler,
        SetHandler in <Files>) or as is with its content type, a directory's listing, or the
        trailing-slash redirect."""
        settings = mapped.settings
        if mapped.kind == "slash":
            query = f"?{request.query}" if request.query else ""
            return Redirect((quote(mapped.url, safe="/!$&'()*+,;=:@~") + query).encode())
        if mapped.kind == "listing":
            return ListDirectory(mapped.file, mapped.url) if "Indexes" in settings.options else FORBIDDEN
        handler = settings.handler_for(mapped.file.name)
        if handler == WASM_HANDLER:
            return RunScript(mapped)
        if handler is not None:  # a page, or one prefork-wasm lacks (AddHandler cgi-script): never the source
            return self.pages.get(handler, FORBIDDEN)
        if mapped.path_info:  # Apache's default handler takes no PATH_INFO (AcceptPathInfo Default)
            return NOT_FOUND
        table = static.type_table(self.config.types_config)
        return SendFile(mapped.file, static.content_type(mapped.file.name, settings.add_types, table), etag)


@dataclass(frozen=True, slots=True)
class Fallback:
    """A URL that maps to nothing where FallbackResource names the local URL that answers it."""

    url: str


def map_to_storage(
    path: str, loc: LocationConfig, disk: list[DiskSection], addr: str
) -> Mapped | Refusal | Fallback:
    """Translate name and map to storage: the URL to a file under DocumentRoot or an Alias,
    walked a directory at a time with each directory's merged <Directory>/<Files> settings (the
    directory walk, which also judges symlinks). A URL naming nothing servable is 404 (or the
    FallbackResource of the deepest directory reached), or 403 when refused, or when that
    directory denies `addr` (so a denied tree does not reveal which names exist in it)."""

    def settings_at(directory: str, name: str | None) -> DirSettings:
        return settings_for(loc, disk, directory, name)

    try:
        return resolve(path, loc, settings_at)
    except Unmapped as e:
        if e.status == 403:
            return FORBIDDEN
        settings = settings_at(e.directory, None) if e.directory is not None else None
        if settings is not None and not require_allows(settings.require, addr):
            return FORBIDDEN
        fallback = settings.fallback_resource if settings is not None else loc.fallback_resource
        return Fallback(fallback) if fallback else NOT_FOUND


def cause(error: Exception) -> str:
    """An unexpected exception in one line: its type, message and where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{where}"


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
