"""Error log and access log, in Apache's layouts; where their lines go is logtargets.py.

A restart opens every log afresh (rotation), and before the new generation replaces the old one,
so a log that cannot be opened fails the restart instead of the server.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from . import sslvars
from .logtargets import LogFile
from .messages import TLSInfo

LEVELS = {
    name: rank
    for rank, name in enumerate(
        ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"]
        + [f"trace{n}" for n in range(1, 9)]
    )
}
NOTICE = LEVELS["notice"]


def apache_time(now: float) -> str:
    """'Wed Nov 25 09:00:40.123456 2026', the error log's timestamp."""
    t = time.localtime(now)
    micro = int((now % 1) * 1_000_000)
    return time.strftime(f"%a %b %d %H:%M:%S.{micro:06d} %Y", t)


class ErrorLog:
    """`[time] [module:level] [pid N] message`, filtered as Apache filters: by the module's
    LogLevel (`LogLevel warn wasm:debug`), the notice level always written (Apache logs its
    notices, among them start, restart and stop, whatever LogLevel says). Messages that Apache
    also writes carry its stable id ('AH00163: ...').

    The main server's also holds the virtual hosts' own error logs (`hosts`, by index in
    ServerConfig.virtual_hosts), where their requests' errors go, so that they open, move and
    close with it."""

    def __init__(
        self,
        file: LogFile,
        level: str,
        hosts: dict[int, ErrorLog] | None = None,
        modules: Mapping[str, str] | None = None,
    ) -> None:
        self.file = file
        self.threshold = LEVELS[level]
        self.modules = {module: LEVELS[name] for module, name in (modules or {}).items()}
        self.hosts = hosts or {}

    def files(self) -> list[LogFile]:
        return [self.file, *(log.file for log in self.hosts.values())]

    def log(self, level: str, message: str, module: str = "core") -> None:
        rank = LEVELS[level]
        if rank != NOTICE and rank > self.modules.get(module, self.threshold):
            return
        text = f"[{module}:{level}] [pid {os.getpid()}] {message}"
        self.file.entry(min(rank, _SYSLOG_DEBUG), apache_time(time.time()), text)

    def error(self, message: str, module: str = "core") -> None:
        self.log("error", message, module)

    def warn(self, message: str, module: str = "core") -> None:
        self.log("warn", message, module)

    def notice(self, message: str, module: str = "core") -> None:
        self.log("notice", message, module)

    def info(self, message: str, module: str = "core") -> None:
        self.log("info", message, module)


_SYSLOG_DEBUG = LEVELS["debug"]  # syslog's priorities are emerg (0) to debug (7); trace is debug there


@dataclass(slots=True)
class AccessRecord:
    """What the access log can say about one finished request."""

    remote_addr: str
    remote_port: int
    request_line: str
    method: str
    path: str
    query: str
    protocol: str
    status: int
    body_bytes: int
    request_headers: Mapping[str, str]  # lowercased names; only those a log's format uses
    response_headers: Mapping[str, str]  # lowercased names; only those a log's format uses
    start: float  # time.time() when the request arrived
    duration: float  # seconds
    request_id: str
    server_name: str
    server_port: int
    bytes_in: int = 0  # %I: the request's head and body as received
    bytes_out: int = 0  # %O: the response's head and body as sent
    keepalives: int = 0  # %k: requests served on the connection before this one
    connection: str = "-"  # %X: '+' kept alive after the response, '-' closed
    filename: str = ""  # %f: the file the request mapped to ('' for none)
    handler: str = ""  # %R: the handler that made the response ('' for none: a file from disk)
    env: Mapping[str, str] = field(default_factory=dict)  # %{VAR}e, env=: the request's environment
    tls: TLSInfo | None = None  # %{VAR}x: the handshake of a request over TLS, None on plain HTTP


Piece = Callable[[AccessRecord], str]


class _ClfTime:
    """%t, '[01/Dec/2026:03:40:00 +0000]': formatted once a second, not once a request."""

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def __call__(self, r: AccessRecord) -> str:
        second = int(r.start)
        if second != self._second:
            self._second, self._text = second, time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(second))
        return self._text


_clf_time = _ClfTime()


