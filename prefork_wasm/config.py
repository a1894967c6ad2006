"""Read an httpd.conf-style configuration into a ServerConfig.

Apache's syntax is kept (Define, IfDefine, Include, <Location>, prefork and
mod_wasm directive names, Apache's defaults) so existing habits and configs
carry over.  Unlike Apache, everything is checked up front and every error
names the file, the line, the directive and the fix, because a pre-fork
server that dies in its children is much harder to debug than one that
refuses to start.

This module is pure logic: it reads files and never opens sockets or
compiles modules.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import glob
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .dirconfig import (
    DEFAULT_OPTIONS,
    INERT_OPTIONS,
    DiskSection,
    apply_options,
    check_pattern,
    parse_options,
    wasm_overrides,
)
from .logs import FormatError, compile_format
from .outbound import Destination, Policy, parse_destination
from .paths import ENCODED_SLASHES
from .privileges import group_id, user_id
from .reqtimeout import BODY_DEFAULT, HEADER_DEFAULT, ReadTimeout, parse_phase

_T = TypeVar("_T")
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network

PREDEFINED_LOG_FORMATS: dict[str, str] = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
}
LOG_LEVELS = (*["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"], *(f"trace{n}" for n in range(1, 9)))
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MAX_SERVER_LIMIT = 20000  # Apache prefork's compile-time MAX_SERVER_LIMIT
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class ConfigError(Exception):
    """A configuration mistake, located so the user can go straight to it.

    str(e) is 'FILE:LINE: Directive: message'; LINE is 1-based, and for
    whole-file problems (line 0) it is left out: 'FILE: message'.
    """

    def __init__(self, file: str, line: int, message: str, directive: str | None = None) -> None:
        self.file = file
        self.line = line
        self.message = message
        self.directive = directive
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {directive}: {message}" if directive else f"{where}: {message}")


MAX_ERRORS = 20  # -t lists this many, then stops: later ones are mostly echoes of the first


class ConfigErrors(ConfigError):
    """Every error one read of the config found (up to MAX_ERRORS), in file order, so a config
    is fixed in one pass rather than one `-t` per error. The attributes are the first's."""

    def __init__(self, errors: list[ConfigError], stopped: bool) -> None:
        first = errors[0]
        super().__init__(first.file, first.line, first.message, first.directive)
        self.errors = errors
        self.stopped = stopped

    def __str__(self) -> str:
        more = [f"stopped after {MAX_ERRORS} errors; fix these and run -t again"] if self.stopped else []
        return "\n".join([*(str(error) for error in self.errors), *more])


# Apache modules whose work prefork-wasm does itself, by identifier and source file name (both
# name a module in <IfModule>). They count as compiled in: <IfModule> is true for them with or
# without LoadModule.
PROVIDED_MODULES: dict[str, str] = {
    "core_module": "core.c",
    "so_module": "mod_so.c",
    "http_module": "http_core.c",
    "mpm_prefork_module": "prefork.c",
    "unixd_module": "mod_unixd.c",  # User, Group
    "authz_core_module": "mod_authz_core.c",  # Require all granted|denied
    "authz_host_module": "mod_authz_host.c",  # Require local|ip
    "log_config_module": "mod_log_config.c",  # LogFormat, CustomLog
    "reqtimeout_module": "mod_reqtimeout.c",  # RequestReadTimeout
    "status_module": "mod_status.c",  # server-status
    "wasm_module": "mod_wasm.c",  # mod_wasm's Wasm* directives
    "mime_module": "mod_mime.c",  # TypesConfig, AddType, AddHandler
    "dir_module": "mod_dir.c",  # DirectoryIndex, the trailing-slash redirect
    "alias_module": "mod_alias.c",  # Alias
}
STATIC_MODULES = ("core_module", "so_module", "http_module", "mpm_prefork_module")  # Apache's -M says (static)
_OTHER_MPMS = ("mpm_event_module", "mpm_worker_module")


@dataclass(frozen=True)
class Listen:
    """One address to bind; host '' means all interfaces, IPv6 is kept without brackets.

    `source` ('FILE:LINE') is where it was asked for, so a bind error can name the line.
    """

    host: str
    port: int
    source: str = field(default="", compare=False)

    def __str__(self) -> str:
        host = "*" if not self.host else f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class LocationConfig:
    """The merged settings serving one URL prefix (server-level defaults + its <Location>).

    `require` holds each Require line's arguments joined by single spaces,
    e.g. ['local', 'ip 10.0.0.0/8']; they were validated while parsing.
    """

    prefix: str
    source: str
    handler: str | None = None
    module: Path | None = None
    mounts: list[Mount] = field(default_factory=list)  # WasmDir and WasmMapDir, in order
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    enable_cgi: bool = False
    map_cgi_file_names: bool = False
    entry_point: str = "_start"
    timeout: float = 30.0
    memory_limit: int | None = None
    force_type: str | None = None
    require: list[str] = field(default_factory=list)
    limit_request_body: int = 1073741824
    # wasi:http outbound requests (issue 19): WasmAllowOutbound, WasmOutboundTimeout, WasmOutboundLimit.
    allow_outbound: list[Destination] = field(default_factory=list)
    outbound_timeout: float = 30.0
    outbound_limit: int = 16 << 20
    # Files on disk (filemap.py): where URLs map, and what the file walk merges (dirconfig.py).
    document_root: Path | None = None
    aliases: list[tuple[str, Path]] = field(default_factory=list)  # Alias URL-PATH TARGET
    directory_index: list[str] = field(default_factory=lambda: ["index.html"])
    add_types: dict[str, str] = field(default_factory=dict)  # '.ext' -> MIME type
    add_handlers: dict[str, str] = field(default_factory=dict)  # '.ext' -> handler
    options: frozenset[str] = DEFAULT_OPTIONS
    # The attributes the matching <Location>s themselves set (not inherited from server level):
    # they win over <Directory>/<Files> sections, as Locations come last in Apache's merge.
    explicit: frozenset[str] = frozenset()
    # Some file mapped here may get the wasm-handler (an AddHandler here, or a SetHandler or
    # AddHandler in one of its server's <Directory>/<Files>): set by Locations.merge.
    runs_scripts: bool = False
    # Where each setting was made ('FILE:LINE' by attribute), for errors found after parsing.
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def allows(self, addr: str) -> bool:
        return require_allows(self.require, addr)

    @property
    def outbound(self) -> Policy:
        """What its wasi:http guest may reach (nothing unless WasmAllowOutbound says)."""
        return Policy(tuple(self.allow_outbound), self.outbound_timeout, self.outbound_limit)

    @property
    def guest_module(self) -> Path | None:
        """The module this Location's requests run: its wasm-handler's, or (no handler: files
        from disk) the one that runs the scripts AddHandler/SetHandler wasm-handler name here.
        None: no guest runs here (another handler, or static files only)."""
        if self.handler == "wasm-handler" or (self.handler is None and self.runs_scripts):
            return self.module
        return None


def require_allows(rules: list[str], addr: str) -> bool:
    """Apache's implicit <RequireAny>: no Require lines, or any one granting, lets addr in."""
    if not rules:
        return True
    ip = _client_ip(addr)
    for rule in rules:
        everyone, networks = _require_rule(rule)
        if everyone or (ip is not None and any(ip in net for net in networks)):
            return True
    return False


@dataclass(frozen=True)
class Mount:
    """A host directory pre-opened for the guest (WasmDir: at the same path; WasmMapDir: elsewhere)."""

    guest: str
    host: Path
    writable: bool = False  # read-only unless the directive ends in 'rw'


@dataclass(frozen=True)
class CustomLog:
    """One access log: its destination, its format string (nickname resolved) and its line."""

    target: str
    format: str
    source: str = field(default="", compare=False)
    host: int | None = None  # the index of its <VirtualHost> in ServerConfig.virtual_hosts; None: the main server's


@dataclass(frozen=True)
class Section:
    """One <Location> (a URL prefix) or <LocationMatch> (a regular expression), as written.

    `values` are the settings made in it, by LocationConfig attribute; `sources` where each
    was made ('FILE:LINE').
    """

    pattern: str
    source: str
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    regex: re.Pattern[str] | None = None

    @property
    def label(self) -> str:
        return f"<LocationMatch {self.pattern}>" if self.regex else f"<Location {self.pattern}>"

    def matches(self, path: str) -> bool:
        """Apache's test: a regex searched in the path; a prefix compared on whole segments
        (/env covers /env and /env/x, not /envfoo; /env/ does not cover /env)."""
        if self.regex is not None:
            return self.regex.search(path) is not None
        return _prefix_covers(self.pattern, path)


# Paths whose routing a worker remembers per server (see Locations).
ROUTE_MEMORY = 4096


