"""`prefork-wasm`: the command line, with Apache httpd's flags."""

from __future__ import annotations

import argparse
import os
import platform
import sys

import psutil

from . import __version__, activation, control, privileges
from .arbiter import Arbiter
from .compiler import CompileError, Digests, start_compile
from .conffile import parse_config
from .config import DEFAULT_BODY_LIMIT, ConfigError, LocationConfig, Locations, ServerConfig, VirtualHost
from .directives import PROVIDED_MODULES, STATIC_MODULES
from .engine import WASM32_MEMORY_MAX, WASMTIME_VERSION
from .generation import StartupError, finish_compile, resolve, tls_contexts
from .notify import Notifier
from .runtime import STDERR_CAP

DESCRIPTION = """\
A pre-fork HTTP server for WebAssembly (WASI) modules, configured like Apache httpd
with mod_wasm. Runs in the foreground until SIGTERM or SIGINT."""

EPILOG = """\
examples:
  prefork-wasm -f conf/server.conf          serve in the foreground
  prefork-wasm -f conf/server.conf -t       check the config and compile the modules
  prefork-wasm -f conf/server.conf -S       show the parsed addresses and routes
  prefork-wasm -f conf/server.conf -D DEV   define DEV for <IfDefine DEV> sections
  prefork-wasm -f conf/server.conf -k start     run detached
  prefork-wasm -f conf/server.conf -k graceful  reload config and modules, dropping nothing
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefork-wasm",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f", dest="config", default="conf/server.conf", metavar="FILE",
        help="the configuration file (default: conf/server.conf)",
    )
    parser.add_argument(
        "-t", dest="test", action="store_true",
        help="check the configuration and compile its modules, print 'Syntax OK', then exit",
    )
    parser.add_argument(
        "-S", dest="dump", action="store_true",
        help="show the parsed settings: listen addresses, ServerName, ServerRoot, each Location "
        "with its handler and module (the modules are not compiled: -t does that), then exit",
    )
    parser.add_argument(
        "-M", dest="modules", action="store_true",
        help="list the Apache modules prefork-wasm provides (what <IfModule> is true for), then exit",
    )
    parser.add_argument(
        "-D", dest="defines", action="append", default=[], metavar="NAME",
        help="define a parameter for <IfDefine NAME> (repeatable)",
    )
    parser.add_argument(
        "-v", dest="version", action="store_true",
        help="print the versions of prefork-wasm, wasmtime and Python, then exit",
    )
    parser.add_argument(
        "-k", dest="command", choices=control.COMMANDS, metavar="COMMAND",
        help="start: run detached (writes PidFile); stop, restart, graceful, graceful-stop: "
        "signal the master named in PidFile (TERM, HUP, USR1, WINCH)",
    )
    return parser


def versions() -> str:
    return (
        f"Server version: prefork-wasm/{__version__}\n"
        f"wasmtime: {WASMTIME_VERSION}\n"
        f"Python: {platform.python_implementation()} {platform.python_version()}"
    )


def loaded_modules() -> str:
    """-M in Apache's format; the set is built in, so no config is read."""
    kinds = (f" {name} ({'static' if name in STATIC_MODULES else 'shared'})" for name in PROVIDED_MODULES)
    return "\n".join(["Loaded Modules:", *kinds])