def _escape(value: str) -> str:
    """Apache escapes quotes, backslashes and control characters in logged strings."""
    if value.isprintable() and '"' not in value and "\\" not in value:
        return value
    return "".join(
        "\\" + c if c in '"\\' else c if c.isprintable() else f"\\x{ord(c):02x}" for c in value
    )


_SIMPLE: dict[str, Piece] = {
    "h": lambda r: r.remote_addr,
    "a": lambda r: r.remote_addr,
    "l": lambda r: "-",
    "u": lambda r: "-",
    "t": _clf_time,
    "r": lambda r: _escape(r.request_line),
    "s": lambda r: str(r.status),
    "b": lambda r: str(r.body_bytes) if r.body_bytes else "-",
    "B": lambda r: str(r.body_bytes),
    "D": lambda r: str(int(r.duration * 1_000_000)),
    "T": lambda r: str(int(r.duration)),
    "m": lambda r: r.method,
    "U": lambda r: _escape(r.path),
    "q": lambda r: f"?{_escape(r.query)}" if r.query else "",
    "H": lambda r: r.protocol,
    "p": lambda r: str(r.server_port),
    "P": lambda r: str(os.getpid()),
    "v": lambda r: r.server_name,
    "L": lambda r: r.request_id,
    "I": lambda r: str(r.bytes_in),
    "O": lambda r: str(r.bytes_out),
    "k": lambda r: str(r.keepalives),
    "X": lambda r: r.connection,
    "f": lambda r: _escape(r.filename) or "-",
    "R": lambda r: r.handler or "-",
    "%": lambda r: "%",
}

# %{UNIT}T: the time taken in seconds, milliseconds or microseconds.
_DURATIONS: dict[str, Piece] = {
    "s": _SIMPLE["T"],
    "ms": lambda r: str(int(r.duration * 1_000)),
    "us": _SIMPLE["D"],
}
# %{WHICH}p: the server's port (canonical, local) or the client's (remote).
_PORTS: dict[str, Piece] = {
    "canonical": _SIMPLE["p"],
    "local": _SIMPLE["p"],
    "remote": lambda r: str(r.remote_port),
}
# %{c}a and %{c}h: the peer of the connection itself, which is %a here (no mod_remoteip).
_PEERS: dict[str, Piece] = {"c": _SIMPLE["a"]}


class _Header:
    """%{Name}i or %{Name}o: one header of the request or the response, '-' if absent."""

    def __init__(self, table: str, name: str) -> None:
        self.table = table
        self.key = name.lower()

    def __call__(self, r: AccessRecord) -> str:
        headers = r.request_headers if self.table == "i" else r.response_headers
        return _escape(headers.get(self.key, "-"))


class _Env:
    """%{VAR}e: a variable of the request's environment, '-' if unset."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, r: AccessRecord) -> str:
        return _escape(r.env.get(self.name, "-"))


class _SSLVar:
    """%{VAR}x: one of mod_ssl's variables (sslvars.py), whatever SSLOptions says; '-' on plain
    HTTP (but HTTPS, which is 'off' there) and for a name mod_ssl would not know."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, r: AccessRecord) -> str:
        return _escape(sslvars.lookup(r.tls, self.name) or "-")


_EPOCH = {
    "sec": lambda t: str(int(t)),
    "msec": lambda t: str(int(t * 1_000)),
    "usec": lambda t: str(int(t * 1_000_000)),
    "msec_frac": lambda t: f"{int(t * 1_000) % 1_000:03d}",
    "usec_frac": lambda t: f"{int(t * 1_000_000) % 1_000_000:06d}",
}


class _Time:
    """%{format}t: the request's start (or with 'end:', its end) as a strftime format in local
    time, or as 'sec', 'msec', 'usec', 'msec_frac', 'usec_frac' since the epoch."""

    def __init__(self, spec: str) -> None:
        self.end = spec.startswith("end:")
        spec = spec.removeprefix("end:").removeprefix("begin:")
        self.epoch = _EPOCH.get(spec)
        self.format = spec

    def __call__(self, r: AccessRecord) -> str:
        at = r.start + r.duration if self.end else r.start
        if self.epoch is not None:
            return self.epoch(at)
        return time.strftime(self.format, time.localtime(at))


class FormatError(ValueError):
    """A LogFormat string this server cannot log; raised while parsing the config, with its line."""


