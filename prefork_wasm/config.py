"""The settings prefork-wasm runs by: a ServerConfig with its Listens, virtual hosts,
<Location> sections (`Locations`, merged per request as Apache merges them) and access
logs, and the errors a config can have.

conffile.py reads an httpd.conf into these through the directive table (directives.py); the
master, its workers and the request handler read them. Nothing here reads files.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dirconfig import DEFAULT_OPTIONS, DiskSection, apply_options, wasm_overrides
from .headers import HeaderAction
from .outbound import Destination, Policy
from .redirects import RedirectRule
from .reqtimeout import BODY_DEFAULT, HANDSHAKE_DEFAULT, HEADER_DEFAULT, ReadTimeout
from .static import DEFAULT_ETAG

PREDEFINED_LOG_FORMATS: dict[str, str] = {
    "common": '%h %l %u %t "%r" %>s %b',
    "combined": '%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i"',
}


DEFAULT_BODY_LIMIT = 1073741824  # LimitRequestBody's default, Apache's since 2.4.54


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


@dataclass(frozen=True)
class Listen:
    """One address to bind; host '' means all interfaces, IPv6 is kept without brackets.

    `source` ('FILE:LINE') is where it was asked for, so a bind error can name the line.
    """

    host: str
    port: int
    source: str = field(default="", compare=False)
    protocol: str = field(default="", compare=False)  # Listen's optional protocol argument ('https'), lower case

    def __str__(self) -> str:
        host = "*" if not self.host else f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


# SSLProtocol's default here: TLS 1.2 and 1.3 (Apache's 'all' also takes TLS 1.0 and 1.1).
DEFAULT_TLS_PROTOCOLS = frozenset({"TLSv1.2", "TLSv1.3"})
# SSLCipherSuite's default for TLS 1.2: Mozilla's "intermediate" profile (forward secret AEAD
# suites only); TLS 1.3 has its own suites, OpenSSL's defaults.
DEFAULT_CIPHER_SUITE = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True)
class TLSSettings:
    """mod_ssl's settings of one server (the main one or a <VirtualHost>, which inherits what it
    does not set from the main server's, as Apache merges them). `sources`: where each was made
    ('FILE:LINE' by attribute), for the errors the master finds reading the files."""

    engine: bool = False  # SSLEngine
    certificate_file: Path | None = None  # SSLCertificateFile: the leaf, maybe its chain and key too
    key_file: Path | None = None  # SSLCertificateKeyFile; None: the key is in certificate_file
    chain_file: Path | None = None  # SSLCertificateChainFile
    protocols: frozenset[str] = DEFAULT_TLS_PROTOCOLS  # SSLProtocol: 'TLSv1.2', 'TLSv1.3'
    cipher_suite: str = DEFAULT_CIPHER_SUITE  # SSLCipherSuite (TLS 1.2 and below)
    tls13_cipher_suite: str = ""  # SSLCipherSuite TLSv1.3 ...: accepted, not applied (Python cannot)
    honor_cipher_order: bool = False  # SSLHonorCipherOrder
    session_tickets: bool = True  # SSLSessionTickets
    strict_sni: bool = False  # SSLStrictSNIVHostCheck
    legacy_dn: bool = False  # SSLOptions +LegacyDNStringFormat (at server level): SSL_SERVER_*_DN's form
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def compatible(self, other: TLSSettings) -> bool:
        """Apache's ssl_server_compatible: whether a request whose Host chose a server other than
        the one its handshake (SNI) chose may be served on that connection: the same protocols,
        cipher suites, certificate and key. Else 421 Misdirected Request."""
        return (self.engine, self.protocols, self.cipher_suite, self.tls13_cipher_suite, self.certificate_file,
                self.key_file) == (other.engine, other.protocols, other.cipher_suite, other.tls13_cipher_suite,
                                   other.certificate_file, other.key_file)


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
    limit_request_body: int = DEFAULT_BODY_LIMIT
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
    ssl_std_env_vars: bool = False  # SSLOptions +StdEnvVars: guests get the SSL_* variables
    options: frozenset[str] = DEFAULT_OPTIONS
    fallback_resource: str | None = None  # FallbackResource: the local URL of what maps to nothing
    # Apache's other per-request settings: mod_headers' lines (the outer context's first, as
    # Apache runs them), mod_alias's redirects (the inner context's first: the first that
    # matches wins), core's ErrorDocument by status (None: the server's own page).
    headers: list[HeaderAction] = field(default_factory=list)
    request_headers: list[HeaderAction] = field(default_factory=list)
    redirects: list[RedirectRule] = field(default_factory=list)
    error_documents: dict[int, str | None] = field(default_factory=dict)
    server_signature: str = "off"  # ServerSignature: the footer of the server's own pages (on, off, email)
    file_etag: frozenset[str] = DEFAULT_ETAG  # FileETag: what a file's ETag is made of
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
        everyone, networks = require_rule(rule)
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
    condition: tuple[str, bool] | None = None  # env=[!]VAR: (VAR, whether it must be set)


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


@dataclass
class Locations:
    """The sections of one server (the main one or a virtual host) over its location-level
    defaults, merged as Apache merges them: every section that matches the path, plain and
    regex alike, in config order, each overriding what the ones before set. `disk` are the
    server's <Directory>/<Files> sections (dirconfig.py), which apply once a URL without a
    handler is mapped to a file.

    Plain data and pure functions of it, for start-up (-S, -t, what to compile) and for the
    router, which keeps a worker's merged results (router.LocationIndex).
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    default_sources: dict[str, str] = field(default_factory=dict, compare=False)
    sections: list[Section] = field(default_factory=list)
    disk: list[DiskSection] = field(default_factory=list)  # in config order, the main server's first

    def key(self, path: str) -> tuple[int, ...]:
        """Which sections match `path` (a request's normalised path, paths.request_path)."""
        return tuple(i for i, section in enumerate(self.sections) if section.matches(path))

    def serving(self) -> str | None:
        """The first server-level setting that serves requests by itself, if any."""
        return next((attr for attr in _SERVING if attr in self.defaults), None)

    def merge(self, key: tuple[int, ...], source: str | None = None) -> LocationConfig:
        """The defaults overlaid by the sections in `key`, in order: a setting made later wins;
        WasmEnv, AddType and AddHandler merge by name, Options lines apply in turn. The handler
        is mounted (SCRIPT_NAME) at the last plain prefix that sets the handler or the module,
        else at '/'."""
        values, sources = dict(self.defaults), dict(self.default_sources)
        by_name = {attr: dict(self.defaults.get(attr, {})) for attr in MERGED_BY_NAME}
        listed = {attr: list(self.defaults.get(attr, [])) for attr in MERGED_IN_ORDER}
        redirects = list(self.defaults.get("redirects", []))
        explicit: set[str] = set()
        serving = self.serving()
        prefix, where = "/", self.default_sources.get(serving, "") if serving else ""
        for section in (self.sections[i] for i in key):
            values.update(section.values)
            sources.update(section.sources)
            explicit.update(section.values)
            for attr, merged in by_name.items():
                merged.update(section.values.get(attr, {}))
            for attr, items in listed.items():
                items += section.values.get(attr, [])
            redirects[:0] = section.values.get("redirects", [])
            where = section.source
            if section.regex is None and ("handler" in section.values or "module" in section.values):
                prefix = section.pattern
        options = apply_options(DEFAULT_OPTIONS, listed.pop("options"))
        file_etag = apply_options(DEFAULT_ETAG, listed.pop("file_etag"))
        values = copy.deepcopy(
            {**values, **by_name, **listed, "options": options, "file_etag": file_etag, "redirects": redirects}
        )
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


