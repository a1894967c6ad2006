"""What a worker decides about the connections it holds, apart from any socket or clock.

A worker multiplexes its connections (docs/architecture.md says why): those with no complete
request head yet (reading), those idle between kept-alive requests (keep-alive), those whose
head is complete and that wait for the worker to finish another request (waiting), those
being closed after their last response (closing) and those in a TLS handshake (handshake)
cost it an epoll entry and a deadline each, never the worker itself. This module is the
arithmetic of that: the per-connection deadlines, whether to accept one more connection (the
balance between workers and the server-wide MaxHeldConnections bound), which workers gather
the connections (`gatherers`), whether a worker's guests block (`blocks`) and how often the
bound is logged. Times are time.monotonic() seconds, given by the caller.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Sequence
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
    SPARE = "leave it to the workers that gather connections"


@dataclass(frozen=True, slots=True)
class Peer:
    """Another worker of the same generation, as its scoreboard slot shows it."""

    held: int
    available: bool  # in its event loop lately: a worker stuck in one long request is not
    blocking: bool = False  # its guests lately slept (`blocks`): it keeps a CPU busy only part of the time
    before: bool = False  # its slot comes before this worker's (the order in which workers gather)


def gatherers(peers: Sequence[Peer], blocking: bool, cpus: int, own_limit: int) -> list[Peer] | None:
    """The peers that gather connections with this worker, or None when this worker is a spare.

    Every available worker whose guests do not block keeps a CPU busy while it holds ready
    requests, and a worker the scheduler has set aside delays every connection it holds: so
    connections gather on as many such workers as there are CPUs, the first in slot order,
    and the others stay spare (idle, for the requests relief hands over, and for new
    connections once a gatherer is stuck in a long request or holds `own_limit`). A worker
    whose guests block leaves its CPU to others while it waits, so it gathers without taking
    a CPU's place: with blocking guests every worker gathers, as each did before a worker held
    many connections. Unavailable peers (stuck in one long request) are left out, as in the
    balance.
    """

    def steady(p: Peer) -> bool:
        return p.available and not p.blocking and p.held < own_limit

    ahead = sum(1 for p in peers if p.before and steady(p))
    if not blocking and ahead >= cpus:
        return None
    places = cpus - ahead - (not blocking)  # for steady gatherers after this worker
    gathering = []
    for p in peers:
        if p.available and p.held < own_limit and (p.blocking or p.before):
            gathering.append(p)
        elif steady(p) and places > 0:
            gathering.append(p)
            places -= 1
    return gathering


def balance_margin(least: int) -> int:
    """How many more connections than the least-loaded peer a worker may hold: one, and an
    eighth more as the load grows, so that a burst of thousands is not accepted in lockstep."""
    return 1 + least // 8


def may_accept(
    held: int,
    idle: int,
    peers: Sequence[Peer],
    bound: int,
    own_limit: int,
    *,
    cpus: int,
    blocking: bool = False,
    backlog: int = 0,
) -> Accept:
    """Whether this worker, holding `held` connections (`idle` of them in keep-alive), accepts one more.

    `bound` is server-wide (MaxHeldConnections; 0: none) and `own_limit` is what this worker's
    descriptors allow: at either, a worker makes room by closing its oldest idle connection,
    or, with none, leaves new connections in the listen backlog. Below them, a spare
    (`gatherers`, with `cpus` CPUs) leaves new connections to the gatherers, and a gatherer
    accepts while it holds no more than `balance_margin` over the least-loaded of the others,
    so that kept-alive connections spread over the gatherers instead of piling on whichever
    woke first.

    A burst (`backlog` connections waiting in the listen backlog) is shared at once: a gatherer
    also accepts while it holds less than its share of all the gatherers' connections and the
    backlog's. By the margin alone, each gatherer would take a margin's worth per turn of its
    loop while the others serve theirs, and the last of a thousand connections would wait
    dozens of turns, seconds, for their accept.
    """
    if held >= own_limit or (bound and held + sum(p.held for p in peers) >= bound):
        return Accept.MAKE_ROOM if idle else Accept.FULL
    gathering = gatherers(peers, blocking, cpus, own_limit)
    if gathering is None:
        return Accept.SPARE
    if gathering:
        least = min(p.held for p in gathering)
        if held > least + balance_margin(least) and held >= fair_share(held, gathering, backlog):
            return Accept.BALANCE
    return Accept.YES


def fair_share(held: int, gathering: Sequence[Peer], backlog: int) -> int:
    """This worker's share, rounded up, of what it and the other gatherers hold and will hold
    once the backlog is accepted."""
    return -(-(held + sum(p.held for p in gathering) + backlog) // (len(gathering) + 1))


# How long a worker measures before it says whether its guests block, and the share of that
# time asleep outside its epoll wait (in a guest's sleep or I/O, or a slow client's write)
# from which they do.
BLOCKING_WINDOW = 0.2
BLOCKING_SHARE = 0.25


def blocks(wall: float, on_cpu: float, runnable: float, polled: float) -> bool:
    """Whether a worker's guests block, from one window: `wall` seconds, of which `on_cpu` ran,
    `runnable` waited for a CPU (both from the kernel's schedstat for its main thread) and
    `polled` were spent in its epoll wait. The rest is sleep outside epoll wait; the waits for
    a CPU that end an epoll wait are in both `runnable` and `polled`, so this errs toward
    not blocking."""
    asleep = wall - on_cpu - runnable - polled
    return asleep > BLOCKING_SHARE * wall


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
