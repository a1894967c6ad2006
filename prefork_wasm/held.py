"""What a worker decides about the connections it holds, apart from any socket or clock.

A worker multiplexes its connections (docs/architecture.md says why): those with no complete
request head yet (reading), those idle between kept-alive requests (keep-alive), those whose
head is complete and that wait for the worker to finish another request (waiting), those
being closed after their last response (closing) and those in a TLS handshake (handshake)
cost it an epoll entry and a deadline each, never the worker itself. This module is the
arithmetic of that: the per-connection deadlines, whether to accept one more connection (the
balance between workers and the server-wide MaxHeldConnections bound) and how often the bound
is logged. Times are time.monotonic() seconds, given by the caller.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

# A held connection's state; the scoreboard counts each (STATE_NAMES, in this order). HANDSHAKE:
# on a TLS port, from the accept to the handshake's end (the first byte's wait included).
READING, KEEPALIVE, WAITING, CLOSING, HANDSHAKE = range(5)
STATE_NAMES = ("reading", "keepalive", "waiting", "closing", "handshake")
# The states in which a connection can go to another worker (handover.py): all but closing,
# whose response is sent and whose client's last bytes are being drained here, and a TLS
# handshake's (a TLS connection's state is in this process's OpenSSL objects).
MOVABLE = frozenset({READING, KEEPALIVE, WAITING})

K = TypeVar("K", bound=Hashable)


class Deadlines(Generic[K]):
    """The nearest of many deadlines that move: a heap whose outdated entries are skipped.

    Setting a deadline is a push (O(log n)); the old entry stays until it surfaces, so a
    trickling client whose deadline moves with every byte costs a push per byte, not a search.
    The heap is rebuilt when outdated entries outnumber the live ones.
    """

    __slots__ = ("_at", "_heap", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._at: dict[K, tuple[float, int]] = {}
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._at)

    def set(self, key: K, at: float) -> None:
        entry = (at, next(self._order))
        self._at[key] = entry
        heapq.heappush(self._heap, (*entry, key))
        if len(self._heap) > 2 * len(self._at) + 64:
            self._heap = [(a, n, k) for k, (a, n) in self._at.items()]
            heapq.heapify(self._heap)

    def discard(self, key: K) -> None:
        self._at.pop(key, None)

    def next(self) -> float | None:
        """The nearest deadline, None when there is none."""
        heap = self._heap
        while heap:
            at, order, key = heap[0]
            if self._at.get(key) == (at, order):
                return at
            heapq.heappop(heap)
        return None

    def expired(self, now: float) -> list[K]:
        """The keys whose deadline is at or before `now`, nearest first; they are removed."""
        due = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, order, key = heapq.heappop(heap)
            if self._at.get(key) == (at, order):
                del self._at[key]
                due.append(key)
        return due


def wait_for(nearest: float | None, now: float, longest: float) -> float:
    """The epoll timeout: until the nearest deadline, `longest` at most, never negative."""
    if nearest is None:
        return longest
    return min(max(nearest - now, 0.0), longest)


class Accept(Enum):
    YES = "accept"
    MAKE_ROOM = "close the oldest keep-alive connection, then accept"
    BALANCE = "leave it to a worker that holds fewer"
    FULL = "the bound is reached: leave it in the listen backlog"


@dataclass(frozen=True, slots=True)
class Peer:
    """Another worker of the same generation, as its scoreboard slot shows it."""

    held: int
    available: bool  # in its event loop lately: a worker stuck in one long request is not


def balance_margin(least: int) -> int:
    """How many more connections than the least-loaded peer a worker may hold: one, and an
    eighth more as the load grows, so that a burst of thousands is not accepted in lockstep."""
    return 1 + least // 8


def may_accept(held: int, idle: int, peers: Iterable[Peer], bound: int, own_limit: int) -> Accept:
    """Whether this worker, holding `held` connections (`idle` of them in keep-alive), accepts one more.

    `bound` is server-wide (MaxHeldConnections; 0: none) and `own_limit` is what this worker's
    descriptors allow: at either, a worker makes room by closing its oldest idle connection,
    or, with none, leaves new connections in the listen backlog. Below them, a worker accepts
    while it holds no more than `balance_margin` over the least-loaded available peer, so that
    kept-alive connections spread over the workers instead of piling on whichever woke first;
    a peer busy in one long request does not count, or it would hold the others back.
    """
    peers = list(peers)
    if held >= own_limit or (bound and held + sum(p.held for p in peers) >= bound):
        return Accept.MAKE_ROOM if idle else Accept.FULL
    available = [p.held for p in peers if p.available]
    if available:
        least = min(available)
        if held > least + balance_margin(least):
            return Accept.BALANCE
    return Accept.YES


class Throttle:
    """Says yes at most once per `every` seconds: a condition that lasts (the bound reached)
    is logged when it begins and then now and then, not once per connection."""

    __slots__ = ("_every", "_next")

    def __init__(self, every: float) -> None:
        self._every = every
        self._next = float("-inf")

    def due(self, now: float) -> bool:
        if now < self._next:
            return False
        self._next = now + self._every
        return True
