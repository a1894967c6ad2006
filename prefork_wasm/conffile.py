"""Read an httpd.conf-style configuration into a ServerConfig (config.py).

Apache's syntax is kept (Define, IfDefine, Include, <Location>, prefork and
mod_wasm directive names, Apache's defaults) so existing habits and configs
carry over.  Unlike Apache, everything is checked up front and every error
names the file, the line, the directive and the fix, because a pre-fork
server that dies in its children is much harder to debug than one that
refuses to start.

The reader owns the syntax (logical lines, quoting, ${VAR}, sections and their
nesting, Include) and hands each directive to the table in directives.py; once
every file is read it builds the ServerConfig and checks it as a whole. It reads
files and never opens sockets or compiles modules.
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from .config import (
    MAX_ERRORS,
    MERGED_BY_NAME,
    MERGED_IN_ORDER,
    ConfigError,
    ConfigErrors,
    CustomLog,
    Listen,
    LocationConfig,
    Locations,
    Section,
    ServerConfig,
    TLSSettings,
    VirtualHost,
    canonical_name,
    covers,
)
from .confstate import Line, OpenSection, ReadState, Scope, ServerRead
from .directives import lookup, unknown
from .logs import FormatError, compile_format

_T = TypeVar("_T")
MAX_SERVER_LIMIT = 20000  # Apache prefork's compile-time MAX_SERVER_LIMIT
_SERVING_LABELS = {
    "handler": "SetHandler", "document_root": "DocumentRoot", "aliases": "Alias", "redirects": "Redirect"
}
_ATTR_NAMES = {  # the settings apply_limits corrects, by directive name
    "server_limit": "ServerLimit",
    "max_request_workers": "MaxRequestWorkers",
    "start_servers": "StartServers",
    "min_spare_servers": "MinSpareServers",
    "max_spare_servers": "MaxSpareServers",
}


def parse_config(path: str | Path, defines: Iterable[str] = ()) -> ServerConfig:
    """Parse the main config file; `defines` are -D names (defined with value '').

    Raises ConfigError: ConfigErrors with every error found (up to MAX_ERRORS) when there
    are several, each line skipped and parsing resumed after it.
    """
    file = Path(path).absolute()
    reader = Reader(file, defines)
    try:
        text = _read_text(file)
    except ValueError as exc:
        raise ConfigError(str(path), 0, str(exc)) from None
    reader.read(text, str(path), file)
    return reader.finish(file, str(path))


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


def _section_name(text: str) -> str:
    """'Location' from '<Location /x>' (also from a malformed opening line, so it can be skipped)."""
    return text[1:].split()[0].rstrip(">") if text[1:].split() else ""


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read '{path}': {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"'{path}' is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


class Reader(ReadState):
    """Reads config files into its state: their lines, sections, includes and errors."""

    def __init__(self, file: Path, defines: Iterable[str]) -> None:
        super().__init__(file, defines)
        self.errors: list[ConfigError] = []
        self.broken: list[Scope] = []  # scopes with a failed line: their checks after parsing would echo it
        self.base = 0  # sections below this belong to including files
        self.reading: list[Path] = []
        self.told: set[tuple[str, int]] = set()  # (host, port) pairs warned about once

    # reading

    def read(self, text: str, name: str, path: Path) -> None:
        """Parse one file; like Apache, sections must close in the file that opened them."""
        outer_base, self.base = self.base, len(self.stack)
        self.reading.append(path.resolve())
        for number, line_text in _logical_lines(text):
            line = Line(name, number, line_text)
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
                    self.stack.append(OpenSection(section_name, f"<{section_name}>", line, active=False))
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

    def line(self, line: Line) -> None:
        if line.text.startswith("</"):
            self.close(line)
        elif self.active:
            self.dispatch(line)
        elif line.text.startswith("<"):
            # Skipped text is not parsed (an Include in it is not read), but its sections must balance.
            name = _section_name(line.text)
            self.stack.append(OpenSection(name, f"<{name}>", line, active=False))

    @property
    def active(self) -> bool:
        return not self.stack or self.stack[-1].active

    def close(self, line: Line) -> None:
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

    def dispatch(self, line: Line) -> None:
        """Run one directive; value errors get its file, line and name attached."""
        first = line.text.split()[0]
        known = lookup(first)
        label = known.name if known else first
        try:
            words = self.words(line.text)
            if not words:
                raise ValueError("the line is empty after substituting variables")
            word, *args = words
            directive = lookup(word)
            if directive is None:
                raise line.error(unknown(word))
            section = self.location()
            if directive.server_only and section:
                raise ValueError(
                    f"not allowed inside {section.label} (opened at {section.line}); move it to server level"
                )
            if section and section.disk and not directive.on_disk:
                raise ValueError(
                    f"not supported inside {section.label} (opened at {section.line}): such a section takes "
                    f"Require, Options, SetHandler, AddHandler, AddType, DirectoryIndex, FallbackResource and "
                    f"the Wasm settings of a script's run; put it in a <Location> or at server level"
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
        tables = [(self.main, routes), *((vhost, host.routes) for vhost, host in zip(self.vhosts, hosts, strict=True))]
        for context, table in tables:
            locations += [loc for loc in self.check_routes(context, table) if loc not in locations]
        if self.errors:
            raise ConfigErrors(self.errors, stopped=False)
        root = self.server_root
        # Default paths follow the final ServerRoot; mod_ssl's settings are gathered apart.
        values = {
            "pid_file": root / "logs" / "prefork-wasm.pid",
            "wasm_cache_dir": root / "cache",
            **{attr: value for attr, value in self.main.server.values.items() if not attr.startswith("ssl_")},
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
            tls=_tls(self.main.server),
            **values,
        )
        for host in hosts:
            host.server_name = host.server_name or canonical_name(config.server_name or "")
        self.apply_limits(config)
        self.check_server_module(config)
        self.check_addresses(config)
        self.check_tls(config)
        if self.errors:
            raise ConfigErrors(self.errors, stopped=False)
        return config

    def custom_log(
        self, target: str, fmt: str, line: Line, condition: tuple[str, bool] | None, host: int | None
    ) -> CustomLog:
        """A nickname's format was checked at its LogFormat line; a literal one is checked here."""
        if fmt in self.log_formats:
            return CustomLog(target, self.log_formats[fmt], str(line), host, condition)
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
        return CustomLog(target, fmt, str(line), host, condition)

    def routes(self, context: ServerRead, main: Locations | None) -> Locations:
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
        for attr in MERGED_BY_NAME:
            if attr in defaults:
                defaults[attr] = {**main.defaults.get(attr, {}), **own.values.get(attr, {})}
        for attr in (*MERGED_IN_ORDER, "aliases"):
            if attr in defaults:
                defaults[attr] = [*main.defaults.get(attr, []), *own.values.get(attr, [])]
        if "redirects" in defaults:  # the host's own first: mod_alias tries the inner context's first
            defaults["redirects"] = [*own.values.get("redirects", []), *main.defaults.get("redirects", [])]
        return Locations(
            defaults,
            {**main.default_sources, **_sources(own)},
            main.sections + sections,
            main.disk + context.disk_sections,
        )

    def virtual_host(self, context: ServerRead, main: Locations) -> VirtualHost:
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
            tls=_tls(self.main.server, context.server),
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

    def check_routes(self, context: ServerRead, routes: Locations) -> list[LocationConfig]:
        """Each section's merged settings (Locations.representatives), checked: a wasm-handler
        (SetHandler, or AddHandler for scripts) needs a module, a module needs a wasm-handler.
        Exact for prefixes; where a regex section could supply the missing half the check is left
        to the request (a 500 with a log line), and a regex section's own result is only warned
        about, since what it merges with depends on the path."""
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

    def check_tls(self, config: ServerConfig) -> None:
        """Each server with SSLEngine on that can answer has a certificate; the hosts of one
        address:port agree on TLS (a port speaks it or not, before any host is chosen); a Listen
        named https has TLS."""
        main_answers = any(not config.hosts_on(listen) for listen in config.listens)
        servers = [(config.tls, ""), *((host.tls, host.source) for host in config.virtual_hosts)]
        for settings, where in servers[0 if main_answers else 1 :]:
            if settings.engine and settings.certificate_file is None:
                self.fail(_located(
                    settings.sources["engine"],
                    "SSLEngine on needs SSLCertificateFile (and SSLCertificateKeyFile unless the key is in that file)"
                    + (f" for the <VirtualHost> at {where}" if where else ""),
                    "SSLEngine",
                ))
        mixed: set[tuple[str, str]] = set()
        for listen in config.listens:
            hosts = config.hosts_on(listen)
            on = [host for host in hosts if host.tls.engine]
            off = [host for host in hosts if not host.tls.engine]
            if on and off and (on[0].source, off[0].source) not in mixed:
                mixed.add((on[0].source, off[0].source))
                self.fail(_located(
                    off[0].source,
                    f"this host has no SSLEngine on, and the <VirtualHost> at {on[0].source} on the same address "
                    f"({listen}) has: a port speaks TLS to all its hosts or to none; add SSLEngine on here "
                    f"or move one of them to another port",
                    "<VirtualHost>",
                ))
            self.check_handshake_settings(on, listen)
            if listen.protocol == "https" and config.tls_on(listen) is None and not on:
                self.warn(
                    self.listens[listen],
                    f"Listen {listen} https: no server answering there has SSLEngine on, so the port speaks plain "
                    f"HTTP (the protocol argument does not turn TLS on); add SSLEngine on and a certificate",
                )

    def check_handshake_settings(self, hosts: list[VirtualHost], listen: Listen) -> None:
        """SNI switches a handshake to the named host's certificate, key and TLS 1.2 cipher suites
        (OpenSSL's SSL_set_SSL_CTX); Python's ssl cannot switch its protocols and options as
        mod_ssl does, so the default host's apply on the whole address. A host that sets them
        otherwise is told so."""
        for host in hosts[1:]:
            differ = [(attr, name) for attr, name in _HANDSHAKE_SETTINGS if getattr(host.tls, attr) != getattr(
                hosts[0].tls, attr)]
            if differ and (host.source, listen.port) not in self.told:
                self.told.add((host.source, listen.port))
                attr = differ[0][0]
                self.warn(
                    _line(host.tls.sources.get(attr) or host.source),
                    f"{', '.join(name for _, name in differ)} of this host differ from the default host's "
                    f"(<VirtualHost> at {hosts[0].source}) on {listen}: a handshake there uses the default host's "
                    f"(SNI switches the certificate and cipher suites only); set them alike, or give this host "
                    f"its own port",
                )

    def check_addresses(self, config: ServerConfig) -> None:
        """A <VirtualHost> address no Listen covers never answers. Apache says nothing; a user
        who wrote it expects it to work, so it is a warning."""
        for host, vhost in zip(config.virtual_hosts, self.vhosts, strict=True):
            for address in host.addresses:
                if not any(covers(listen, address) for listen in config.listens):
                    assert vhost.line is not None
                    self.warn(
                        vhost.line,
                        f"<VirtualHost> address {_address_text(address)} matches no Listen, so this host never "
                        f"answers there; add a Listen for it or change the address",
                    )