@dataclass
class Locations:
    """The sections of one server (the main one or a virtual host) over its location-level
    defaults, merged as Apache merges them: every section that matches the path, plain and
    regex alike, in config order, each overriding what the ones before set. `disk` are the
    server's <Directory>/<Files> sections (dirconfig.py), which apply once a URL without a
    handler is mapped to a file.

    A merged result is built once per distinct set of matching sections and kept, so a
    worker's routing costs a scan of the sections per request, never a merge; and the result
    for a path is remembered too (up to ROUTE_MEMORY paths, then forgotten all at once, so that
    clients sending ever new paths cost the scan again, not memory).
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    default_sources: dict[str, str] = field(default_factory=dict, compare=False)
    sections: list[Section] = field(default_factory=list)
    disk: list[DiskSection] = field(default_factory=list)  # in config order, the main server's first
    _merged: dict[tuple[int, ...], LocationConfig | None] = field(default_factory=dict, compare=False, repr=False)
    _by_path: dict[str, LocationConfig | None] = field(default_factory=dict, compare=False, repr=False)

    def key(self, path: str) -> tuple[int, ...]:
        """Which sections match `path` (a request's normalised path, paths.request_path)."""
        return tuple(i for i, section in enumerate(self.sections) if section.matches(path))

    def match(self, path: str) -> LocationConfig | None:
        """The merged settings for `path`; None when no section matches it and nothing serves at
        server level (no handler, DocumentRoot or Alias): then the answer is 404."""
        try:
            return self._by_path[path]
        except KeyError:
            pass
        key = self.key(path)
        if key not in self._merged:
            self._merged[key] = self.merge(key) if key or self.serving() else None
        if len(self._by_path) >= ROUTE_MEMORY:
            self._by_path.clear()
        found = self._by_path[path] = self._merged[key]
        return found

    def serving(self) -> str | None:
        """The first server-level setting that serves requests by itself, if any."""
        return next((attr for attr in _SERVING if attr in self.defaults), None)

    def merge(self, key: tuple[int, ...], source: str | None = None) -> LocationConfig:
        """The defaults overlaid by the sections in `key`, in order: a setting made later wins;
        WasmEnv, AddType and AddHandler merge by name, Options lines apply in turn. The handler
        is mounted (SCRIPT_NAME) at the last plain prefix that sets the handler or the module,
        else at '/'."""
        values, sources = dict(self.defaults), dict(self.default_sources)
        by_name = {attr: dict(self.defaults.get(attr, {})) for attr in _MERGED_BY_NAME}
        options = list(self.defaults.get("options", []))
        explicit: set[str] = set()
        serving = self.serving()
        prefix, where = "/", self.default_sources.get(serving, "") if serving else ""
        for section in (self.sections[i] for i in key):
            values.update(section.values)
            sources.update(section.sources)
            explicit.update(section.values)
            for attr, merged in by_name.items():
                merged.update(section.values.get(attr, {}))
            options += section.values.get("options", [])
            where = section.source
            if section.regex is None and ("handler" in section.values or "module" in section.values):
                prefix = section.pattern
        values = copy.deepcopy({**values, **by_name, "options": apply_options(DEFAULT_OPTIONS, options)})
        loc = LocationConfig(
            prefix=prefix, source=source or where, sources=sources, explicit=frozenset(explicit), **values
        )
        loc.runs_scripts = runs_scripts(loc, self.disk)
        return loc

    def representatives(self) -> list[tuple[Section | None, LocationConfig]]:
        """One merged result per section, as -S shows and -t checks them: a prefix's is what a
        request for exactly that prefix gets; a regex's is it over the sections for '/' (it may
        match anywhere). The defaults alone come first when they serve something (a handler,
        a DocumentRoot or an Alias) and no <Location /> covers every path."""
        found: list[tuple[Section | None, LocationConfig]] = []
        seen: set[tuple[int, ...]] = set()
        if self.serving() and not any(s.pattern == "/" and s.regex is None for s in self.sections):
            found.append((None, self.merge(())))
        everywhere = [i for i, s in enumerate(self.sections) if s.regex is None and s.pattern == "/"]
        for i, section in enumerate(self.sections):
            key = self.key(section.pattern) if section.regex is None else tuple(sorted({*everywhere, i}))
            if key not in seen:  # a prefix repeated in another <Location>: shown once
                seen.add(key)
                found.append((section, self.merge(key, section.source)))
        return found

    def section_runs(self) -> list[LocationConfig]:
        """Each representative that runs scripts, as each <Directory>/<Files> section with Wasm
        settings changes it: what start-up compiles and checks (entry points, memory)."""
        return [
            dataclasses.replace(loc, **overrides)
            for _, loc in self.representatives()
            if loc.handler is None and loc.runs_scripts
            for section in self.disk
            if (overrides := wasm_overrides(loc, section))
        ]

    def modules(self) -> list[Path]:
        """Every module some request here can run, first use first: those of the representatives
        and of their scripts (guest_module) and, where a regex section sets the handler or a
        module (so a request can combine it with any section), every module named here."""
        used = [loc.guest_module for _, loc in self.representatives()]
        used += [loc.guest_module for loc in self.section_runs()]
        if any(s.regex is not None and ("handler" in s.values or "module" in s.values) for s in self.sections):
            used += [self.defaults.get("module"), *(s.values.get("module") for s in self.sections)]
        return list(dict.fromkeys(module for module in used if module is not None))


def runs_scripts(loc: LocationConfig, sections: list[DiskSection]) -> bool:
    """True when some file mapped under `loc` may get the wasm-handler (AddHandler there, or a
    SetHandler or AddHandler in any of the server's <Directory>/<Files>)."""
    return "wasm-handler" in loc.add_handlers.values() or any(
        section.settings.get("handler") == "wasm-handler"
        or "wasm-handler" in section.settings.get("add_handlers", {}).values()
        for section in sections
    )


_SERVING = ("handler", "document_root", "aliases")  # server-level settings that serve '/' alone
_SERVING_LABELS = {"handler": "SetHandler", "document_root": "DocumentRoot", "aliases": "Alias"}
_MERGED_BY_NAME = ("env", "add_types", "add_handlers")  # a later place adds to the earlier entries


@dataclass
class VirtualHost:
    """A name-based <VirtualHost>: where it answers, its names, its Locations (merged with the
    main server's) and its error log. Its access logs are the ServerConfig.custom_logs with its
    index; with none it uses the main server's, as in Apache."""

    addresses: list[Listen]  # host '' for * and _default_; port 0 for any port
    server_name: str  # canonical (canonical_name): what %v logs; the main server's when it sets none
    aliases: list[str]
    source: str
    routes: Locations
    error_log: str | None = None  # its own ErrorLog, for the errors of its requests; None: the main one
    error_log_source: str = field(default="", compare=False)
    _names: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    def answers(self, name: str) -> bool:
        """Whether a canonical host name is this host's ServerName or one of its ServerAliases
        (whose '*' and '?' are wildcards, as in Apache)."""
        if self._names is None:
            names = [re.escape(self.server_name)] if self.server_name else []
            names += ["".join(_WILDCARDS.get(c, re.escape(c)) for c in alias.lower()) for alias in self.aliases]
            self._names = re.compile("|".join(names) or "(?!)")  # (?!): no name at all matches nothing
        return self._names.fullmatch(name) is not None


_WILDCARDS = {"*": ".*", "?": "."}  # ServerAlias's, as Apache's ap_strcasecmp_match: '*' spans dots too


@dataclass(kw_only=True)
class ServerConfig:
    """Everything the master and its children need; defaults are Apache's (prefork MPM)."""

    file: Path
    server_root: Path
    defines: dict[str, str] = field(default_factory=dict)
    listens: list[Listen] = field(default_factory=list)
    server_name: str | None = None
    pid_file: Path
    error_log: str = "stderr"
    log_level: str = "warn"
    log_formats: dict[str, str] = field(default_factory=lambda: dict(PREDEFINED_LOG_FORMATS))
    custom_logs: list[CustomLog] = field(default_factory=list)
    timeout: float = 60.0
    read_timeout_header: ReadTimeout = HEADER_DEFAULT  # RequestReadTimeout header=
    read_timeout_body: ReadTimeout = BODY_DEFAULT  # RequestReadTimeout body=
    keep_alive: bool = True
    keep_alive_timeout: float = 5.0
    max_keep_alive_requests: int = 100
    start_servers: int = 5
    min_spare_servers: int = 5
    max_spare_servers: int = 10
    max_request_workers: int = 256
    server_limit: int = 256
    max_connections_per_child: int = 0
    max_memory_per_child: tuple[int, int | None] | None = None
    memory_metric: str = "uss"
    graceful_shutdown_timeout: float = 0.0
    wasm_cache_dir: Path
    user: str | None = None
    group: str | None = None
    limit_request_line: int = 8190
    limit_request_field_size: int = 8190
    limit_request_fields: int = 100
    listen_backlog: int = 511
    limit_response_body: int = 1073741824
    allow_encoded_slashes: str = "off"  # paths.ENCODED_SLASHES
    types_config: Path | None = None  # TypesConfig; None: the system's mime.types or Python's table
    # What -S shows and -t checks: each section's merged settings (Locations.representatives).
    locations: list[LocationConfig] = field(default_factory=list)
    routes: Locations = field(default_factory=Locations)  # the main server's
    virtual_hosts: list[VirtualHost] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # info level: lines accepted without effect
    # Where each server-level setting was made ('FILE:LINE' by attribute), for errors found
    # after parsing (a log that cannot be opened, say).
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def match(self, path: str) -> LocationConfig | None:
        """The main server's merged settings for a request's normalised path (Locations.match)."""
        return self.routes.match(path)

    def tables(self) -> list[Locations]:
        """The main server's Locations, then each virtual host's."""
        return [self.routes, *(host.routes for host in self.virtual_hosts)]

    def modules(self) -> list[Path]:
        """Every module a request can run (on the main server or a virtual host), each once, first
        use first: what the master compiles."""
        return list(dict.fromkeys(module for table in self.tables() for module in table.modules()))

    def section_runs(self) -> list[LocationConfig]:
        """Every server's Locations as <Directory>/<Files> sections change how their scripts run
        (Locations.section_runs)."""
        return [loc for table in self.tables() for loc in table.section_runs()]

    def guest_runs(self) -> list[LocationConfig]:
        """Every merged setting under which a guest runs: what start-up checks (entry points,
        memory) and what bounds a worker's silence (WasmTimeout)."""
        return [loc for loc in [*self.locations, *self.section_runs()] if loc.guest_module is not None]


def parse_size(text: str) -> int:
    """Bytes from '1048576', '512K', '256M' or '1G' (powers of 1024), so limits stay readable."""
    match = re.fullmatch(r"([0-9]+)([kmg]?)", text, re.IGNORECASE)
    if not match:
        raise ValueError(f"expected a size in bytes or with a K, M or G suffix (e.g. 256M), got {text!r}")
    return int(match[1]) * _SIZE_UNITS[match[2].lower()]


def parse_config(path: str | Path, defines: Iterable[str] = ()) -> ServerConfig:
    """Parse the main config file; `defines` are -D names (defined with value '').

    Raises ConfigError: ConfigErrors with every error found (up to MAX_ERRORS) when there
    are several, each line skipped and parsing resumed after it.
    """
    file = Path(path).absolute()
    parser = _Parser(file, defines)
    try:
        text = _read_text(file)
    except ValueError as exc:
        raise ConfigError(str(path), 0, str(exc)) from None
    parser.read(text, str(path), file)
    return parser.finish(file, str(path))


# --- values ---------------------------------------------------------------------------------

_Convert = Callable[..., Any]


def _on_off(arg: str) -> bool:
    if arg.lower() not in ("on", "off"):
        raise ValueError(f"expected On or Off, got {arg!r}")
    return arg.lower() == "on"


def _count(minimum: int) -> Callable[[str], int]:
    """Whole numbers only: '1.5 workers' or '-1' are mistakes, not something to round."""

    def convert(arg: str) -> int:
        if not re.fullmatch(r"[0-9]+", arg) or int(arg) < minimum:
            raise ValueError(f"expected a whole number >= {minimum}, got {arg!r}")
        return int(arg)

    return convert


def _seconds(*, positive: bool) -> Callable[[str], float]:
    """Plain decimals only, so 'inf', 'nan' and '1e9' are rejected rather than surprising."""
    bound = "> 0" if positive else ">= 0"

    def convert(arg: str) -> float:
        if not re.fullmatch(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", arg) or (positive and float(arg) == 0):
            raise ValueError(f"expected seconds {bound}, such as 30 or 2.5, got {arg!r}")
        return float(arg)

    return convert


def _choice(*options: str) -> Callable[[str], str]:
    def convert(arg: str) -> str:
        if arg.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}; got {arg!r}")
        return arg.lower()

    return convert


HANDLERS = ("wasm-handler", "server-status", "metrics", "health")


def _handler(arg: str) -> str | None:
    """'none' switches an inherited handler off, as in Apache."""
    name = _choice(*HANDLERS, "none")(arg)
    return None if name == "none" else name


def _force_type(arg: str) -> str | None:
    """'None' switches an inherited ForceType off, as in Apache."""
    if arg.lower() == "none":
        return None
    if "/" not in arg:
        raise ValueError(f"expected a MIME type such as text/plain, or None; got {arg!r}")
    return arg


def _memory_limit(arg: str) -> int | None:
    """0 means no cap, matching the other 0 = unlimited limits."""
    return parse_size(arg) or None


def _memory_per_child(soft: str, hard: str | None = None) -> tuple[int, int | None] | None:
    soft_bytes = parse_size(soft)
    hard_bytes = None if hard is None else parse_size(hard)
    if soft_bytes == 0:
        if hard_bytes is not None:
            raise ValueError("soft limit must be above 0 (use 'MaxMemoryPerChild 0' alone for no limit)")
        return None
    if hard_bytes is not None and hard_bytes < soft_bytes:
        raise ValueError(f"hard limit {hard} is below soft limit {soft}; expected SOFT [HARD] with HARD >= SOFT")
    return soft_bytes, hard_bytes


def _parse_listen(arg: str) -> Listen:
    match = re.fullmatch(r"(?:\[(?P<ipv6>[^\]]+)\]:|(?P<host>[^:\[\]]+):)?(?P<port>[^:]+)", arg)
    if not match:
        raise ValueError(
            f"expected PORT, HOST:PORT or [IPV6]:PORT (e.g. 8080, 127.0.0.1:8080, [::1]:8080), got {arg!r}"
        )
    if match["ipv6"] is not None:
        try:
            ipaddress.IPv6Address(match["ipv6"])
        except ValueError:
            raise ValueError(f"{match['ipv6']!r} in brackets is not an IPv6 address") from None
    port = match["port"]
    if not re.fullmatch(r"[0-9]+", port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    host = match["ipv6"] or match["host"] or ""
    return Listen("" if host == "*" else host, int(port))


@functools.lru_cache(maxsize=256)
def _require_rule(rule: str) -> tuple[bool, tuple[_Network, ...]]:
    """(grants everyone, networks granted) for one Require line; cached since allows() runs per request."""
    match rule.lower().split():
        case ["all", "granted"]:
            return True, ()
        case ["all", "denied"]:
            return False, ()
        case ["local"]:
            return False, _LOOPBACK
        case ["ip", *addresses] if addresses:
            return False, tuple(_network(address) for address in addresses)
    raise ValueError(f"expected 'all granted', 'all denied', 'local' or 'ip ADDRESS[/BITS] ...', got {rule!r}")


def _network(address: str) -> _Network:
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        raise ValueError(
            f"'ip' takes IPv4/IPv6 addresses or networks such as 10.0.0.0/8 or ::1, got {address!r}"
        ) from None


def _client_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The peer as an IP, with IPv4-mapped IPv6 (dual-stack sockets) unwrapped; None if not an IP."""
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _prefix_covers(prefix: str, path: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(f"{prefix}/")


# --- syntax ---------------------------------------------------------------------------------

_TOKEN = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'|(["'])|(\S+)""")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) per directive: continuations joined, blanks and comments dropped."""
    parts: list[str] = []
    start = 0
    # The extra empty line ends a continuation left open on the last line.
    for number, raw in enumerate([*text.splitlines(), ""], 1):
        line = raw.strip()
        if not parts:
            start = number
        parts.append(line.removesuffix("\\").rstrip())
        if line.endswith("\\"):
            continue
        joined = " ".join(parts).strip()
        parts = []
        if joined and not joined.startswith("#"):
            yield start, joined


def _split_args(text: str) -> list[str]:
    """Split like Apache: whitespace separates, a word starting with a quote runs to the matching quote."""
    words = []
    for match in _TOKEN.finditer(text):
        double, single, stray, bare = match.groups()
        if stray:
            raise ValueError(f"unterminated {stray} quote; close it or escape it as \\{stray}")
        if double is not None:
            words.append(double.replace('\\"', '"'))
        elif single is not None:
            words.append(single.replace("\\'", "'"))
        else:
            words.append(bare)
    return words


def _key(word: str) -> str:
    """Table key for a directive word: lower case, sections as '<name>'."""
    name = word.lower().rstrip(">")
    return f"{name}>" if name.startswith("<") else name


def _section_name(text: str) -> str:
    """'Location' from '<Location /x>' (also from a malformed opening line, so it can be skipped)."""
    return text[1:].split()[0].rstrip(">") if text[1:].split() else ""


def _join(base: Path, arg: str) -> Path:
    return Path(os.path.normpath(base / arg))


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"'{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# --- parser ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    """One directive as read: where it is (for messages) and its text."""

    file: str
    number: int
    text: str

    def __str__(self) -> str:
        return f"{self.file}:{self.number}"

    def error(self, message: str, directive: str | None = None) -> ConfigError:
        return ConfigError(self.file, self.number, message, directive)


@dataclass
class _Scope:
    """Settings given explicitly in one place; presence of a key is what 'set here' means for merging."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, _Line] = field(default_factory=dict)

    def set(self, attr: str, value: Any, line: _Line) -> None:
        self.values[attr] = value
        self.sources[attr] = line

    def append(self, attr: str, value: Any, line: _Line) -> None:
        self.values.setdefault(attr, []).append(value)
        self.sources[attr] = line


