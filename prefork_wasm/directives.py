"""The directive table: every directive prefork-wasm takes, with its usage, its arity, where it
may stand (server level, <VirtualHost>, <Location>, <Directory>/<Files>) and what it does to
the read state (confstate.py). The reader (conffile.py) looks each line up here and applies
it; values are converted by convert.py. A directive it lacks is refused by name, saying which
Apache module it belongs to when it is one of Apache's.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import headers, tlsdirectives
from .config import Mount, canonical_name, require_rule
from .confstate import Line, LocationBlock, OpenSection, ReadState, Scope, ServerRead, join_path
from .convert import (
    HANDLERS,
    choice,
    count,
    extensions,
    file_etag,
    force_type,
    handler_name,
    location_regex,
    memory_limit,
    memory_per_child,
    mime_type,
    on_off,
    parse_listen,
    parse_size,
    seconds,
    vhost_address,
)
from .dirconfig import INERT_OPTIONS, DiskSection, check_pattern, parse_options
from .logs import compile_format, parse_condition
from .logtargets import check_piped, is_piped, syslog_facility
from .outbound import parse_destination
from .paths import ENCODED_SLASHES
from .privileges import group_id, user_id
from .redirects import parse_error_document, parse_redirect
from .reqtimeout import parse_phase

SERVER_TOKENS = ("prod", "productonly", "major", "minor", "min", "minimal", "os", "full")
LOG_LEVELS = (
    *["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"], *(f"trace{n}" for n in range(1, 9))
)

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
    "alias_module": "mod_alias.c",  # Alias, Redirect, RedirectMatch
    "headers_module": "mod_headers.c",  # Header, RequestHeader
    "ssl_module": "mod_ssl.c",  # SSLEngine, SSLCertificateFile ... (tlsdirectives.py)
}
STATIC_MODULES = ("core_module", "so_module", "http_module", "mpm_prefork_module")  # Apache's -M says (static)
_OTHER_MPMS = ("mpm_event_module", "mpm_worker_module")


_Apply = Callable[[ReadState, Scope, list[str], Line], None]
_Convert = Callable[..., Any]


@dataclass(frozen=True)
class Directive:
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


_server = functools.partial(Directive, server_only=True)
_vhost = functools.partial(Directive, server_only=True, in_vhost=True)
_disk = functools.partial(Directive, on_disk=True)


def _key(word: str) -> str:
    """Table key for a directive word: lower case, sections as '<name>'."""
    name = word.lower().rstrip(">")
    return f"{name}>" if name.startswith("<") else name


def _account(account_id: Callable[[str], int], kind: str) -> Callable[[str], str]:
    """User/Group must name an existing account, so a typo fails at -t, not in every worker."""

    def convert(arg: str) -> str:
        try:
            account_id(arg)
        except (KeyError, ValueError):
            raise ValueError(f"no such {kind} {arg!r} on this system") from None
        return arg

    return convert


def _set(attr: str, convert: _Convert) -> _Apply:
    """Store convert(*args) as attr; a later directive overrides an earlier one, as in Apache."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        scope.set(attr, convert(*args), line)

    return apply


def _set_path(attr: str) -> _Apply:
    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        scope.set(attr, reader.path(args[0]), line)

    return apply


def _log_target(reader: ReadState, arg: str, streams: tuple[str, ...]) -> str:
    """A file (from ServerRoot), one of `streams`, or a piped log program ('|program args')."""
    if is_piped(arg):
        check_piped(arg)
        return arg
    return arg if arg in streams else str(reader.path(arg))


