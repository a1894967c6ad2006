"""Error log and access log, in Apache's layouts.

Every record is one `os.write` on a file opened with O_APPEND, so lines from the master and
all workers interleave whole without a lock. A restart opens every log afresh (rotation), and
before the new generation replaces the old one, so a log that cannot be opened fails the restart
instead of the server.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

LEVELS = {
    name: rank
    for rank, name in enumerate(
        ["emerg", "alert", "crit", "error", "warn", "notice", "info", "debug"]
        + [f"trace{n}" for n in range(1, 9)]
    )
}

# Log targets that are the process's own stdout or stderr. The /dev and /proc spellings
# (Docker's habit) are written to the fd too, not opened: opening them fails when the stream is
# a socket (systemd's journal), and a worker's fds 1 and 2 are its guests' (see LogFile.moved).
_STREAMS = {
    "stderr": 2, "stdout": 1,
    "/dev/stderr": 2, "/dev/stdout": 1,
    "/dev/fd/2": 2, "/dev/fd/1": 1,
    "/proc/self/fd/2": 2, "/proc/self/fd/1": 1,
}


def stream_of(target: str) -> int | None:
    """1 or 2 when a log target is this process's stdout or stderr, else None."""
    return _STREAMS.get(target)


def make_parent(path: str | os.PathLike[str]) -> None:
    """Create the folder a log or pid file goes into; a file in its way is 'Not a directory'."""
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except FileExistsError:  # say what is wrong, not "File exists"
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), folder) from None


class LogFile:
    """An append-only log destination: a path, or 'stderr'/'stdout'."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.fd = self._open()

    def _open(self) -> int:
        if self.target in _STREAMS:
            return _STREAMS[self.target]
        make_parent(self.target)
        return os.open(self.target, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def moved(self, fds: Mapping[int, int]) -> None:
        """Follow the process's stdout or stderr to the fd it was moved to (a worker gives fds 1
        and 2 to its guests)."""
        if self.target in _STREAMS:
            self.fd = fds.get(self.fd, self.fd)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.fd, data)
        except OSError:
            pass  # a full disk must not take a request down with it

    def close(self) -> None:
        if self.target not in _STREAMS:
            os.close(self.fd)


def apache_time(now: float) -> str:
    """'Wed Nov 25 09:00:40.123456 2026', the error log's timestamp."""
    t = time.localtime(now)
    micro = int((now % 1) * 1_000_000)
    return time.strftime(f"%a %b %d %H:%M:%S.{micro:06d} %Y", t)


class ErrorLog:
    """`[time] [level] [pid N] message`, filtered by LogLevel.

    The main server's also holds the virtual hosts' own error logs (`hosts`, by index in
    ServerConfig.virtual_hosts), where their requests' errors go, so that they open, move and
    close with it."""

    def __init__(self, file: LogFile, level: str, hosts: dict[int, ErrorLog] | None = None) -> None:
        self.file = file
        self.threshold = LEVELS[level]
        self.hosts = hosts or {}

    def files(self) -> list[LogFile]:
        return [self.file, *(log.file for log in self.hosts.values())]

    def log(self, level: str, message: str) -> None:
        if LEVELS[level] > self.threshold:
            return
        line = f"[{apache_time(time.time())}] [{level}] [pid {os.getpid()}] {message}\n"
        self.file.write(line.encode("utf-8", "backslashreplace"))

    def error(self, message: str) -> None:
        self.log("error", message)

    def warn(self, message: str) -> None:
        self.log("warn", message)

    def notice(self, message: str) -> None:
        self.log("notice", message)

    def info(self, message: str) -> None:
        self.log("info", message)


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
    "%": lambda r: "%",
}


class _Header:
    """%{Name}i or %{Name}o: one header of the request or the response, '-' if absent."""

    def __init__(self, table: str, name: str) -> None:
        self.table = table
        self.key = name.lower()

    def __call__(self, r: AccessRecord) -> str:
        headers = r.request_headers if self.table == "i" else r.response_headers
        return _escape(headers.get(self.key, "-"))


class FormatError(ValueError):
    """A LogFormat string this server cannot log; raised while parsing the config, with its line."""


SUPPORTED = " ".join(f"%{letter}" for letter in sorted(_SIMPLE, key=str.lower)) + " %{Header}i %{Header}o"


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
            name, letter, i = fmt[i + 1 : end], fmt[end + 1], end + 2
            if letter not in "io":
                raise FormatError(f"unknown %{{{name}}}{letter} in {fmt!r}; supported: {SUPPORTED}")
            pieces.append(_Header(letter, name))
            continue
        if i >= len(fmt) or fmt[i] not in _SIMPLE:
            what = f"%{fmt[i]}" if i < len(fmt) else "'%' at the end"
            raise FormatError(f"unknown {what} in {fmt!r} (write %% for a literal %); supported: {SUPPORTED}")
        pieces.append(_SIMPLE[fmt[i]])
        i += 1
    return pieces


class AccessLog:
    """One CustomLog: a destination and a compiled format, and whose it is (`host`: the index of
    its <VirtualHost>, None for the main server's)."""

    def __init__(self, file: LogFile, fmt: str, host: int | None = None) -> None:
        self.file = file
        self.host = host
        self.pieces = compile_format(fmt)
        # The headers the format logs (lowercased): the record carries only these.
        self.request_headers = frozenset(p.key for p in self.pieces if isinstance(p, _Header) and p.table == "i")
        self.response_headers = frozenset(p.key for p in self.pieces if isinstance(p, _Header) and p.table == "o")

    def log(self, record: AccessRecord) -> None:
        line = "".join([p if isinstance(p, str) else p(record) for p in self.pieces])  # a list joins faster
        self.file.write((line + "\n").encode("utf-8", "backslashreplace"))