@dataclass
class _Block:
    """A <Location> or <LocationMatch> as read: each is its own section (Apache merges them all)."""

    line: _Line
    pattern: str
    regex: re.Pattern[str] | None = None
    scope: _Scope = field(default_factory=_Scope)


@dataclass
class _Server:
    """What is read for the main server or for one <VirtualHost> (`line`: where it opens)."""

    line: _Line | None = None
    addresses: list[Listen] = field(default_factory=list)
    server: _Scope = field(default_factory=_Scope)  # server-level directives (ServerName, ErrorLog ...)
    defaults: _Scope = field(default_factory=_Scope)  # location directives outside any <Location>
    blocks: list[_Block] = field(default_factory=list)
    disk_sections: list[DiskSection] = field(default_factory=list)  # <Directory>, <Files> ...
    aliases: list[str] = field(default_factory=list)
    custom_logs: list[tuple[str, str, _Line]] = field(default_factory=list)


@dataclass
class _Section:
    """An open <...> section; `scope` is set for <Location>, <Directory> and <Files> (`disk`:
    the DiskSection of the latter kinds), `active` is False inside a false condition."""

    name: str
    label: str
    line: _Line
    active: bool
    scope: _Scope | None = None
    disk: DiskSection | None = None
    vhost: _Server | None = None  # set for <VirtualHost>