def _error_log(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """Also syslog[:facility[:tag]], as Apache's ErrorLog takes it (facility local7 by default)."""
    target = args[0]
    if syslog_facility(target) is None:
        target = _log_target(reader, target, ("stderr",))
    scope.set("error_log", target, line)


def _custom_log(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    # The nickname is looked up after parsing, so a later LogFormat still counts (as in Apache).
    condition = parse_condition(args[2]) if len(args) == 3 else None
    target = _log_target(reader, args[0], ("stdout", "stderr"))
    reader.context().custom_logs.append((target, args[1], line, condition))


def module_name(name: str) -> str | None:
    """A module as LogLevel names it ('wasm', 'wasm_module' or 'mod_wasm.c') as the error log
    names it ('wasm'); None when it is an Apache module prefork-wasm does not provide.
    ValueError for a name that is no module at all."""
    lowered = name.lower()
    for identifier, source in PROVIDED_MODULES.items():
        if lowered in (identifier, identifier.removesuffix("_module"), source):
            return _LOG_NAMES.get(identifier, identifier.removesuffix("_module"))
    if lowered in _APACHE_MODULE_NAMES or f"{lowered}_module" in _APACHE_MODULE_NAMES:
        return None
    if re.fullmatch(r"mod_\w+\.c", lowered):
        return None
    known = sorted({_LOG_NAMES.get(i, i.removesuffix("_module")) for i in PROVIDED_MODULES})
    raise ValueError(f"no module {name!r}; LogLevel MODULE:LEVEL takes one of {', '.join(known)}")


# The error log names a module as Apache does: its identifier without '_module'; prefork's is
# 'mpm_prefork' (as in Apache's [mpm_prefork:notice] lines).
_LOG_NAMES = {"mpm_prefork_module": "mpm_prefork"}


def _log_level(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """`LogLevel [MODULE:]LEVEL ...`: a level alone is every module's (and resets the ones set
    for single modules, as in Apache); MODULE:LEVEL is that module's."""
    modules: dict[str, str] = dict(scope.values.get("module_log_levels", {}))
    for arg in args:
        module, sep, level = arg.rpartition(":")
        level = choice(*LOG_LEVELS)(level)
        if not sep:
            scope.set("log_level", level, line)
            modules = {}
            continue
        name = module_name(module)
        if name is None:
            reader.note(line, f"LogLevel {arg}: prefork-wasm has no {module}; no effect")
        else:
            modules[name] = level
    scope.set("module_log_levels", modules, line)


def _log_format(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    compile_format(args[0])  # the access log's own compiler: what parses here logs there
    # One argument sets the default format for TransferLog, which we don't have: accepted, unused.
    if len(args) == 2:
        reader.log_formats[args[1]] = args[0]


def _request_read_timeout(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """mod_reqtimeout's phase=value arguments; a phase not named keeps its value (default or
    from an earlier line)."""
    for arg in args:
        phase, sep, value = arg.partition("=")
        phase = phase.lower()
        if not sep or phase not in ("handshake", "header", "body"):
            raise ValueError(
                f"expected handshake=, header= or body= followed by timeout[-maxtimeout][,MinRate=rate], got {arg!r}"
            )
        scope.set(f"read_timeout_{phase}", parse_phase(value), line)


def _listen(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """`Listen [HOST:]PORT [http|https]`: the protocol names the port's use, as in Apache; TLS is
    on where the hosts answering there have SSLEngine on (conffile checks the two agree)."""
    listen = parse_listen(args[0], args[1] if len(args) == 2 else "")
    if listen in reader.listens:
        raise ValueError(f"{listen} is already listed at {reader.listens[listen]}; remove one")
    reader.listens[listen] = line


def _server_root(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    root = join_path(reader.config_dir, args[0])
    if not root.is_dir():
        raise ValueError(
            f"no such directory {args[0]!r}"
            f" (relative paths are taken from the config file's folder {reader.config_dir})"
        )
    reader.server_root = root


def _define(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    name, *value = args
    if not re.fullmatch(r"\w+", name):
        raise ValueError(f"invalid variable name {name!r}; use letters, digits and _")
    reader.defines[name] = value[0] if value else ""


def _include(*, optional: bool) -> _Apply:
    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        reader.include(args[0], optional)

    return apply


def _open_location(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """<Location /prefix>, or <Location ~ REGEX>, Apache's other spelling of <LocationMatch>."""
    if args[0] == "~":
        if len(args) != 2:
            raise ValueError("expected '~ REGEX' (or write <LocationMatch REGEX>)")
        _open_section(reader, "Location", args[1], line, location_regex(args[1]))
        return
    prefix = args[0]
    if len(args) != 1:
        raise ValueError(f"expected one /PREFIX, got {len(args)} arguments (quote a prefix with spaces)")
    if not prefix.startswith("/"):
        raise ValueError(f"URL prefix must start with '/', got {prefix!r}")
    _open_section(reader, "Location", prefix, line, None)


def _open_location_match(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    _open_section(reader, "LocationMatch", args[0], line, location_regex(args[0]))


def _open_section(reader: ReadState, name: str, pattern: str, line: Line, regex: re.Pattern[str] | None) -> None:
    block = LocationBlock(line, pattern, regex)
    reader.context().blocks.append(block)
    label = f"<{name} {'~ ' if regex and name == 'Location' else ''}{pattern}>"
    reader.stack.append(OpenSection(name, label, line, True, block.scope))


def _open_virtual_host(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    context = ServerRead(line, [vhost_address(arg) for arg in args])
    reader.vhosts.append(context)
    reader.stack.append(OpenSection("VirtualHost", f"<VirtualHost {' '.join(args)}>", line, True, vhost=context))


def _server_alias(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    context = reader.context()
    if context.line is None:
        raise ValueError("ServerAlias names a <VirtualHost>; put it inside one (beside its ServerName)")
    context.aliases += [canonical_name(alias) for alias in args]


def _open_ifdefine(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    negated = args[0].startswith("!")
    name = args[0][1:] if negated else args[0]
    if not name:
        raise ValueError("expected NAME or !NAME")
    active = (name in reader.defines) != negated
    reader.stack.append(OpenSection("IfDefine", f"<IfDefine {args[0]}>", line, active))


def _load_module(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """The path is not looked at: what a provided module does is built in (like Apache's static modules)."""
    name = args[0]
    if name in PROVIDED_MODULES:
        reader.note(line, f"LoadModule {name}: built into prefork-wasm, nothing to load")
    elif name in _OTHER_MPMS:
        reader.note(line, f"LoadModule {name}: prefork-wasm is always mpm_prefork_module; ignored")
    else:
        reader.warn(line, f"prefork-wasm has no equivalent of {name}; its directives will be refused")


def _open_ifmodule(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """True for the modules prefork-wasm provides, named as 'wasm_module' or 'mod_wasm.c'."""
    negated = args[0].startswith("!")
    name = args[0][1:] if negated else args[0]
    if not name:
        raise ValueError("expected MODULE or !MODULE (e.g. wasm_module or mod_wasm.c)")
    provided = name in PROVIDED_MODULES or name in PROVIDED_MODULES.values()
    reader.stack.append(OpenSection("IfModule", f"<IfModule {args[0]}>", line, provided != negated))


def _open_disk_section(kind: str) -> _Apply:
    """<Directory>, <Files> and their Match forms (also as '<Directory ~ REGEX>'): settings for
    files on disk, merged per request by dirconfig.settings_for. A <Files> may sit in a
    <Directory> (then it applies only under it); nothing else nests."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        name = kind
        if len(args) == 2:
            if args[0] != "~" or kind.endswith("Match"):
                raise ValueError(f"expected <{kind} PATTERN> or <{kind} ~ REGEX>")
            name, args = f"{kind}Match", args[1:]
        pattern = args[0]
        section = reader.location()
        within = None
        if section is not None:
            if section.disk is None or not kind.startswith("Files") or section.disk.kind.startswith("Files"):
                raise ValueError(f"not allowed inside {section.label} (opened at {section.line})")
            within = section.disk
        if name == "Directory":
            pattern = str(reader.path(pattern))
        check_pattern(name, pattern)
        disk_scope = Scope()
        disk = DiskSection(name, pattern, str(line), disk_scope.values, within, disk_scope.sources)
        reader.context().disk_sections.append(disk)  # each <VirtualHost> has its own
        reader.stack.append(OpenSection(kind, f"<{kind} {' '.join(args)}>", line, True, disk_scope, disk))

    return apply


def _no_effect(reason: str, *, warn: bool = False, only: str | None = None) -> _Apply:
    """Accept an Apache directive that changes nothing here, saying why at info level (or as a
    warning when the user would expect an effect); `only` is the one value that is true here."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        if only is not None and args[0].lower() != only.lower():
            raise ValueError(f"only '{only}' is supported: {reason}")
        (reader.warn if warn else reader.note)(line, reason)

    return apply


def _by_extension(attr: str, convert: _Convert) -> _Apply:
    """AddHandler/AddType VALUE EXT...: later lines add to (and override) earlier ones."""

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        value = convert(args[0])
        scope.values.setdefault(attr, {}).update(dict.fromkeys(extensions(args[1:]), value))
        scope.sources[attr] = line

    return apply


def _add_handler(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """A handler prefork-wasm lacks (cgi-script) is kept, so its files are refused (403), never
    sent as their source by the static handler."""
    if args[0].lower() not in HANDLERS:
        reader.warn(
            line,
            f"AddHandler {args[0]}: prefork-wasm has no such handler (it has {', '.join(HANDLERS)}); "
            f"requests for {' '.join(args[1:])} files are refused (403)",
        )
    _by_extension("add_handlers", str.lower)(reader, scope, args, line)


def _not_in_location(reader: ReadState, directive: str) -> None:
    """DocumentRoot and Alias map URLs to disk: Apache takes them at server (or virtual host)
    level, not in a <Location> or <Directory>."""
    section = reader.location()
    if section is not None:
        raise ValueError(
            f"not allowed inside {section.label} (opened at {section.line}); {directive} maps URLs for "
            f"a whole server, so give it at server level or in a <VirtualHost>"
        )


def _document_root(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    _not_in_location(reader, "DocumentRoot")
    root = reader.path(args[0])
    if not root.is_dir():  # Apache warns and starts: requests there are 404 until it exists
        reader.warn(line, f"DocumentRoot {root} does not exist (or is not a directory): its URLs answer 404")
    scope.set("document_root", root, line)


def _alias(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    _not_in_location(reader, "Alias")
    url, target = args
    if not url.startswith("/"):
        raise ValueError(f"the URL path must start with '/', got {url!r}")
    path = reader.path(target)
    if not path.exists():
        reader.warn(line, f"Alias target {path} does not exist: its URLs answer 404")
    scope.append("aliases", (url, path), line)


def _directory_index(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """mod_dir: relative names, looked up in the requested directory in order. Several lines in
    one context add to its list (a more specific context's list replaces it); 'disabled' alone
    empties the list, a later line of the context adding to it again."""
    if [arg.lower() for arg in args] == ["disabled"]:
        scope.set("directory_index", [], line)
        return
    for name in args:
        if "/" in name or name in (".", ".."):
            raise ValueError(f"expected file names such as index.html (a URL path like {name!r} is not supported)")
    scope.set("directory_index", [*scope.values.get("directory_index", []), *args], line)


def _fallback_resource(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """mod_dir: the local URL that answers a URL which maps to nothing on disk (a front
    controller such as /index.php); 'disabled' turns an inherited one off."""
    url = args[0]
    if url.lower() == "disabled":
        scope.set("fallback_resource", None, line)
        return
    if not url.startswith("/"):
        raise ValueError(f"expected a local URL-path such as /index.php (or disabled), got {url!r}")
    scope.set("fallback_resource", url, line)


def _header(directive: str) -> _Apply:
    """mod_headers' Header and RequestHeader; 'early' only at server level or in a <VirtualHost>,
    as in Apache."""
    attr = "headers" if directive == "Header" else "request_headers"

    def apply(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
        action = headers.parse(directive, args, str(line))
        section = reader.location()
        if action.early and section is not None:
            raise ValueError(f"'early' is allowed only at server level or in a <VirtualHost>, not in {section.label}")
        scope.append(attr, action, line)

    return apply


def _redirect(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """mod_alias's Redirect, RedirectMatch, RedirectPermanent and RedirectTemp; in a <Location>
    without the URL-path (the Location's own path is redirected), as Apache 2.4 takes it."""
    directive = line.text.split()[0]
    rule = parse_redirect(directive, args, reader.location() is not None, str(line))
    scope.append("redirects", rule, line)


def _error_document(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    code, document = parse_error_document(args)
    scope.values.setdefault("error_documents", {})[code] = document
    scope.sources["error_documents"] = line


def _file_etag(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    scope.append("file_etag", file_etag(args), line)


def _protocols(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    """core's Protocols: this server speaks HTTP/1.1 (and 1.0) only."""
    names = [arg.lower() for arg in args]
    if "http/1.1" not in names:
        raise ValueError("prefork-wasm speaks http/1.1 only; list it (e.g. 'Protocols http/1.1')")
    others = [arg for arg in args if arg.lower() != "http/1.1"]
    if others:
        reader.warn(line, f"Protocols {' '.join(others)}: not spoken here (no mod_http2); only http/1.1 is")


def _options(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    change = parse_options(args)
    inert = (change.absolute or change.add) & INERT_OPTIONS
    if inert:
        reader.note(
            line,
            f"Options {', '.join(sorted(inert))}: no effect here "
            f"(only Indexes, FollowSymLinks and SymLinksIfOwnerMatch have one)",
        )
    scope.append("options", change, line)


def _types_config(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    scope.set("types_config", reader.existing(args[0], "file"), line)


def _wasm_module(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    path = reader.existing(args[0], "file")
    if path.suffix.lower() not in (".wasm", ".wat"):
        raise ValueError(f"{args[0]!r} is not a .wasm or .wat file")
    scope.set("module", path, line)


def _writable(args: list[str]) -> bool:
    """The optional last word of WasmDir/WasmMapDir: 'ro' (the default) or 'rw'."""
    if len(args) and args[-1].lower() in ("ro", "rw"):
        return args.pop().lower() == "rw"
    return False


def _wasm_dir(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    writable = _writable(args)
    if len(args) != 1:
        raise ValueError("expected DIRECTORY [ro|rw]")
    host = reader.host_dir(args[0], line, "WasmDir")
    scope.append("mounts", Mount(str(host), host, writable), line)


def _wasm_map_dir(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    writable = _writable(args)
    if len(args) != 2:
        raise ValueError("expected GUEST-PATH HOST-DIRECTORY [ro|rw]")
    guest, host = args
    scope.append("mounts", Mount(guest, reader.host_dir(host, line, "WasmMapDir"), writable), line)


def _wasm_arg(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    scope.append("args", args[0], line)


def _wasm_env(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    name, value = args
    if not name or "=" in name:
        raise ValueError(f"invalid environment variable name {name!r}; it must be non-empty and without '='")
    scope.values.setdefault("env", {})[name] = value
    scope.sources["env"] = line


def _wasm_allow_outbound(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    for arg in args:
        scope.append("allow_outbound", parse_destination(arg), line)


def _require(reader: ReadState, scope: Scope, args: list[str], line: Line) -> None:
    rule = " ".join(args)
    require_rule(rule)  # validate now rather than on the first request
    scope.append("require", rule, line)


_seconds_or_zero = seconds(positive=False)

_TABLE = (
    # Anywhere: these act on the reader itself.
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
    _disk(
        "AllowOverride",
        "All|None|TYPE ...",
        _no_effect("AllowOverride has no effect: .htaccess files are never read"),
        (1, None),
    ),
    _disk("DirectoryIndex", "FILE ...|disabled", _directory_index, (1, None)),
    _disk("FallbackResource", "LOCAL-URL|disabled", _fallback_resource),
    Directive("Header", "[always|onsuccess] ACTION NAME [VALUE [REPLACEMENT]] [early|env=[!]VAR]",
              _header("Header"), (2, 6)),
    Directive("RequestHeader", "ACTION NAME [VALUE [REPLACEMENT]] [early|env=[!]VAR]", _header("RequestHeader"),
              (2, 5)),
    Directive("Redirect", "[STATUS] URL-PATH URL", _redirect, (1, 3)),
    Directive("RedirectMatch", "[STATUS] REGEX URL", _redirect, (1, 3)),
    Directive("RedirectPermanent", "URL-PATH URL", _redirect, (1, 2)),
    Directive("RedirectTemp", "URL-PATH URL", _redirect, (1, 2)),
    Directive("ErrorDocument", "STATUS /LOCAL-URL|URL|\"TEXT\"|default", _error_document, (2, 2)),
    _disk("AddType", "MIME-TYPE EXTENSION ...", _by_extension("add_types", mime_type), (2, None)),
    _disk("AddHandler", "HANDLER EXTENSION ...", _add_handler, (2, None)),
    Directive("DocumentRoot", "DIRECTORY", _document_root),
    Directive("Alias", "URL-PATH FILE-OR-DIRECTORY", _alias, (2, 2)),
    _server("TypesConfig", "FILE", _types_config),
    _vhost(
        "ScriptAlias",
        "URL-PATH DIRECTORY",
        _no_effect(
            "ScriptAlias has no effect: prefork-wasm runs no host CGI programs; use AddHandler wasm-handler .EXT",
            warn=True,
        ),
        (2, 2),
    ),
    _server("LoadModule", "MODULE FILE", _load_module, (2, 2)),
    _vhost(
        "ServerAdmin",
        "EMAIL|URL",
        _no_effect("ServerAdmin has no effect: it is shown only on Apache's own error pages"),
    ),
    _vhost("HostnameLookups", "Off", _no_effect("client addresses are never resolved to names", only="Off")),
    _vhost("AddDefaultCharset", "Off", _no_effect("a response's charset is the one its module sets", only="Off")),
    # Server level only.
    _vhost("<Location>", "/PREFIX|~ REGEX", _open_location, (1, 2)),
    _vhost("<LocationMatch>", "REGEX", _open_location_match),
    _server("<VirtualHost>", "ADDRESS[:PORT] ...", _open_virtual_host, (1, None)),
    _server("ServerRoot", "DIRECTORY", _server_root),
    _server("ServerTokens", "Prod|Major|Minor|Min|OS|Full", _set("server_tokens", choice(*SERVER_TOKENS))),
    Directive("ServerSignature", "On|Off|EMail", _set("server_signature", choice("on", "off", "email"))),
    _server("TraceEnable", "On|Off|extended", _set("trace_enable", choice("on", "off", "extended"))),
    Directive("FileETag", "INode|MTime|Size|All|None ...", _file_etag, (1, 3)),
    _vhost("Protocols", "http/1.1 ...", _protocols, (1, None)),
    _server(
        "ExtendedStatus",
        "On|Off",
        _no_effect("server-status always shows what each worker serves (as ExtendedStatus On)", only="On"),
    ),
    _vhost("ServerName", "HOSTNAME[:PORT]", _set("server_name", str)),
    _vhost("ServerAlias", "HOSTNAME ...", _server_alias, (1, None)),
    _server("Listen", "[HOST:]PORT [http|https]", _listen, (1, 2)),
    _server("PidFile", "FILE", _set_path("pid_file")),
    _vhost("ErrorLog", "FILE|stderr|syslog[:FACILITY]|\"|PROGRAM\"", _error_log),
    _server("LogLevel", "[MODULE:]LEVEL ...", _log_level, (1, None)),
    _server("LogFormat", "FORMAT [NICKNAME]", _log_format, (1, 2)),
    _vhost("CustomLog", "FILE|stdout|stderr|\"|PROGRAM\" FORMAT-OR-NICKNAME [env=[!]VAR]", _custom_log, (2, 3)),
    _server("Timeout", "SECONDS", _set("timeout", seconds(positive=True))),
    _server("RequestReadTimeout", "[handshake=...] [header=SECONDS[-MAX][,MinRate=BYTES]] [body=...]",
            _request_read_timeout, (1, 3)),
    _server("KeepAlive", "On|Off", _set("keep_alive", on_off)),
    _server("KeepAliveTimeout", "SECONDS", _set("keep_alive_timeout", _seconds_or_zero)),
    _server("MaxKeepAliveRequests", "COUNT", _set("max_keep_alive_requests", count(0))),
    _server("StartServers", "COUNT", _set("start_servers", count(1))),
    _server("MinSpareServers", "COUNT", _set("min_spare_servers", count(0))),
    _server("MaxSpareServers", "COUNT", _set("max_spare_servers", count(0))),
    _server("MaxRequestWorkers", "COUNT", _set("max_request_workers", count(1))),
    _server("MaxClients", "COUNT", _set("max_request_workers", count(1))),
    _server("ServerLimit", "COUNT", _set("server_limit", count(1))),
    _server("MaxConnectionsPerChild", "COUNT", _set("max_connections_per_child", count(0))),
    _server("MaxRequestsPerChild", "COUNT", _set("max_connections_per_child", count(0))),
    _server("MaxHeldConnections", "COUNT", _set("max_held_connections", count(0))),
    _server("MaxMemoryPerChild", "SOFT [HARD]", _set("max_memory_per_child", memory_per_child), (1, 2)),
    _server("MemoryMetric", "uss|pss|rss", _set("memory_metric", choice("uss", "pss", "rss"))),
    _server("GracefulShutdownTimeout", "SECONDS", _set("graceful_shutdown_timeout", _seconds_or_zero)),
    _server("WasmCacheDir", "DIRECTORY", _set_path("wasm_cache_dir")),
    _server("User", "NAME|#UID", _set("user", _account(user_id, "user"))),
    _server("Group", "NAME|#GID", _set("group", _account(group_id, "group"))),
    _server("LimitRequestLine", "BYTES", _set("limit_request_line", count(0))),
    _server("LimitRequestFieldSize", "BYTES", _set("limit_request_field_size", count(0))),
    _server("LimitRequestFields", "COUNT", _set("limit_request_fields", count(0))),
    _server("ListenBacklog", "COUNT", _set("listen_backlog", count(1))),
    _server("LimitResponseBody", "SIZE", _set("limit_response_body", parse_size)),
    _server("AllowEncodedSlashes", "On|Off|NoDecode", _set("allow_encoded_slashes", choice(*ENCODED_SLASHES))),
    # Server level (as defaults) or inside <Location>.
    _disk("SetHandler", "wasm-handler|server-status|metrics|health|none", _set("handler", handler_name)),
    _disk("WasmModule", "FILE.wasm", _wasm_module),
    _disk("WasmDir", "DIRECTORY [ro|rw]", _wasm_dir, (1, 2)),
    _disk("WasmMapDir", "GUEST-PATH HOST-DIRECTORY [ro|rw]", _wasm_map_dir, (2, 3)),
    _disk("WasmArg", "ARGUMENT", _wasm_arg),
    _disk("WasmEnv", "NAME VALUE", _wasm_env, (2, 2)),
    _disk("WasmEnableCGI", "On|Off", _set("enable_cgi", on_off)),
    _disk("WasmMapCGIFileNames", "On|Off", _set("map_cgi_file_names", on_off)),
    _disk("WasmEntryPoint", "FUNCTION", _set("entry_point", str)),
    _disk("WasmTimeout", "SECONDS", _set("timeout", seconds(positive=True))),
    _disk("WasmMemoryLimit", "SIZE", _set("memory_limit", memory_limit)),
    Directive("ForceType", "MIME-TYPE|None", _set("force_type", force_type)),
    _disk("Require", "all granted|all denied|local|ip ADDRESS...", _require, (1, None)),
    Directive("LimitRequestBody", "SIZE", _set("limit_request_body", parse_size)),
    Directive("WasmAllowOutbound", "SCHEME://HOST[:PORT] ...", _wasm_allow_outbound, (1, None)),
    Directive("WasmOutboundTimeout", "SECONDS", _set("outbound_timeout", seconds(positive=True))),
    Directive("WasmOutboundLimit", "SIZE", _set("outbound_limit", parse_size)),
    # mod_ssl (tlsdirectives.py): server config only, also <VirtualHost>, or also per directory.
    *({"server": _server, "vhost": _vhost, "dir": _disk}[where](name, usage, apply, nargs)
      for name, usage, apply, nargs, where in tlsdirectives.ROWS),
)
_DIRECTIVES = {_key(directive.name): directive for directive in _TABLE}


def lookup(word: str) -> Directive | None:
    """The table's row for a directive word, whatever its case."""
    return _DIRECTIVES.get(_key(word))


def unknown(word: str) -> str:
    """Apache's own words say whose they are; only a real misspelling gets a did-you-mean."""
    owner = _APACHE_DIRECTIVES.get(_key(word))
    if owner == "core":
        return f"Invalid command '{word}': a directive of Apache's core that prefork-wasm does not implement (yet)"
    if owner:
        hint = f"; {_APACHE_HINTS[owner]}" if owner in _APACHE_HINTS else ""
        if owner in PROVIDED_MODULES:
            return f"Invalid command '{word}': a directive of {owner} that prefork-wasm does not implement{hint}"
        return f"Invalid command '{word}': a directive of {owner}, which prefork-wasm has no equivalent of{hint}"
    names = {key: directive.name for key, directive in _DIRECTIVES.items()}
    close = difflib.get_close_matches(_key(word), names, n=1)
    hint = f" Did you mean '{names[close[0]]}'?" if close else ""
    return f"Invalid command '{word}', perhaps misspelled?{hint}"


# Apache directives (of stock and distribution configs) prefork-wasm does not take, by module,
# so refusing one says whose it is instead of suggesting a look-alike ('Header' is not SetHandler).
_APACHE_MODULES = {
    "core": "<If> <Else> <ElseIf> "
    "UseCanonicalName EnableSendfile EnableMMAP AccessFileName Mutex "
    "HttpProtocolOptions AcceptFilter LimitXMLRequestBody",
    "alias_module": "AliasMatch ScriptAliasMatch",
    "mime_module": "AddEncoding AddCharset AddLanguage RemoveHandler RemoveType AddOutputFilter AddInputFilter",
    "dir_module": "DirectorySlash",
    "rewrite_module": "RewriteEngine RewriteRule RewriteCond RewriteBase RewriteMap RewriteOptions",
    "env_module": "SetEnv UnsetEnv PassEnv",
    "setenvif_module": "SetEnvIf SetEnvIfNoCase BrowserMatch BrowserMatchNoCase",
    "cgi_module": "ScriptLog ScriptLogLength ScriptLogBuffer",
    "cgid_module": "ScriptSock CGIDScriptTimeout",
    "ssl_module": "SSLRequire SSLRequireSSL SSLUserName SSLSRPVerifierFile SSLSRPUnknownUserSeed SSLPolicy",
    "proxy_module": "ProxyPass ProxyPassReverse ProxyRequests ProxyPreserveHost",
    "autoindex_module": "IndexOptions IndexIgnore AddIcon AddIconByType AddIconByEncoding DefaultIcon HeaderName "
    "ReadmeName AddDescription",
    "version_module": "<IfVersion>",
    "access_compat_module": "Order Allow Deny Satisfy",
    "auth_basic_module": "AuthType AuthName AuthBasicProvider AuthUserFile AuthGroupFile",
    "mpm_event_module": "ThreadsPerChild ThreadLimit MinSpareThreads MaxSpareThreads AsyncRequestWorkerFactor",
}
_APACHE_DIRECTIVES = {_key(name): module for module, names in _APACHE_MODULES.items() for name in names.split()}
# Apache modules LogLevel may name that prefork-wasm lacks: those above and the common others.
_APACHE_MODULE_NAMES = frozenset(
    [*_APACHE_MODULES, "http2_module", "deflate_module", "expires_module", "cache_module",
     "remoteip_module", "security2_module", "php_module", "php7_module", "negotiation_module", "filter_module"]
)
_APACHE_HINTS = {
    "env_module": "WasmEnv NAME VALUE sets a guest's environment",
    "access_compat_module": "use Require (all granted|all denied|local|ip ...)",
    "mpm_event_module": "workers hold idle connections as the event MPM does (MaxHeldConnections bounds them)",
    "ssl_module": "serve what needs TLS from a <VirtualHost> with SSLEngine on, and check access with Require",
}
