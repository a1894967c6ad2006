"""Handing held connections to another worker: restarts and recycling without resets.

The master makes one AF_UNIX SOCK_SEQPACKET socket pair before its first fork and keeps it for
its life; every worker of every generation inherits both ends. A worker that leaves (restart,
graceful restart, recycling) sends each connection it holds and is not serving on one end: the
descriptor with SCM_RIGHTS, and what the worker knows of it (addresses, bytes received of a
head, requests served, deadline). The workers that stay, or the next generation's, read the
other end, registered EPOLLEXCLUSIVE so that one of them wakes per message. Messages sent while
no worker reads (between two generations) wait in the socket, their descriptors held open by
the kernel. Only the socket buffer of the sending end bounds them (a connected pair skips the
receive queue's datagram count).
"""

from __future__ import annotations

import json
import math
import select
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

# At most this many connections in one message: a message goes to one worker, so small ones
# spread a leaving worker's connections over those that stay.
PER_MESSAGE = 16
MESSAGE_BYTES = 1 << 18  # a message's description: 16 heads of LimitRequestLine + fields fit
# The sending end's buffer: room for the connections of every worker leaving at once while the
# next generation starts (a message costs about its size plus a few hundred bytes).
SEND_BUFFER = 1 << 22


@dataclass(frozen=True, slots=True)
class Parcel:
    """One held connection as the next worker gets it (its descriptor travels beside it)."""

    peer: tuple[str, int]
    port: int  # the port of the listener it came in on
    server_addr: str  # the local IP, for virtual hosts by address ('' when not needed)
    served: int  # requests answered on it so far (MaxKeepAliveRequests)
    state: int  # held.READING, KEEPALIVE or WAITING
    buffered: bytes  # bytes received of a request head (all of it when WAITING)
    deadline: tuple[float, ...]  # no head begun: (until,); a head: reqtimeout.Deadline.saved()


def pair() -> tuple[socket.socket, socket.socket]:
    """The master's pair: (sending end, receiving end), both non-blocking."""
    send, receive = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for end in (send, receive):
        end.setblocking(False)
    try:
        send.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
    except OSError:
        pass  # the kernel caps it at net.core.wmem_max: what it allows then
    return send, receive


def encode(parcels: Sequence[Parcel]) -> bytes:
    return json.dumps(
        [
            [p.peer[0], p.peer[1], p.port, p.server_addr, p.served, p.state, p.buffered.decode("latin-1"), p.deadline]
            for p in parcels
        ]
    ).encode()


def decode(data: bytes) -> list[Parcel]:
    return [
        Parcel((host, port), local, addr, served, state, buffered.encode("latin-1"), tuple(deadline))
        for host, port, local, addr, served, state, buffered, deadline in json.loads(data)
    ]


def batches(parcels: Sequence[Parcel], per_message: int = PER_MESSAGE) -> list[range]:
    """Index ranges of `parcels`, each small enough for one message."""
    out: list[range] = []
    start = size = 0
    for index, parcel in enumerate(parcels):
        cost = len(parcel.buffered) * 2 + 128  # latin-1 in JSON: up to 6 bytes for a high byte, rare
        if index > start and (index - start >= per_message or size + cost > MESSAGE_BYTES // 2):
            out.append(range(start, index))
            start, size = index, 0
        size += cost
    if start < len(parcels):
        out.append(range(start, len(parcels)))
    return out


def send(
    end: socket.socket, parcels: Sequence[Parcel], fds: Sequence[int], deadline: float, per_message: int = PER_MESSAGE
) -> int:
    """Send every parcel with its descriptor, in order; returns how many went before `deadline`
    (the socket full and nobody reading) or an error. The caller closes its own copies either
    way."""
    sent = 0
    for span in batches(parcels, per_message):
        payload = encode([parcels[i] for i in span])
        while True:
            try:
                socket.send_fds(end, [payload], [fds[i] for i in span])
                break
            except (BlockingIOError, InterruptedError):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return sent
                poller = select.poll()
                poller.register(end, select.POLLOUT)
                poller.poll(math.ceil(remaining * 1000))
            except OSError:  # a message larger than the kernel lets the buffer be: the rest stay here
                return sent
        sent += len(span)
    return sent


def receive(end: socket.socket) -> list[tuple[Parcel, socket.socket]]:
    """One message's connections, each as a non-blocking socket; [] when another worker took
    the message first."""
    try:
        data, fds, flags, _ = socket.recv_fds(end, MESSAGE_BYTES, PER_MESSAGE)
    except (BlockingIOError, InterruptedError):
        return []
    socks = [socket.socket(fileno=fd) for fd in fds]
    parcels = decode(data) if not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) else []
    if len(parcels) != len(socks):  # cannot happen between two workers of this server
        for sock in socks:
            sock.close()
        return []
    for sock in socks:
        sock.setblocking(False)
    return list(zip(parcels, socks, strict=True))