class _Parser:
    """State while reading: settings so far, open sections, files being read."""

    def __init__(self, file: Path, defines: Iterable[str]) -> None:
        self.config_dir = file.parent
        self.server_root = self.config_dir
        self.defines = dict.fromkeys(defines, "")
        self.main = _Server()
        self.vhosts: list[_Server] = []
        self.listens: dict[Listen, _Line] = {}
        self.log_formats = dict(PREDEFINED_LOG_FORMATS)
        self.warnings: list[str] = []
        self.notes: list[str] = []
        self.errors: list[ConfigError] = []
        self.broken: list[_Scope] = []  # scopes with a failed line: their checks after parsing would echo it
        self.stack: list[_Section] = []
        self.base = 0  # sections below this belong to including files
        self.reading: list[Path] = []

    # reading

    def read(self, text: str, name: str, path: Path) -> None:
        """Parse one file; like Apache, sections must close in the file that opened them."""
        outer_base, self.base = self.base, len(self.stack)
        self.reading.append(path.resolve())
        for number, line_text in _logical_lines(text):
            line = _Line(name, number, line_text)
            depth = len(self.stack)
            try:
                self.line(line)
            except ConfigErrors:
                raise
            except ConfigError as exc:
                self.fail(exc)
                section = self.location()
                self.broken.append(section.scope if section and section.scope else self.context().defaults)
                if line_text.startswith("<") and not line_text.startswith("</") and len(self.stack) == depth:
                    # A section that failed to open: skip its body, so its lines neither
                    # land at server level nor report errors of their own.
                    section_name = _section_name(line_text)
                    self.stack.append(_Section(section_name, f"<{section_name}>", line, active=False))
        if len(self.stack) > self.base:
            section = self.stack[self.base]
            self.fail(section.line.error(f"section is never closed (add '</{section.name}>')", section.label))
            del self.stack[self.base :]
        self.reading.pop()
        self.base = outer_base

    def fail(self, error: ConfigError) -> None:
        """Note an error and go on with the next line, up to MAX_ERRORS."""
        self.errors.append(error)
        if len(self.errors) >= MAX_ERRORS:
            raise ConfigErrors(self.errors, stopped=True)

    def line(self, line: _Line) -> None:
        if line.text.startswith("</"):
            self.close(line)
        elif self.active:
            self.dispatch(line)
        elif line.text.startswith("<"):
            # Skipped text is not parsed (an Include in it is not read), but its sections must balance.
            name = _section_name(line.text)
            self.stack.append(_Section(name, f"<{name}>", line, active=False))

    @property
    def active(self) -> bool:
        return not self.stack or self.stack[-1].active

    def close(self, line: _Line) -> None:
        match = re.fullmatch(r"</(\S+?)\s*>", line.text)
        if not match:
            raise line.error(f"malformed closing tag {line.text!r}; expected e.g. '</Location>'")
        name = match[1]
        if len(self.stack) == self.base:
            raise line.error(f"</{name}> without matching <{name}>")
        section = self.stack[-1]
        if section.name.lower() != name.lower():
            # Close up to the matching section if there is one, so what follows is read where it belongs.
            names = [open_.name.lower() for open_ in self.stack[self.base :]]
            if name.lower() in names:
                del self.stack[self.base + len(names) - 1 - names[::-1].index(name.lower()) :]
            raise line.error(
                f"</{name}> does not match {section.label} opened at {section.line}; add '</{section.name}>' first"
            )
        self.stack.pop()

    def dispatch(self, line: _Line) -> None:
        """Run one directive; value errors get its file, line and name attached."""
        first = line.text.split()[0]
        label = _DIRECTIVES[_key(first)].name if _key(first) in _DIRECTIVES else first
        try:
            words = self.words(line.text)
            if not words:
                raise ValueError("the line is empty after substituting variables")
            word, *args = words
            directive = _DIRECTIVES.get(_key(word))
            if directive is None:
                raise line.error(_unknown(word))
            section = self.location()
            if directive.server_only and section:
                raise ValueError(
                    f"not allowed inside {section.label} (opened at {section.line}); move it to server level"
                )
            if section and section.disk and not directive.on_disk:
                raise ValueError(
                    f"not supported inside {section.label} (opened at {section.line}): such a section takes "
                    f"Require, Options, SetHandler, AddHandler, AddType, DirectoryIndex and the Wasm settings "
                    f"of a script's run; put it in a <Location> or at server level"
                )
            context = self.context()
            if directive.server_only and context.line is not None and not directive.in_vhost:
                raise ValueError(
                    f"not allowed inside <VirtualHost> (opened at {context.line}); move it to the main server"
                )
            directive.check_count(args)
            if directive.server_only:
                scope = context.server
            else:
                scope = (section.scope if section else None) or context.defaults
            directive.apply(self, scope, args, line)
        except ValueError as exc:
            raise line.error(str(exc), label) from None

    def words(self, text: str) -> list[str]:
        text = _VARIABLE.sub(self.variable, text)
        if not text.startswith("<"):
            return _split_args(text)
        if not text.endswith(">"):
            raise ValueError("missing closing '>'")
        return _split_args(text[:-1])

    def variable(self, match: re.Match[str]) -> str:
        name = match[1]
        if name not in self.defines:
            raise ValueError(
                f"undefined variable ${{{name}}} (add 'Define {name} value' before this line, or pass -D {name})"
            )
        return self.defines[name]

    def context(self) -> _Server:
        """The <VirtualHost> being read, or the main server."""
        return next((section.vhost for section in reversed(self.stack) if section.vhost), self.main)

    def location(self) -> _Section | None:
        """The enclosing <Location> (or <Directory>, <Files>), possibly opened in an including file."""
        return next((section for section in reversed(self.stack) if section.scope is not None), None)

    # values that depend on where we are

    def path(self, arg: str) -> Path:
        return _join(self.server_root, arg)

    def existing(self, arg: str, kind: str) -> Path:
        """arg resolved against ServerRoot, which must be an existing 'file' or 'directory'."""
        path = self.path(arg)
        hint = "" if Path(arg).is_absolute() else f" (relative paths are taken from ServerRoot {self.server_root})"
        if not path.exists():
            raise ValueError(f"no such {kind} {arg!r}{hint}")
        if not (path.is_dir() if kind == "directory" else path.is_file()):
            raise ValueError(f"{arg!r} is not a {kind}{hint}")
        return path

    def host_dir(self, arg: str, line: _Line, directive: str) -> Path:
        path = self.existing(arg, "directory")
        if path == Path("/"):
            self.warn(line, f"{directive} '/' exposes the whole host file system to the guest; map only what it needs")
        return path

    def warn(self, line: _Line, message: str) -> None:
        self.warnings.append(f"{line}: {message}")

    def note(self, line: _Line, message: str) -> None:
        self.notes.append(f"{line}: {message}")

    def include(self, pattern: str, optional: bool) -> None:
        path = self.path(pattern)
        if re.search(r"[*?[]", pattern):
            files = sorted(Path(match) for match in glob.glob(str(path)) if os.path.isfile(match))
            if not files and not optional:
                raise ValueError(f"no files match {pattern!r} (use IncludeOptional if that is fine)")
        elif optional and not path.exists():
            return
        else:
            files = [self.existing(pattern, "file")]
        for file in files:
            if file.resolve() in self.reading:
                raise ValueError(f"'{file}' is already being read (recursive Include)")
            self.read(_read_text(file), str(file), file)

    # the result

    def finish(self, file: Path, name: str) -> ServerConfig:
        if not self.listens and not self.errors:  # else a Listen line may have failed: said already
            self.fail(ConfigError(name, 0, "no Listen directive (add e.g. 'Listen 127.0.0.1:8080')"))
        custom_logs = self.collect(self.custom_log, [(*log, None) for log in self.main.custom_logs])
        routes = self.routes(self.main, None)
        hosts = []
        for index, vhost in enumerate(self.vhosts):
            custom_logs += self.collect(self.custom_log, [(*log, index) for log in vhost.custom_logs])
            hosts.append(self.virtual_host(vhost, routes))
        locations: list[LocationConfig] = []
        for context, table in [(self.main, routes), *((vhost, host.routes) for vhost, host in zip(self.vhosts, hosts))]:
            locations += [loc for loc in self.check_routes(context, table) if loc not in locations]
        if self.errors:
            raise ConfigErrors(self.errors, stopped=False)
        root = self.server_root
        # Default paths follow the final ServerRoot.
        values = {
            "pid_file": root / "logs" / "prefork-wasm.pid",
            "wasm_cache_dir": root / "cache",
            **self.main.server.values,
        }
        config = ServerConfig(
            file=file,
            server_root=root,
            defines=self.defines,
            listens=[dataclasses.replace(listen, source=str(line)) for listen, line in self.listens.items()],
            log_formats=self.log_formats,
            custom_logs=custom_logs,
            locations=locations,
            routes=routes,
            virtual_hosts=hosts,
            warnings=self.warnings,
            notes=self.notes,
            sources={attr: str(line) for attr, line in self.main.server.sources.items()},
            **values,
        )
        for host in hosts:
            host.server_name = host.server_name or canonical_name(config.server_name or "")
        self.apply_limits(config)
        self.check_server_module(config)
        self.check_addresses(config)
        return config

    def custom_log(self, target: str, fmt: str, line: _Line, host: int | None) -> CustomLog:
        """A nickname's format was checked at its LogFormat line; a literal one is checked here."""
        if fmt in self.log_formats:
            return CustomLog(target, self.log_formats[fmt], str(line), host)
        try:
            compile_format(fmt)
        except FormatError as exc:
            raise line.error(str(exc), "CustomLog") from None
        if "%" not in fmt:
            close = difflib.get_close_matches(fmt, self.log_formats, n=1)
            self.warn(
                line,
                f"CustomLog format {fmt!r} is no LogFormat nickname and logs that text on every line"
                + (f"; did you mean {close[0]!r}?" if close else ""),
            )
        return CustomLog(target, fmt, str(line), host)

    def routes(self, context: _Server, main: Locations | None) -> Locations:
        """A server's Locations. A virtual host's defaults are the main server's overlaid by its
        own (WasmEnv, AddType and AddHandler by name; its Options lines and Aliases after the main
        server's), and its sections, <Location> and <Directory> alike, come after the main
        server's, as in Apache."""
        own = context.defaults
        sections = [
            Section(block.pattern, str(block.line), block.scope.values, _sources(block.scope), block.regex)
            for block in context.blocks
        ]
        if main is None:
            return Locations(own.values, _sources(own), sections, context.disk_sections)
        defaults = {**main.defaults, **own.values}
        for attr in _MERGED_BY_NAME:
            if attr in defaults:
                defaults[attr] = {**main.defaults.get(attr, {}), **own.values.get(attr, {})}
        for attr in ("options", "aliases"):
            if attr in defaults:
                defaults[attr] = [*main.defaults.get(attr, []), *own.values.get(attr, [])]
        return Locations(
            defaults,
            {**main.default_sources, **_sources(own)},
            main.sections + sections,
            main.disk + context.disk_sections,
        )

    def virtual_host(self, context: _Server, main: Locations) -> VirtualHost:
        assert context.line is not None
        name = context.server.values.get("server_name")
        return VirtualHost(
            addresses=context.addresses,
            server_name=canonical_name(name) if name else "",
            aliases=context.aliases,
            source=str(context.line),
            routes=self.routes(context, main),
            error_log=context.server.values.get("error_log"),
            error_log_source=str(context.server.sources.get("error_log", "")),
        )

    def collect(self, make: Callable[..., _T], entries: Iterable[tuple[Any, ...]]) -> list[_T]:
        """make(*entry) for each entry that makes one; the error of each other one is noted."""
        made = []
        for entry in entries:
            try:
                made.append(make(*entry))
            except ConfigErrors:
                raise
            except ConfigError as exc:
                self.fail(exc)
        return made

    def check_routes(self, context: _Server, routes: Locations) -> list[LocationConfig]:
        """Each section's merged settings (Locations.representatives), checked: a wasm-handler
        (SetHandler, or AddHandler for scripts) needs a module, a module needs a wasm-handler. Exact for prefixes; where a regex section
        could supply the missing half the check is left to the request (a 500 with a log line),
        and a regex section's own result is only warned about, since what it merges with depends
        on the path."""
        blocks = {str(block.line): block for block in [*self.main.blocks, *context.blocks]}
        defaults_broken = any(scope is self.main.defaults or scope is context.defaults for scope in self.broken)
        regex_sets = {attr for s in routes.sections if s.regex is not None for attr in s.values}
        made = []
        for section, loc in routes.representatives():
            made.append(loc)
            scope = blocks[section.source].scope if section else None
            if defaults_broken or any(broken is scope for broken in self.broken):
                continue  # a line of it failed (a WasmModule, say); what follows would repeat that
            serving = routes.serving()
            label = section.label if section else _SERVING_LABELS[serving] if serving else "SetHandler"
            where = loc.source
            scripts = loc.handler is None and loc.runs_scripts
            problem = None
            if loc.handler == "wasm-handler" and loc.module is None and "module" not in regex_sets:
                problem = (
                    "SetHandler wasm-handler needs a WasmModule (add 'WasmModule FILE.wasm' here or at server level)"
                )
            elif (
                section and "module" in section.values and loc.handler != "wasm-handler"
                and not scripts and "handler" not in regex_sets
            ):
                kind = section.label[1:].split()[0]
                problem = (
                    f"WasmModule without 'SetHandler wasm-handler' or 'AddHandler wasm-handler .EXT' "
                    f"(add one to this <{kind}>)"
                )
            elif (
                scripts and "wasm-handler" in loc.add_handlers.values() and loc.module is None
                and "module" not in regex_sets and not any("module" in disk.settings for disk in routes.disk)
            ):
                # Said at the AddHandler line: every Location inheriting it repeats the same error.
                where, label = loc.sources["add_handlers"], "AddHandler"
                problem = (
                    "AddHandler wasm-handler needs a WasmModule, the interpreter that runs the scripts "
                    "(add 'WasmModule FILE.wasm' beside it or in the <Location> it serves)"
                )
            if problem is None:
                continue
            if section and section.regex is not None:
                self.warn(blocks[section.source].line, f"{label}: {problem}; a request it matches alone gets a 500")
            else:
                error = _located(where, problem, label)
                if str(error) not in (str(e) for e in self.errors):
                    self.fail(error)
        return made

    def apply_limits(self, config: ServerConfig) -> None:
        """Apache prefork's start-up corrections, after parsing so directive order doesn't matter."""
        if config.server_limit > MAX_SERVER_LIMIT:
            self.clamp(config, "server_limit", MAX_SERVER_LIMIT, f"exceeds the maximum of {MAX_SERVER_LIMIT}")
        if config.max_request_workers > config.server_limit:
            self.clamp(
                config,
                "max_request_workers",
                config.server_limit,
                f"exceeds ServerLimit of {config.server_limit}",
                cause="server_limit",
            )
        if config.start_servers > config.max_request_workers:
            self.clamp(
                config,
                "start_servers",
                config.max_request_workers,
                f"exceeds MaxRequestWorkers of {config.max_request_workers}",
                cause="max_request_workers",
            )
        if config.min_spare_servers < 1:
            self.clamp(config, "min_spare_servers", 1, "is below 1")
        if config.max_spare_servers < config.min_spare_servers + 1:
            self.clamp(
                config,
                "max_spare_servers",
                config.min_spare_servers + 1,
                f"is not above MinSpareServers of {config.min_spare_servers}",
                cause="min_spare_servers",
            )

    def clamp(self, config: ServerConfig, attr: str, value: int, reason: str, cause: str = "") -> None:
        """Set attr, warning at its own line, or at the line of the setting that forced it."""
        sources = self.main.server.sources
        line = sources[attr] = sources.get(attr) or sources[cause]
        name, old = _ATTR_NAMES[attr], getattr(config, attr)
        verb = "lowering" if value < old else "raising"
        self.warn(line, f"{name} of {old} {reason}, {verb} {name} to {value}")
        setattr(config, attr, value)

    def check_server_module(self, config: ServerConfig) -> None:
        """A server-level WasmModule is only a default; warn when nothing serves it."""
        module = self.main.defaults.values.get("module")
        if module and not any(loc.guest_module == module for loc in config.locations):
            self.warn(
                self.main.defaults.sources["module"],
                "WasmModule at server level is not served anywhere; add 'SetHandler wasm-handler' "
                "or 'AddHandler wasm-handler .EXT' (at server level or in a <Location>)",
            )


    def check_addresses(self, config: ServerConfig) -> None:
        """A <VirtualHost> address no Listen covers never answers. Apache says nothing; a user
        who wrote it expects it to work, so it is a warning."""
        for host, vhost in zip(config.virtual_hosts, self.vhosts):
            for address in host.addresses:
                if not any(_covers(listen, address) for listen in config.listens):
                    assert vhost.line is not None
                    self.warn(
                        vhost.line,
                        f"<VirtualHost> address {_address_text(address)} matches no Listen, so this host never "
                        f"answers there; add a Listen for it or change the address",
                    )


