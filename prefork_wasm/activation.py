"""systemd's socket activation: listening sockets passed as fds 3, 4, ... (LISTEN_FDS, LISTEN_PID,
LISTEN_FDNAMES), matched to the config's `Listen` lines by the address they are bound to.

The variables are taken out of the environment as they are read (sd_listen_fds does the same),
so workers, the compile subprocess and a restart never see them again; the sockets themselves
stay with the master for its whole life, so every generation serves on them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, TypeVar

# sd_listen_fds' SD_LISTEN_FDS_START: the first passed fd.
FIRST_FD = 3

L = TypeVar("L")


class ActivationError(Exception):
    """Passed sockets the server cannot serve on (the message names the fd and the fix)."""


def passed_fds(environ: MutableMapping[str, str], pid: int) -> list[tuple[int, str]]:
    """The (fd, name) pairs passed to process `pid`, and the variables removed either way.

    Variables meant for another process (LISTEN_PID differs: left over from a parent) pass
    nothing, as in sd_listen_fds; a LISTEN_FDS that is not a count is an error.
    """
    listen_pid = environ.pop("LISTEN_PID", None)
    count = environ.pop("LISTEN_FDS", None)
    names = environ.pop("LISTEN_FDNAMES", None)
    if listen_pid is None or count is None or listen_pid.strip() != str(pid):
        return []
    if not count.strip().isdigit():
        raise ActivationError(f"LISTEN_FDS={count!r} is not a number of passed sockets")
    n = int(count)
    labels = names.split(":") if names else []
    return [(FIRST_FD + i, labels[i] if i < len(labels) else "") for i in range(n)]


@dataclass(frozen=True)
class Passed:
    """One passed listening socket and the address it is bound to."""

    fd: int
    name: str  # from LISTEN_FDNAMES (FileDescriptorName=, default the socket unit's name)
    family: int
    address: tuple[Any, ...]
    dual_stack: bool = False  # an IPv6 wildcard that also accepts IPv4 (IPV6_V6ONLY off)

    def __str__(self) -> str:
        host, port = self.address[:2]
        where = f"[{host}]:{port}" if self.family == socket.AF_INET6 else f"{host}:{port}"
        return f"fd {self.fd}" + (f" ({self.name})" if self.name else "") + f", bound to {where}"


def inspect(fd: int, name: str) -> Passed:
    """What a passed fd is; ActivationError unless it is a listening TCP socket. Marks it
    close-on-exec (the compile subprocess must not hold it)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as e:
        raise ActivationError(f"passed fd {fd}{f' ({name})' if name else ''}: {e.strerror or e}") from None
    try:
        os.set_inheritable(fd, False)
        what = f"fd {fd}" + (f" ({name})" if name else "")
        listening = sock.type == socket.SOCK_STREAM and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or not listening:
            raise ActivationError(
                f"passed {what} is not a listening TCP socket; prefork-wasm serves HTTP on the "
                f"ListenStream= addresses of its Listen lines (IP:port)"
            )
        dual = sock.family == socket.AF_INET6 and not sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        return Passed(fd, name, sock.family, tuple(sock.getsockname()), dual)
    finally:
        sock.detach()  # the fd stays open: the master keeps it


def match(passed: Iterable[Passed], listens: Mapping[L, tuple[int, tuple[Any, ...]]]) -> dict[L, Passed]:
    """Each Listen line (with its resolved family and address) that a passed socket serves.

    Same family, host and port match. A wildcard `Listen PORT` (0.0.0.0) is also served by a
    dual-stack `[::]:PORT`, which is what a bare `ListenStream=PORT` binds. A passed socket that
    no line asks for is an error: nobody would accept the connections systemd queues on it.
    """
    found: dict[L, Passed] = {}
    unmatched = []
    for sock in passed:
        lines = [listen for listen, (family, address) in listens.items() if _serves(sock, family, address)]
        if not lines:
            unmatched.append(sock)
        for listen in lines:
            found.setdefault(listen, sock)
    if unmatched:
        raise ActivationError("\n".join(
            f"passed socket {sock} matches no Listen line: add `Listen {_listen_text(sock)}`, "
            f"or remove that ListenStream= from the socket unit"
            for sock in unmatched
        ))
    return found


def _serves(sock: Passed, family: int, address: tuple[Any, ...]) -> bool:
    if sock.address[1] != address[1]:
        return False
    if sock.family == family:
        return bool(sock.address[0] == address[0])
    return sock.dual_stack and family == socket.AF_INET and address[0] == "0.0.0.0" and sock.address[0] == "::"


def _listen_text(sock: Passed) -> str:
    host, port = sock.address[:2]
    if host in ("0.0.0.0", "::") and (sock.dual_stack or sock.family == socket.AF_INET):
        return str(port)
    return f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
