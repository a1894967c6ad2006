"""What a generation needs before it can serve: listeners bound, logs opened, modules compiled
and checked. All of it is done before a generation replaces the one serving, so that whatever
fails is reported (with its file:line) while the old generation keeps serving.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activation import Passed
from .compiler import Compile, CompileError, CompileReport, ModuleInfo
from .config import Listen, ServerConfig
from .engine import POOL_TABLE_ELEMENTS, WASM32_MEMORY_MAX, InstancePool
from .logs import AccessLog, ErrorLog
from .logtargets import LogFile, open_target
from .tls import Contexts, listener_contexts
from .tlscheck import CertificateError

MPM = "mpm_prefork"  # the error log's name for the module of the master's lines (Apache's)
# What to check when binding fails with this errno.
BIND_HINTS = {
    errno.EADDRINUSE: "another server on that port? stop it, or choose another port",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address",
}


class StartupError(Exception):
    """A generation cannot be served with this configuration (the message says why, with its
    file:line): at start-up the server exits, on a restart the current generation stays."""


def located(source: str, message: str) -> str:
    """'FILE:LINE: message', as ConfigError says it, for errors found after parsing."""
    return f"{source}: {message}" if source else message


def culprit(error: OSError, target: object) -> str:
    """': FOLDER' when the error is about another path than the one being opened."""
    return f": {error.filename}" if error.filename and str(error.filename) != str(target) else ""


def resolve(listen: Listen) -> tuple[socket.AddressFamily, Any]:
    """The family and address to bind for a Listen line (`-t` checks this too)."""
    host = listen.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        found = socket.getaddrinfo(host, listen.port, family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise StartupError(located(
            listen.source,
            f"Listen {listen}: cannot resolve host {host!r}: {e.strerror} "
            "(use an IP address, or a name this machine resolves)",
        )) from None
    return family, found[0][4]


def bind(listen: Listen, backlog: int) -> socket.socket:
    family, address = resolve(listen)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        hint = BIND_HINTS.get(e.errno or 0)
        why = (e.strerror or str(e)).lower() + (f" ({hint})" if hint else "")
        raise StartupError(located(listen.source, f"Listen {listen}: {why}")) from e
    return sock


def open_logs(config: ServerConfig) -> tuple[ErrorLog, list[AccessLog]]:
    """The error logs (the main one holding the virtual hosts') and access logs of `config`:
    all opened, or none and a StartupError."""
    files: list[LogFile] = []
    own = [(index, host) for index, host in enumerate(config.virtual_hosts) if host.error_log]
    try:
        for target, directive, source in [
            (config.error_log, "ErrorLog", config.sources.get("error_log", "")),
            *((host.error_log, "ErrorLog", host.error_log_source) for _, host in own),
            *((log.target, "CustomLog", log.source) for log in config.custom_logs),
        ]:
            assert target is not None
            try:
                files.append(open_target(target))
            except OSError as e:
                fix = f"fix the {'program' if target.startswith('|') else 'path'} or its permissions"
                raise StartupError(located(
                    source, f"{directive} {target}: cannot open: {e.strerror or e}{culprit(e, target)}; {fix}",
                )) from e
    except StartupError:
        for file in files:
            file.close()
        raise
    error_file, host_files, access_files = files[0], files[1 : len(own) + 1], files[len(own) + 1 :]
    access_logs = [
        AccessLog(file, log.format, log.host, log.condition)
        for file, log in zip(access_files, config.custom_logs, strict=True)
    ]
    levels = config.log_level, config.module_log_levels
    hosts = {
        index: ErrorLog(file, levels[0], modules=levels[1]) for (index, _), file in zip(own, host_files, strict=True)
    }
    return ErrorLog(error_file, levels[0], hosts, levels[1]), access_logs


def tls_contexts(config: ServerConfig) -> Contexts:
    """The generation's TLS contexts, its certificates and keys read now (by the master, before
    any worker drops privileges); StartupError."""
    try:
        return listener_contexts(config)
    except CertificateError as e:
        raise StartupError(str(e)) from None


def close_all(error_log: ErrorLog, access_logs: list[AccessLog], sockets: Iterable[socket.socket]) -> None:
    for file in error_log.files():
        file.close()
    for log in access_logs:
        log.file.close()
    for sock in sockets:
        sock.close()


def entry_point_problems(config: ServerConfig, infos: Mapping[Path, ModuleInfo]) -> list[str]:
    """Each WasmEntryPoint (or the default: _start, a component's wasi:cli/run) that its module
    does not export as a function it can call, and each module the server cannot link."""
    problems: dict[str, None] = {}  # a server-level line inherited by several Locations says it once
    for loc in config.guest_runs():
        assert loc.module is not None
        info = infos[loc.module]
        if info.unlinkable:
            problems[
                f"{loc.sources.get('module', loc.source)}: WasmModule: {loc.module} imports {info.unlinkable}, "
                f"which prefork-wasm does not provide (it serves {SERVED_WORLDS}); build the module without it"
            ] = None
        entry = info.entry_point(loc)
        if entry in info.functions:
            continue
        functions = sorted(info.functions)
        listing = ", ".join(functions[:10]) + (", ..." if len(functions) > 10 else "") or "none"
        if "entry_point" in loc.sources:
            where, directive, hint = loc.sources["entry_point"], "WasmEntryPoint", ""
        else:
            where, directive = loc.sources.get("module", loc.source), "WasmModule"
            hint = "; name the one to call with WasmEntryPoint"
        missing = f"no function '{entry}'" if entry else "no wasi:cli/run@0.2 'run'"
        problems[f"{where}: {directive}: {loc.module} exports {missing} (its functions: {listing}){hint}"] = None
    return list(problems)


# What the hint for a module with an unsupported import says the server provides.
SERVED_WORLDS = (
    "WASI preview 1 modules and wasi:cli/command components: WASI 0.2's cli, clocks, filesystem, io, "
    "random and sockets, without network access; and wasi:http/proxy components: wasi:http 0.2's "
    "types and outgoing-handler with those"
)


def pool_for(config: ServerConfig, infos: Iterable[ModuleInfo]) -> InstancePool | None:
    """The instance pool a worker's engine gets: one core instance, its memory slot as large as
    the largest WasmMemoryLimit (4 GiB, wasm32's maximum, where a Location has none). None when
    the worker serves a wasi:cli component: one instantiates several core instances, memories
    and tables each time, and allocates on demand. A worker serving wasi:http components gets a
    pool with room for one of them."""
    infos = list(infos)
    if any(info.component and not info.http_handler for info in infos):
        return None
    components = any(info.http_handler for info in infos)
    limits = [loc.memory_limit for loc in [*config.locations, *config.section_runs()] if loc.module is not None]
    if not limits or None in limits:
        return InstancePool(WASM32_MEMORY_MAX, components)
    return InstancePool(max(limit for limit in limits if limit is not None), components)


def pool_problems(config: ServerConfig, infos: Mapping[Path, ModuleInfo]) -> list[str]:
    """Each module that does not fit the workers' instance pool, which a worker would refuse at
    its start (and the master then stop): said at its WasmModule lines, with the fix."""
    pool = pool_for(config, infos.values())
    if pool is None:
        return []
    problems = []
    for module, info in infos.items():
        if info.component:  # a wasi:http component's pool is sized for a component (engine.InstancePool)
            continue
        why = []
        if info.memories > 1 or info.tables > 1:
            why.append(f"it defines {info.memories} memories and {info.tables} tables, the pool holds one of each")
        if info.memory_min > pool.memory_size:
            why.append(
                f"its memory starts at {_mib(info.memory_min)}, above the pool's memory slot of "
                f"{_mib(pool.memory_size)} (the largest WasmMemoryLimit); give WasmMemoryLimit "
                f"{-(-info.memory_min >> 20)}M or more where it runs"
            )
        if info.table_min > POOL_TABLE_ELEMENTS:
            why.append(f"its table starts at {info.table_min} elements, above the pool's {POOL_TABLE_ELEMENTS}")
        if why:
            problems += [
                f"{where}: WasmModule: {module} does not fit the workers' instance pool ({pool.describe()}): "
                + "; ".join(why)
                for where in config.module_lines(module) or ["(config)"]
            ]
    return problems


def _mib(size: int) -> str:
    return f"{size / 1048576:g} MiB"


def compile_failures(config: ServerConfig, error: CompileError) -> str:
    """A compile error, each module that failed said at its WasmModule lines."""
    if not error.failures:
        return str(error)
    return "\n".join(
        f"{where}: WasmModule: {module}: cannot compile: {why}"
        for module, why in error.failures.items()
        for where in config.module_lines(module) or ["(config)"]
    )


def finish_compile(compile: Compile, config: ServerConfig) -> CompileReport:
    """Wait for the compile if it still runs, then check what a worker would check at its start
    (that each module fits the instance pool, links, and exports its entry points), so that a
    worker never refuses to start."""
    try:
        compile.wait()
        report = compile.report()
    except CompileError as e:
        raise StartupError(compile_failures(config, e)) from e
    infos = {a.source: a.info for a in report.artifacts}
    problems = pool_problems(config, infos) + entry_point_problems(config, infos)
    if problems:
        raise StartupError("\n".join(problems))
    return report


@dataclass
class NextGeneration:
    """A generation being prepared: logs open and new listeners bound before its modules
    compile, so a restart fails early, and without touching the generation that serves."""

    config: ServerConfig
    graceful: bool
    error_log: ErrorLog
    access_logs: list[AccessLog]
    fresh: dict[Listen, socket.socket]  # bound (or passed by systemd) for it; it shares the others
    compile: Compile
    tls: Contexts  # each TLS listener's context: new certificates for every generation
    adopted: dict[Listen, Passed] = field(default_factory=dict)  # which of `fresh` systemd passed
    requested: float = field(default_factory=time.monotonic)

    def announce(self, print_urls: bool) -> None:
        """Log what the certificates of this generation are warned about (at every start and
        restart: a renewal that did not happen shows), and the listeners it added (all of them
        at start-up)."""
        for warning in self.tls.warnings:
            self.error_log.warn(warning, "ssl")
        for listen in self.fresh:
            passed = self.adopted.get(listen)
            url = f"{'https' if listen in self.tls.by_listen else 'http'}://{listen}/"
            by_systemd = f" (socket passed by systemd: {passed})" if passed else ""
            self.error_log.notice(f"listening on {url}{by_systemd}", MPM)
            if print_urls:
                print(f"prefork-wasm: serving on {url}", flush=True)

    def close(self) -> None:
        """Release what this process holds for it (after it failed, or in a forked worker)."""
        self.compile.close()
        close_all(self.error_log, self.access_logs, self.fresh.values())