def dump(config: ServerConfig) -> str:
    """-S: Apache's -S layout (the virtual hosts by address, then the main server's settings),
    plus each server's sections in the order they merge, with what a request for exactly that
    prefix gets."""
    name = config.server_name or "(none: each request's Host)"
    where = config.sources.get("server_name")
    lines = ["VirtualHost configuration:", *_virtual_hosts(config)]
    covered = {(a.host, a.port) for host in config.virtual_hosts for a in host.addresses}
    lines += [
        f"{listen!s:<22} main server {name} ({listen.source})"
        for listen in config.listens
        if not any(host in ("", listen.host) and port in (0, listen.port) for host, port in covered)
    ]
    lines += [
        f"ServerName: {name}" + (f" ({where})" if where else ""),
        f'ServerRoot: "{config.server_root}"',
        f'Main ErrorLog: "{config.error_log}"',
        f'PidFile: "{config.pid_file}"',
        f'WasmCacheDir: "{config.wasm_cache_dir}"',
        *(f'{kind}: name="{value}"' for kind, value in (("User", config.user), ("Group", config.group)) if value),
        "Locations (in merge order; each line: what a request for that prefix gets):",
        *_routes(config.routes),
    ]
    for host in config.virtual_hosts:
        lines += [f"Locations of {host.server_name or '(no ServerName)'} ({host.source}):", *_routes(host.routes)]
    return "\n".join(lines)


def _virtual_hosts(config: ServerConfig) -> list[str]:
    """Apache's listing: an address with one host on one line; with several, 'is a
    NameVirtualHost' and each host under it, the first being the default."""
    by_address: dict[str, list[VirtualHost]] = {}
    for host in config.virtual_hosts:
        for address in host.addresses:
            text = str(address) if address.port else f"{str(address).rsplit(':', 1)[0]}:*"
            by_address.setdefault(text, []).append(host)
    lines = []
    for text, hosts in by_address.items():
        if len(hosts) == 1:
            lines.append(f"{text:<22} {hosts[0].server_name} ({hosts[0].source})")
            continue
        port = text.rsplit(":", 1)[1]
        lines += [
            f"{text:<22} is a NameVirtualHost",
            f"         default server {hosts[0].server_name} ({hosts[0].source})",
        ]
        for host in hosts:
            lines.append(f"         port {port} namevhost {host.server_name} ({host.source})")
            lines += [
                f"                 {'wild alias' if set(alias) & set('*?') else 'alias'} {alias}"
                for alias in host.aliases
            ]
    return lines


def _routes(routes: Locations) -> list[str]:
    lines = []
    for section, loc in routes.representatives():
        what = "/" if section is None else section.pattern if section.regex is None else f"~ {section.pattern}"
        lines.append(f"{what:<22} {_serves(loc)} ({loc.source})")
    return lines


def _serves(loc: LocationConfig) -> str:
    if loc.handler == "wasm-handler":
        return f"wasm-handler {loc.module}"
    if loc.handler is not None:
        return loc.handler
    if loc.document_root is None and not loc.aliases:
        return "no handler (404)"
    roots = [
        *(f"{url} -> {target}" for url, target in loc.aliases),
        *([f"{loc.document_root}"] if loc.document_root else []),
    ]
    module = loc.guest_module
    return f"files from {', '.join(roots)}" + (f", scripts run by {module}" if module else "")


def error(message: object) -> None:
    """One 'prefork-wasm: ...' line on stderr per line of the message."""
    for line in str(message).splitlines():
        print(f"prefork-wasm: {line}", file=sys.stderr)


def load(path: str, defines: list[str]) -> ServerConfig | None:
    try:
        return parse_config(path, defines)
    except ConfigError as e:
        error(e)
        return None