# Server-level settings that serve '/' alone (a Redirect answers without anything to serve).
_SERVING = ("handler", "document_root", "aliases", "redirects")
MERGED_BY_NAME = ("env", "add_types", "add_handlers", "error_documents")  # a later place adds to the earlier entries
# A later place's lines run after the earlier ones (Options and FileETag: +/- change what came before).
MERGED_IN_ORDER = ("options", "file_etag", "headers", "request_headers")


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
    tls: TLSSettings = field(default_factory=TLSSettings)  # its own mod_ssl settings over the main server's
    names: re.Pattern[str] = field(init=False, compare=False, repr=False)  # ServerName and ServerAliases

    def __post_init__(self) -> None:
        # Compiled with the settings it is made of, not on first use: the config holds no
        # per-worker state.
        names = [re.escape(self.server_name)] if self.server_name else []
        names += ["".join(_WILDCARDS.get(c, re.escape(c)) for c in alias.lower()) for alias in self.aliases]
        self.names = re.compile("|".join(names) or "(?!)")  # (?!): no name at all matches nothing

    def answers(self, name: str) -> bool:
        """Whether a canonical host name is this host's ServerName or one of its ServerAliases
        (whose '*' and '?' are wildcards, as in Apache)."""
        return self.names.fullmatch(name) is not None


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
    module_log_levels: dict[str, str] = field(default_factory=dict)  # LogLevel MODULE:LEVEL, by module
    log_formats: dict[str, str] = field(default_factory=lambda: dict(PREDEFINED_LOG_FORMATS))
    custom_logs: list[CustomLog] = field(default_factory=list)
    timeout: float = 60.0
    read_timeout_header: ReadTimeout = HEADER_DEFAULT  # RequestReadTimeout header=
    read_timeout_body: ReadTimeout = BODY_DEFAULT  # RequestReadTimeout body=
    read_timeout_handshake: ReadTimeout = HANDSHAKE_DEFAULT  # RequestReadTimeout handshake= (TLS ports)
    keep_alive: bool = True
    keep_alive_timeout: float = 5.0
    max_keep_alive_requests: int = 100
    start_servers: int = 5
    min_spare_servers: int = 5
    max_spare_servers: int = 10
    max_request_workers: int = 256
    server_limit: int = 256
    max_connections_per_child: int = 0
    max_held_connections: int = 8192  # connections all workers together hold; 0: descriptors alone bound them
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
    server_tokens: str | None = None  # ServerTokens (messages.server_banner); None: the product only
    trace_enable: str = "on"  # TraceEnable: on (echo, no body), off (405) or extended (with a body)
    types_config: Path | None = None  # TypesConfig; None: the system's mime.types or Python's table
    tls: TLSSettings = field(default_factory=TLSSettings)  # the main server's mod_ssl settings
    # What -S shows and -t checks: each section's merged settings (Locations.representatives).
    locations: list[LocationConfig] = field(default_factory=list)
    routes: Locations = field(default_factory=Locations)  # the main server's
    virtual_hosts: list[VirtualHost] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # info level: lines accepted without effect
    # Where each server-level setting was made ('FILE:LINE' by attribute), for errors found
    # after parsing (a log that cannot be opened, say).
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def tables(self) -> list[Locations]:
        """The main server's Locations, then each virtual host's."""
        return [self.routes, *(host.routes for host in self.virtual_hosts)]

    def hosts_on(self, listen: Listen) -> list[VirtualHost]:
        """The virtual hosts connections accepted on `listen` may reach, in config order (the
        first is the default of its address); none: the main server answers there."""
        return [host for host in self.virtual_hosts if any(covers(listen, address) for address in host.addresses)]

    def tls_on(self, listen: Listen) -> TLSSettings | None:
        """The TLS settings of the default server of `listen` when its port speaks TLS (its hosts
        have SSLEngine on: conffile refuses a mix), else None."""
        hosts = self.hosts_on(listen)
        settings = hosts[0].tls if hosts else self.tls
        return settings if settings.engine else None

    def modules(self) -> list[Path]:
        """Every module a request can run (on the main server or a virtual host), each once, first
        use first: what the master compiles."""
        return list(dict.fromkeys(module for table in self.tables() for module in table.modules()))

    def module_lines(self, module: Path) -> list[str]:
        """Where the config names `module` ('FILE:LINE' of each WasmModule line), in file order."""
        found: list[str] = []
        for table in self.tables():
            if table.defaults.get("module") == module:
                found.append(table.default_sources["module"])
            found += [s.sources["module"] for s in table.sections if s.values.get("module") == module]
            found += [str(d.sources["module"]) for d in table.disk if d.settings.get("module") == module]
        return list(dict.fromkeys(found))

    def section_runs(self) -> list[LocationConfig]:
        """Every server's Locations as <Directory>/<Files> sections change how their scripts run
        (Locations.section_runs)."""
        return [loc for table in self.tables() for loc in table.section_runs()]

    def guest_runs(self) -> list[LocationConfig]:
        """Every merged setting under which a guest runs: what start-up checks (entry points,
        memory) and what bounds a worker's silence (WasmTimeout)."""
        return [loc for loc in [*self.locations, *self.section_runs()] if loc.guest_module is not None]


_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@functools.lru_cache(maxsize=256)
def require_rule(rule: str) -> tuple[bool, tuple[_Network, ...]]:
    """(grants everyone, networks granted) for one Require line; cached since allows() runs per
    request. The directive table calls it too, so that a bad rule fails at its line."""
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


def covers(listen: Listen, address: Listen) -> bool:
    """Whether connections accepted on `listen` can be addressed to a <VirtualHost> `address`
    (port 0: any)."""
    hosts = not listen.host or not address.host or _ip_text(listen.host) == address.host
    return hosts and address.port in (0, listen.port)


def _ip_text(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _prefix_covers(prefix: str, path: str) -> bool:
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path == prefix or path.startswith(f"{prefix}/")


def canonical_name(name: str) -> str:
    """A ServerName as a host is known by (%v): without its port, scheme or trailing dot, lower case."""
    name = name.partition("://")[2] or name if "://" in name else name
    if name.startswith("["):
        name = name[: name.find("]") + 1]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    return name.rstrip(".").lower()