def _covers(listen: Listen, address: Listen) -> bool:
    """Whether connections accepted on `listen` can be addressed to `address` (port 0: any)."""
    hosts = not listen.host or not address.host or _ip_text(listen.host) == address.host
    return hosts and address.port in (0, listen.port)


def _ip_text(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _address_text(address: Listen) -> str:
    return str(address) if address.port else str(address).rsplit(":", 1)[0]


def _sources(scope: _Scope) -> dict[str, str]:
    return {attr: str(line) for attr, line in scope.sources.items()}


def _located(source: str, message: str, directive: str) -> ConfigError:
    """A ConfigError at a 'FILE:LINE' source string."""
    file, _, line = source.rpartition(":")
    return ConfigError(file, int(line), message, directive)


def canonical_name(name: str) -> str:
    """A ServerName as a host is known by (%v): without its port, scheme or trailing dot, lower case."""
    name = name.partition("://")[2] or name if "://" in name else name
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name.rstrip(".").lower()


def _unknown(word: str) -> str:
    """Apache's own words say whose they are; only a real misspelling gets a did-you-mean."""
    owner = _APACHE_DIRECTIVES.get(_key(word))
    if owner == "core":
        return f"Invalid command '{word}': a directive of Apache's core that prefork-wasm does not implement (yet)"
    if owner:
        hint = f"; {_APACHE_HINTS[owner]}" if owner in _APACHE_HINTS else ""
        return f"Invalid command '{word}': a directive of {owner}, which prefork-wasm has no equivalent of{hint}"
    names = {key: directive.name for key, directive in _DIRECTIVES.items()}
    close = difflib.get_close_matches(_key(word), names, n=1)
    hint = f" Did you mean '{names[close[0]]}'?" if close else ""
    return f"Invalid command '{word}', perhaps misspelled?{hint}"


# Apache directives (of stock and distribution configs) prefork-wasm does not take, by module,
# so refusing one says whose it is instead of suggesting a look-alike ('Header' is not SetHandler).
_APACHE_MODULES = {
    "core": "<If> <Else> <ElseIf> ErrorDocument ServerSignature "
    "ServerTokens UseCanonicalName TraceEnable EnableSendfile EnableMMAP AccessFileName Mutex FileETag "
    "Protocols HttpProtocolOptions AcceptFilter LimitXMLRequestBody",
    "alias_module": "AliasMatch ScriptAliasMatch Redirect RedirectMatch RedirectPermanent RedirectTemp",
    "mime_module": "AddEncoding AddCharset AddLanguage RemoveHandler RemoveType AddOutputFilter AddInputFilter",
    "dir_module": "DirectorySlash FallbackResource",
    "rewrite_module": "RewriteEngine RewriteRule RewriteCond RewriteBase RewriteMap RewriteOptions",
    "env_module": "SetEnv UnsetEnv PassEnv",
    "headers_module": "Header RequestHeader",
    "setenvif_module": "SetEnvIf SetEnvIfNoCase BrowserMatch BrowserMatchNoCase",
    "cgi_module": "ScriptLog ScriptLogLength ScriptLogBuffer",
    "cgid_module": "ScriptSock CGIDScriptTimeout",
    "ssl_module": "SSLEngine SSLCertificateFile SSLCertificateKeyFile SSLRandomSeed SSLProtocol SSLCipherSuite",
    "proxy_module": "ProxyPass ProxyPassReverse ProxyRequests ProxyPreserveHost",
    "autoindex_module": "IndexOptions IndexIgnore AddIcon AddIconByType AddIconByEncoding DefaultIcon HeaderName "
    "ReadmeName AddDescription",
    "version_module": "<IfVersion>",
    "access_compat_module": "Order Allow Deny Satisfy",
    "auth_basic_module": "AuthType AuthName AuthBasicProvider AuthUserFile AuthGroupFile",
    "mpm_event_module": "ThreadsPerChild ThreadLimit MinSpareThreads MaxSpareThreads AsyncRequestWorkerFactor",
}
_APACHE_DIRECTIVES = {_key(name): module for module, names in _APACHE_MODULES.items() for name in names.split()}
_APACHE_HINTS = {
    "env_module": "WasmEnv NAME VALUE sets a guest's environment",
    "access_compat_module": "use Require (all granted|all denied|local|ip ...)",
    "mpm_event_module": "prefork-wasm is always prefork: one connection per worker process",
}


# --- directives -----------------------------------------------------------------------------

_Apply = Callable[[_Parser, _Scope, list[str], _Line], None]


@dataclass(frozen=True)
class _Directive:
    """One row of the directive table: name as documented, usage for messages, arity, action."""

    name: str
    usage: str
    apply: _Apply
    nargs: tuple[int, int | None] = (1, 1)
    server_only: bool = False
    on_disk: bool = False  # allowed inside <Directory> and <Files>
    in_vhost: bool = False  # a server_only directive also allowed inside <VirtualHost>

    def check_count(self, args: list[str]) -> None:
        low, high = self.nargs
        if low <= len(args) and (high is None or len(args) <= high):
            return
        if high is None:
            want = f"at least {low} argument{'s' * (low > 1)}"
        elif low == high:
            want = f"{low} argument{'s' * (low > 1)}"
        else:
            want = f"{low} to {high} arguments"
        usage = f"<{self.name[1:-1]} {self.usage}>" if self.name.startswith("<") else f"{self.name} {self.usage}"
        raise ValueError(f"expected {want}, got {len(args)} (usage: {usage})")


_server = functools.partial(_Directive, server_only=True)
_vhost = functools.partial(_Directive, server_only=True, in_vhost=True)
_disk = functools.partial(_Directive, on_disk=True)


def _account(lookup: Callable[[str], int], kind: str) -> Callable[[str], str]:
    """User/Group must name an existing account, so a typo fails at -t, not in every worker."""

    def convert(arg: str) -> str:
        try:
            lookup(arg)
        except (KeyError, ValueError):
            raise ValueError(f"no such {kind} {arg!r} on this system") from None
        return arg

    return convert


def _set(attr: str, convert: _Convert) -> _Apply:
    """Store convert(*args) as attr; a later directive overrides an earlier one, as in Apache."""

    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        scope.set(attr, convert(*args), line)

    return apply


def _set_path(attr: str) -> _Apply:
    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        scope.set(attr, parser.path(args[0]), line)

    return apply


def _log_target(parser: _Parser, arg: str, streams: tuple[str, ...]) -> str:
    if arg.startswith("|"):
        raise ValueError(f"piped logs are not supported; give a file or one of {', '.join(streams)}")
    return arg if arg in streams else str(parser.path(arg))


def _error_log(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    scope.set("error_log", _log_target(parser, args[0], ("stderr",)), line)


def _custom_log(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    # The nickname is looked up after parsing, so a later LogFormat still counts (as in Apache).
    parser.context().custom_logs.append((_log_target(parser, args[0], ("stdout", "stderr")), args[1], line))


def _log_format(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    compile_format(args[0])  # the access log's own compiler: what parses here logs there
    # One argument sets the default format for TransferLog, which we don't have: accepted, unused.
    if len(args) == 2:
        parser.log_formats[args[1]] = args[0]


def _request_read_timeout(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """mod_reqtimeout's phase=value arguments; a phase not named keeps its value (default or
    from an earlier line). handshake= is accepted for Apache configs: there is no TLS here."""
    for arg in args:
        phase, sep, value = arg.partition("=")
        phase = phase.lower()
        if not sep or phase not in ("handshake", "header", "body"):
            raise ValueError(f"expected handshake=, header= or body= followed by timeout[-maxtimeout][,MinRate=rate], got {arg!r}")
        rule = parse_phase(value)
        if phase == "handshake":
            parser.warn(line, "RequestReadTimeout handshake= has no effect: this server has no TLS")
        else:
            scope.set(f"read_timeout_{phase}", rule, line)


def _listen(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    listen = _parse_listen(args[0])
    if listen in parser.listens:
        raise ValueError(f"{listen} is already listed at {parser.listens[listen]}; remove one")
    parser.listens[listen] = line


def _server_root(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    root = _join(parser.config_dir, args[0])
    if not root.is_dir():
        raise ValueError(
            f"no such directory {args[0]!r}"
            f" (relative paths are taken from the config file's folder {parser.config_dir})"
        )
    parser.server_root = root


def _define(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    name, *value = args
    if not re.fullmatch(r"\w+", name):
        raise ValueError(f"invalid variable name {name!r}; use letters, digits and _")
    parser.defines[name] = value[0] if value else ""


def _include(*, optional: bool) -> _Apply:
    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        parser.include(args[0], optional)

    return apply


def _open_location(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """<Location /prefix>, or <Location ~ REGEX>, Apache's other spelling of <LocationMatch>."""
    if args[0] == "~":
        if len(args) != 2:
            raise ValueError("expected '~ REGEX' (or write <LocationMatch REGEX>)")
        _open_section(parser, "Location", args[1], line, _location_regex(args[1]))
        return
    prefix = args[0]
    if len(args) != 1:
        raise ValueError(f"expected one /PREFIX, got {len(args)} arguments (quote a prefix with spaces)")
    if not prefix.startswith("/"):
        raise ValueError(f"URL prefix must start with '/', got {prefix!r}")
    _open_section(parser, "Location", prefix, line, None)


def _open_location_match(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    _open_section(parser, "LocationMatch", args[0], line, _location_regex(args[0]))


def _open_section(parser: _Parser, name: str, pattern: str, line: _Line, regex: re.Pattern[str] | None) -> None:
    block = _Block(line, pattern, regex)
    parser.context().blocks.append(block)
    label = f"<{name} {'~ ' if regex and name == 'Location' else ''}{pattern}>"
    parser.stack.append(_Section(name, label, line, True, block.scope))


def _location_regex(pattern: str) -> re.Pattern[str]:
    """A PCRE pattern as Python's re reads it; PCRE's named groups (?<name>...) are accepted too.
    Searched (not anchored) in the normalised path, as Apache does."""
    try:
        return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))
    except re.error as e:
        raise ValueError(f"bad regular expression {pattern!r}: {e.msg} at position {e.pos}") from None


def _open_virtual_host(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    context = _Server(line, [_vhost_address(arg) for arg in args])
    parser.vhosts.append(context)
    parser.stack.append(_Section("VirtualHost", f"<VirtualHost {' '.join(args)}>", line, True, vhost=context))


def _vhost_address(arg: str) -> Listen:
    """'*:8080', '_default_:8080' (the same as *), '127.0.0.1:8080', '[::1]:8080'; without a
    port (or with ':*') any port. Names are refused: Apache would resolve them at start-up."""
    match = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]+)(?::([0-9]+|\*))?", arg)
    if not match:
        raise ValueError(f"expected ADDRESS[:PORT] such as *:8080, 127.0.0.1:8080 or [::1]:8080, got {arg!r}")
    host, port = match[1].strip("[]"), match[2]
    if host in ("*", "_default_"):
        host = ""
    else:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            raise ValueError(
                f"{host!r} is not an IP address; use * (any address) or the address to answer on"
            ) from None
    if port and port != "*" and not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1-65535, got {port!r}")
    return Listen(host, int(port) if port and port != "*" else 0)


def _server_alias(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    context = parser.context()
    if context.line is None:
        raise ValueError("ServerAlias names a <VirtualHost>; put it inside one (beside its ServerName)")
    context.aliases += [canonical_name(alias) for alias in args]


def _open_ifdefine(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    negated = args[0].startswith("!")
    name = args[0][1:] if negated else args[0]
    if not name:
        raise ValueError("expected NAME or !NAME")
    active = (name in parser.defines) != negated
    parser.stack.append(_Section("IfDefine", f"<IfDefine {args[0]}>", line, active))


def _load_module(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """The path is not looked at: what a provided module does is built in (like Apache's static modules)."""
    name = args[0]
    if name in PROVIDED_MODULES:
        parser.note(line, f"LoadModule {name}: built into prefork-wasm, nothing to load")
    elif name in _OTHER_MPMS:
        parser.note(line, f"LoadModule {name}: prefork-wasm is always mpm_prefork_module; ignored")
    else:
        parser.warn(line, f"prefork-wasm has no equivalent of {name}; its directives will be refused")


def _open_ifmodule(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """True for the modules prefork-wasm provides, named as 'wasm_module' or 'mod_wasm.c'."""
    negated = args[0].startswith("!")
    name = args[0][1:] if negated else args[0]
    if not name:
        raise ValueError("expected MODULE or !MODULE (e.g. wasm_module or mod_wasm.c)")
    provided = name in PROVIDED_MODULES or name in PROVIDED_MODULES.values()
    parser.stack.append(_Section("IfModule", f"<IfModule {args[0]}>", line, provided != negated))


def _open_disk_section(kind: str) -> _Apply:
    """<Directory>, <Files> and their Match forms (also as '<Directory ~ REGEX>'): settings for
    files on disk, merged per request by dirconfig.settings_for. A <Files> may sit in a
    <Directory> (then it applies only under it); nothing else nests."""

    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        name = kind
        if len(args) == 2:
            if args[0] != "~" or kind.endswith("Match"):
                raise ValueError(f"expected <{kind} PATTERN> or <{kind} ~ REGEX>")
            name, args = f"{kind}Match", args[1:]
        pattern = args[0]
        section = parser.location()
        within = None
        if section is not None:
            if section.disk is None or not kind.startswith("Files") or section.disk.kind.startswith("Files"):
                raise ValueError(f"not allowed inside {section.label} (opened at {section.line})")
            within = section.disk
        if name == "Directory":
            pattern = str(parser.path(pattern))
        check_pattern(name, pattern)
        disk_scope = _Scope()
        disk = DiskSection(name, pattern, str(line), disk_scope.values, within, disk_scope.sources)
        parser.context().disk_sections.append(disk)  # each <VirtualHost> has its own
        parser.stack.append(_Section(kind, f"<{kind} {' '.join(args)}>", line, True, disk_scope, disk))

    return apply


def _no_effect(reason: str, *, warn: bool = False, only: str | None = None) -> _Apply:
    """Accept an Apache directive that changes nothing here, saying why at info level (or as a
    warning when the user would expect an effect); `only` is the one value that is true here."""

    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        if only is not None and args[0].lower() != only.lower():
            raise ValueError(f"only '{only}' is supported: {reason}")
        (parser.warn if warn else parser.note)(line, reason)

    return apply


def _extensions(args: list[str]) -> list[str]:
    """mod_mime's extensions, with or without their dot, compared case-insensitively."""
    for ext in args:
        if not ext.strip(".") or "/" in ext:
            raise ValueError(f"expected file extensions such as .php or php, got {ext!r}")
    return ["." + ext.lstrip(".").lower() for ext in args]


def _by_extension(attr: str, convert: _Convert) -> _Apply:
    """AddHandler/AddType VALUE EXT...: later lines add to (and override) earlier ones."""

    def apply(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
        value = convert(args[0])
        scope.values.setdefault(attr, {}).update(dict.fromkeys(_extensions(args[1:]), value))
        scope.sources[attr] = line

    return apply


def _add_handler(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """A handler prefork-wasm lacks (cgi-script) is kept, so its files are refused (403), never
    sent as their source by the static handler."""
    if args[0].lower() not in HANDLERS:
        parser.warn(
            line,
            f"AddHandler {args[0]}: prefork-wasm has no such handler (it has {', '.join(HANDLERS)}); "
            f"requests for {' '.join(args[1:])} files are refused (403)",
        )
    _by_extension("add_handlers", str.lower)(parser, scope, args, line)


def _mime_type(arg: str) -> str:
    if not re.fullmatch(r"[\w.+-]+/[\w.+-]+", arg):
        raise ValueError(f"expected a MIME type such as text/html, got {arg!r}")
    return arg.lower()


def _not_in_location(parser: _Parser, directive: str) -> None:
    """DocumentRoot and Alias map URLs to disk: Apache takes them at server (or virtual host)
    level, not in a <Location> or <Directory>."""
    section = parser.location()
    if section is not None:
        raise ValueError(
            f"not allowed inside {section.label} (opened at {section.line}); {directive} maps URLs for "
            f"a whole server, so give it at server level or in a <VirtualHost>"
        )


def _document_root(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    _not_in_location(parser, "DocumentRoot")
    root = parser.path(args[0])
    if not root.is_dir():  # Apache warns and starts: requests there are 404 until it exists
        parser.warn(line, f"DocumentRoot {root} does not exist (or is not a directory): its URLs answer 404")
    scope.set("document_root", root, line)


def _alias(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    _not_in_location(parser, "Alias")
    url, target = args
    if not url.startswith("/"):
        raise ValueError(f"the URL path must start with '/', got {url!r}")
    path = parser.path(target)
    if not path.exists():
        parser.warn(line, f"Alias target {path} does not exist: its URLs answer 404")
    scope.append("aliases", (url, path), line)


def _directory_index(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    """Relative names only, looked up in the requested directory; 'disabled' turns it off."""
    if [arg.lower() for arg in args] == ["disabled"]:
        scope.set("directory_index", [], line)
        return
    for name in args:
        if "/" in name or name in (".", ".."):
            raise ValueError(f"expected file names such as index.html (a URL path like {name!r} is not supported)")
    scope.set("directory_index", list(args), line)


def _options(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    change = parse_options(args)
    inert = (change.absolute or change.add) & INERT_OPTIONS
    if inert:
        parser.note(
            line,
            f"Options {', '.join(sorted(inert))}: no effect here "
            f"(only Indexes, FollowSymLinks and SymLinksIfOwnerMatch have one)",
        )
    scope.append("options", change, line)


def _types_config(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    scope.set("types_config", parser.existing(args[0], "file"), line)


def _wasm_module(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    path = parser.existing(args[0], "file")
    if path.suffix.lower() not in (".wasm", ".wat"):
        raise ValueError(f"{args[0]!r} is not a .wasm or .wat file")
    scope.set("module", path, line)


def _writable(args: list[str]) -> bool:
    """The optional last word of WasmDir/WasmMapDir: 'ro' (the default) or 'rw'."""
    if len(args) and args[-1].lower() in ("ro", "rw"):
        return args.pop().lower() == "rw"
    return False


def _wasm_dir(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    writable = _writable(args)
    if len(args) != 1:
        raise ValueError("expected DIRECTORY [ro|rw]")
    host = parser.host_dir(args[0], line, "WasmDir")
    scope.append("mounts", Mount(str(host), host, writable), line)


def _wasm_map_dir(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    writable = _writable(args)
    if len(args) != 2:
        raise ValueError("expected GUEST-PATH HOST-DIRECTORY [ro|rw]")
    guest, host = args
    scope.append("mounts", Mount(guest, parser.host_dir(host, line, "WasmMapDir"), writable), line)


def _wasm_arg(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    scope.append("args", args[0], line)


def _wasm_env(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    name, value = args
    if not name or "=" in name:
        raise ValueError(f"invalid environment variable name {name!r}; it must be non-empty and without '='")
    scope.values.setdefault("env", {})[name] = value
    scope.sources["env"] = line


def _wasm_allow_outbound(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    for arg in args:
        scope.append("allow_outbound", parse_destination(arg), line)


def _require(parser: _Parser, scope: _Scope, args: list[str], line: _Line) -> None:
    rule = " ".join(args)
    _require_rule(rule)  # validate now rather than on the first request
    scope.append("require", rule, line)


_seconds_or_zero = _seconds(positive=False)

_TABLE = (
    # Anywhere: these act on the parser itself.
    _disk("Define", "NAME [VALUE]", _define, (1, 2)),
    _disk("Include", "FILE-OR-GLOB", _include(optional=False)),
    _disk("IncludeOptional", "FILE-OR-GLOB", _include(optional=True)),
    _disk("<IfDefine>", "[!]NAME", _open_ifdefine),
    _disk("<IfModule>", "[!]MODULE", _open_ifmodule),
    # Files on disk (filemap.py, dirconfig.py).
    _disk("<Files>", "[~] PATTERN", _open_disk_section("Files"), (1, 2)),
    _disk("<FilesMatch>", "REGEX", _open_disk_section("FilesMatch")),
    _disk("<Directory>", "[~] DIRECTORY", _open_disk_section("Directory"), (1, 2)),
    _disk("<DirectoryMatch>", "REGEX", _open_disk_section("DirectoryMatch")),
    _disk("Options", "[+|-]OPTION ...", _options, (1, None)),
    _disk("AllowOverride", "All|None|TYPE ...", _no_effect("AllowOverride has no effect: .htaccess files are never read"), (1, None)),
    _disk("DirectoryIndex", "FILE ...|disabled", _directory_index, (1, None)),
    _disk("AddType", "MIME-TYPE EXTENSION ...", _by_extension("add_types", _mime_type), (2, None)),
    _disk("AddHandler", "HANDLER EXTENSION ...", _add_handler, (2, None)),
    _Directive("DocumentRoot", "DIRECTORY", _document_root),
    _Directive("Alias", "URL-PATH FILE-OR-DIRECTORY", _alias, (2, 2)),
    _server("TypesConfig", "FILE", _types_config),
    _vhost(
        "ScriptAlias",
        "URL-PATH DIRECTORY",
        _no_effect("ScriptAlias has no effect: prefork-wasm runs no host CGI programs; use AddHandler wasm-handler .EXT", warn=True),
        (2, 2),
    ),
    _server("LoadModule", "MODULE FILE", _load_module, (2, 2)),
    _vhost("ServerAdmin", "EMAIL|URL", _no_effect("ServerAdmin has no effect: it is shown only on Apache's own error pages")),
    _vhost("HostnameLookups", "Off", _no_effect("client addresses are never resolved to names", only="Off")),
    _vhost("AddDefaultCharset", "Off", _no_effect("a response's charset is the one its module sets", only="Off")),
    # Server level only.
    _vhost("<Location>", "/PREFIX|~ REGEX", _open_location, (1, 2)),
    _vhost("<LocationMatch>", "REGEX", _open_location_match),
    _server("<VirtualHost>", "ADDRESS[:PORT] ...", _open_virtual_host, (1, None)),
    _server("ServerRoot", "DIRECTORY", _server_root),
    _vhost("ServerName", "HOSTNAME[:PORT]", _set("server_name", str)),
    _vhost("ServerAlias", "HOSTNAME ...", _server_alias, (1, None)),
    _server("Listen", "[HOST:]PORT", _listen),
    _server("PidFile", "FILE", _set_path("pid_file")),
    _vhost("ErrorLog", "FILE|stderr", _error_log),
    _server("LogLevel", "LEVEL", _set("log_level", _choice(*LOG_LEVELS))),
    _server("LogFormat", "FORMAT [NICKNAME]", _log_format, (1, 2)),
    _vhost("CustomLog", "FILE|stdout|stderr FORMAT-OR-NICKNAME", _custom_log, (2, 2)),
    _server("Timeout", "SECONDS", _set("timeout", _seconds(positive=True))),
    _server("RequestReadTimeout", "[header=SECONDS[-MAX][,MinRate=BYTES]] [body=...]", _request_read_timeout, (1, 3)),
    _server("KeepAlive", "On|Off", _set("keep_alive", _on_off)),
    _server("KeepAliveTimeout", "SECONDS", _set("keep_alive_timeout", _seconds_or_zero)),
    _server("MaxKeepAliveRequests", "COUNT", _set("max_keep_alive_requests", _count(0))),
    _server("StartServers", "COUNT", _set("start_servers", _count(1))),
    _server("MinSpareServers", "COUNT", _set("min_spare_servers", _count(0))),
    _server("MaxSpareServers", "COUNT", _set("max_spare_servers", _count(0))),
    _server("MaxRequestWorkers", "COUNT", _set("max_request_workers", _count(1))),
    _server("MaxClients", "COUNT", _set("max_request_workers", _count(1))),
    _server("ServerLimit", "COUNT", _set("server_limit", _count(1))),
    _server("MaxConnectionsPerChild", "COUNT", _set("max_connections_per_child", _count(0))),
    _server("MaxRequestsPerChild", "COUNT", _set("max_connections_per_child", _count(0))),
    _server("MaxMemoryPerChild", "SOFT [HARD]", _set("max_memory_per_child", _memory_per_child), (1, 2)),
    _server("MemoryMetric", "uss|pss|rss", _set("memory_metric", _choice("uss", "pss", "rss"))),
    _server("GracefulShutdownTimeout", "SECONDS", _set("graceful_shutdown_timeout", _seconds_or_zero)),
    _server("WasmCacheDir", "DIRECTORY", _set_path("wasm_cache_dir")),
    _server("User", "NAME|#UID", _set("user", _account(user_id, "user"))),
    _server("Group", "NAME|#GID", _set("group", _account(group_id, "group"))),
    _server("LimitRequestLine", "BYTES", _set("limit_request_line", _count(0))),
    _server("LimitRequestFieldSize", "BYTES", _set("limit_request_field_size", _count(0))),
    _server("LimitRequestFields", "COUNT", _set("limit_request_fields", _count(0))),
    _server("ListenBacklog", "COUNT", _set("listen_backlog", _count(1))),
    _server("LimitResponseBody", "SIZE", _set("limit_response_body", parse_size)),
    _server("AllowEncodedSlashes", "On|Off|NoDecode", _set("allow_encoded_slashes", _choice(*ENCODED_SLASHES))),
    # Server level (as defaults) or inside <Location>.
    _disk("SetHandler", "wasm-handler|server-status|metrics|health|none", _set("handler", _handler)),
    _disk("WasmModule", "FILE.wasm", _wasm_module),
    _disk("WasmDir", "DIRECTORY [ro|rw]", _wasm_dir, (1, 2)),
    _disk("WasmMapDir", "GUEST-PATH HOST-DIRECTORY [ro|rw]", _wasm_map_dir, (2, 3)),
    _disk("WasmArg", "ARGUMENT", _wasm_arg),
    _disk("WasmEnv", "NAME VALUE", _wasm_env, (2, 2)),
    _disk("WasmEnableCGI", "On|Off", _set("enable_cgi", _on_off)),
    _disk("WasmMapCGIFileNames", "On|Off", _set("map_cgi_file_names", _on_off)),
    _disk("WasmEntryPoint", "FUNCTION", _set("entry_point", str)),
    _disk("WasmTimeout", "SECONDS", _set("timeout", _seconds(positive=True))),
    _disk("WasmMemoryLimit", "SIZE", _set("memory_limit", _memory_limit)),
    _Directive("ForceType", "MIME-TYPE|None", _set("force_type", _force_type)),
    _disk("Require", "all granted|all denied|local|ip ADDRESS...", _require, (1, None)),
    _Directive("LimitRequestBody", "SIZE", _set("limit_request_body", parse_size)),
    _Directive("WasmAllowOutbound", "SCHEME://HOST[:PORT] ...", _wasm_allow_outbound, (1, None)),
    _Directive("WasmOutboundTimeout", "SECONDS", _set("outbound_timeout", _seconds(positive=True))),
    _Directive("WasmOutboundLimit", "SIZE", _set("outbound_limit", parse_size)),
)
_DIRECTIVES = {_key(directive.name): directive for directive in _TABLE}
_ATTR_NAMES = {
    "server_limit": "ServerLimit",
    "max_request_workers": "MaxRequestWorkers",
    "start_servers": "StartServers",
    "min_spare_servers": "MinSpareServers",
    "max_spare_servers": "MaxSpareServers",
}