def memory_report(config: ServerConfig, machine: int) -> tuple[list[str], str | None]:
    """-t's account of memory: what one request may hold at most (its body, once; its guest's
    linear memory; its output, twice: as the guest wrote it and as it is sent; the guest's
    stderr), and MaxRequestWorkers requests at once, beside what each worker holds itself; and
    a warning when that passes `machine` bytes, or when a limit is off and nothing bounds it."""
    runs = config.guest_runs()
    bodies = [loc.limit_request_body for loc in [*config.locations, *runs]] or [DEFAULT_BODY_LIMIT]
    body = 0 if 0 in bodies else max(bodies)
    unbounded = [
        name for name, value in (("LimitRequestBody", body), ("LimitResponseBody", config.limit_response_body))
        if value == 0
    ]
    limits = [loc.memory_limit for loc in runs]
    guest = 0 if not runs else WASM32_MEMORY_MAX if None in limits else max(m for m in limits if m is not None)
    output = 2 * config.limit_response_body + (STDERR_CAP if runs else 0)
    per_request = body + guest + output
    workers = config.max_request_workers
    lines = [
        f"memory: one request holds at most {_mib(per_request)}: its body {_mib(body)} (LimitRequestBody, held once), "
        f"its guest's memory {_mib(guest)} ("
        + ("WasmMemoryLimit" if None not in limits else "no WasmMemoryLimit: wasm32's 4 GiB")
        + f"), its output 2 x {_mib(config.limit_response_body)} (LimitResponseBody) "
        f"and stderr {_mib(STDERR_CAP if runs else 0)}",
        f"memory: MaxRequestWorkers {workers} x {_mib(per_request)} = {_mib(workers * per_request)} at worst, "
        f"beside each worker's own; this machine has {_mib(machine)}",
    ]
    if unbounded:
        return lines, f"{' and '.join(unbounded)} 0 (unlimited): a request's memory has no bound; set a size"
    if workers * per_request > machine:
        return lines, (
            f"MaxRequestWorkers {workers} x {_mib(per_request)} per request = {_mib(workers * per_request)} "
            f"exceeds this machine's memory ({_mib(machine)}); lower MaxRequestWorkers, WasmMemoryLimit, "
            f"LimitRequestBody or LimitResponseBody"
        )
    return lines, None


def _mib(size: int) -> str:
    return f"{size / 1048576:,.0f} MiB"


def check(config: ServerConfig) -> int:
    """-t: what a start checks short of binding and opening logs: the config, that each Listen
    host resolves, each TLS host's certificate and key (tlscheck.py), the modules compile and
    export their entry points. Reports every problem."""
    problems: list[str] = []
    warnings = list(config.warnings)
    try:
        warnings += tls_contexts(config).warnings
    except StartupError as e:
        problems.append(str(e))
    root_warning = privileges.root_warning(config.user)
    warnings += [root_warning] if root_warning else []
    for listen in config.listens:
        try:
            resolve(listen)
        except StartupError as e:
            problems.append(str(e))
    try:
        report = finish_compile(start_compile(config.modules(), config.wasm_cache_dir, Digests()), config)
        warnings += report.warnings
    except (CompileError, StartupError) as e:
        problems.append(str(e))
    memory, too_much = memory_report(config, psutil.virtual_memory().total)
    warnings += [too_much] if too_much else []
    for warning in warnings:
        error(f"warning: {warning}")
    for problem in problems:
        error(problem)
    if problems:
        return 1
    for line in memory:
        error(line)
    print("Syntax OK")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.version:
        print(versions())
        return 0
    if args.modules:
        print(loaded_modules())
        return 0
    config = load(args.config, args.defines)
    if config is None:
        return 1
    if args.dump:
        for warning in config.warnings:
            error(f"warning: {warning}")
        print(dump(config))
        return 0
    if args.test:
        return check(config)
    if args.command and args.command != "start":
        try:
            return control.signal_master(config, args.command)
        except control.PidFileError as e:
            if args.command not in control.RELOADS:
                error(e)
                return 1
            print(f"prefork-wasm: not running ({e}), trying to start", flush=True)  # as Apache's httpd -k
            args.command = "start"
    # What systemd handed over is taken out of the environment before anything forks.
    notifier = Notifier.from_environment()
    try:
        passed = [activation.inspect(fd, name) for fd, name in activation.passed_fds(os.environ, os.getpid())]
    except activation.ActivationError as e:
        error(e)
        return 1
    if args.command == "start":
        return control.start_detached(
            lambda ready: Arbiter(config, args.defines, print_urls=False, notifier=notifier, passed=passed).run(ready),
            config,
        )
    try:
        return Arbiter(config, args.defines, notifier=notifier, passed=passed).run()
    except StartupError as e:
        error(e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