# What the default host of an address sets for every handshake there (check_handshake_settings).
_HANDSHAKE_SETTINGS = (
    ("protocols", "SSLProtocol"), ("session_tickets", "SSLSessionTickets"),
    ("honor_cipher_order", "SSLHonorCipherOrder"),
)


def _line(source: str) -> Line:
    file, _, number = source.rpartition(":")
    return Line(file, int(number), "")


def _tls(*scopes: Scope) -> TLSSettings:
    """mod_ssl's settings of a server from its scopes' ssl_* values, a later scope's (a
    <VirtualHost>'s) over an earlier one's (the main server's), as Apache merges them."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for scope in scopes:
        for attr, value in scope.values.items():
            if attr.startswith("ssl_"):
                values[attr.removeprefix("ssl_")] = value
                sources[attr.removeprefix("ssl_")] = str(scope.sources[attr])
    return TLSSettings(**values, sources=sources)


def _address_text(address: Listen) -> str:
    return str(address) if address.port else str(address).rsplit(":", 1)[0]


def _sources(scope: Scope) -> dict[str, str]:
    return {attr: str(line) for attr, line in scope.sources.items()}


def _located(source: str, message: str, directive: str) -> ConfigError:
    """A ConfigError at a 'FILE:LINE' source string."""
    file, _, line = source.rpartition(":")
    return ConfigError(file, int(line), message, directive)