SUPPORTED = (
    " ".join(f"%{letter}" for letter in sorted(_SIMPLE, key=str.lower))
    + " %{Header}i %{Header}o %{VAR}e %{VAR}x %{format}t %{ms}T %{us}T %{c}a %{remote}p %{local}p"
)


def _with_argument(name: str, letter: str, fmt: str) -> Piece:
    """The piece for %{name}letter."""
    if letter in "io":
        return _Header(letter, name)
    if letter == "e":
        return _Env(name)
    if letter == "x":
        return _SSLVar(name)
    if letter == "t":
        return _Time(name)
    choices = {"T": _DURATIONS, "p": _PORTS, "a": _PEERS, "h": _PEERS}.get(letter)
    if choices is not None and name in choices:
        return choices[name]
    raise FormatError(f"unknown %{{{name}}}{letter} in {fmt!r}; supported: {SUPPORTED}")


def compile_format(fmt: str) -> Sequence[Piece | str]:
    """Turn a LogFormat string into pieces once, so logging a request is only joins.

    The config parser calls this too, so a format that cannot be logged is refused at its
    line (at start-up, by -t, or by a reload that then keeps the old generation).
    """
    pieces: list[Piece | str] = []
    i = 0
    while i < len(fmt):
        j = fmt.find("%", i)
        if j < 0:
            pieces.append(fmt[i:])
            break
        if j > i:
            pieces.append(fmt[i:j])
        i = j + 1
        while i < len(fmt) and fmt[i] in "<>!,0123456789":
            i += 1  # modifiers: %>s is the final status, which is the only one we have
        if i < len(fmt) and fmt[i] == "{":
            end = fmt.find("}", i)
            if end < 0 or end + 1 >= len(fmt):
                raise FormatError(f"unterminated %{{...}} in {fmt!r}; expected e.g. %{{User-Agent}}i")
            pieces.append(_with_argument(fmt[i + 1 : end], fmt[end + 1], fmt))
            i = end + 2
            continue
        if i >= len(fmt) or fmt[i] not in _SIMPLE:
            what = f"%{fmt[i]}" if i < len(fmt) else "'%' at the end"
            raise FormatError(f"unknown {what} in {fmt!r} (write %% for a literal %); supported: {SUPPORTED}")
        pieces.append(_SIMPLE[fmt[i]])
        i += 1
    return pieces


_CONDITION = re.compile(r"env=(!?)([^\s=]+)", re.IGNORECASE)


def parse_condition(arg: str) -> tuple[str, bool]:
    """CustomLog's third argument, 'env=VAR' (log when VAR is set) or 'env=!VAR' (when it is
    not): (VAR, whether it must be set). ValueError for anything else."""
    match = _CONDITION.fullmatch(arg)
    if match is None:
        if arg.lower().startswith("expr="):
            raise ValueError(
                "expr= conditions are not supported; use env=VAR or env=!VAR (a variable of the request's environment)"
            )
        raise ValueError(f"expected env=VAR or env=!VAR, got {arg!r}")
    return match[2], not match[1]


class AccessLog:
    """One CustomLog: a destination and a compiled format, and whose it is (`host`: the index of
    its <VirtualHost>, None for the main server's)."""

    def __init__(
        self, file: LogFile, fmt: str, host: int | None = None, condition: tuple[str, bool] | None = None
    ) -> None:
        self.file = file
        self.host = host
        self.pieces = compile_format(fmt)
        self.condition = condition  # CustomLog env=[!]VAR: (VAR, whether it must be set)
        # The headers the format logs (lowercased): the record carries only these.
        self.request_headers = frozenset(p.key for p in self.pieces if isinstance(p, _Header) and p.table == "i")
        self.response_headers = frozenset(p.key for p in self.pieces if isinstance(p, _Header) and p.table == "o")
        # Whether the record needs the request's environment (which costs a dict to make).
        self.uses_env = condition is not None or any(isinstance(p, _Env) for p in self.pieces)

    def log(self, record: AccessRecord) -> None:
        if self.condition is not None:
            name, wanted = self.condition
            if (name in record.env) != wanted:
                return
        line = "".join([p if isinstance(p, str) else p(record) for p in self.pieces])  # a list joins faster
        self.file.write((line + "\n").encode("utf-8", "backslashreplace"))
