"""A worker's connections: one epoll over its listeners, the hand-over socket, its wake-up pipe
and every connection it holds, while it serves one request at a time.

A connection costs the worker nothing until a request head is complete on it: new connections,
kept-alive ones between requests and trickling ones wait in epoll, each under its deadline
(RequestReadTimeout's header phase, KeepAliveTimeout), as Apache's event MPM holds them in its
listener thread. A connection whose head is complete joins the ready queue and is served in
turn (`connection.serve`: its body, the guest, the response); while a request runs long, the
relief thread (relief.py) hands the requests that come on the others to idle workers, and then
the others themselves. docs/architecture.md says why each worker holds its own connections
rather than one process holding them for all.

On a TLS port a connection is held from its accept through its handshake (HANDSHAKE), each
step driven by an epoll event, under RequestReadTimeout's handshake phase; it waits as any
connection does after that.

Leaving (scoreboard.HAND_OVER: a restart, recycling) passes every connection not being served
to the workers that stay or follow (handover.py); draining (scoreboard.DRAIN: a graceful stop)
serves each connection's next request with `Connection: close`, or closes it at its deadline.
A TLS connection is never passed on (its session is in this process's OpenSSL): a leaving
worker drains its TLS connections.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import descriptors, handover
from .connection import Held
from .cpuquota import usable_cpus
from .held import (
    BLOCKING_WINDOW,
    CLOSING,
    HANDSHAKE,
    KEEPALIVE,
    MOVABLE,
    READING,
    STATE_NAMES,
    WAITING,
    Accept,
    Deadlines,
    Peer,
    Throttle,
    blocks,
    may_accept,
    wait_for,
)
from .http1 import Limits
from .keeper import Board
from .logs import ErrorLog
from .relief import Relief
from .schedstat import SchedStat
from .scoreboard import GRACEFUL, HAND_OVER, SERVE, Slot
from .scoreboard import WAITING as IDLE_WORKER
from .tlsio import HandshakeFailed, PlainHTTP, record_server_names

# A connection being served is in none of held.STATE_NAMES: the worker's own state shows it.
SERVING = len(STATE_NAMES)
# How long an idle worker waits for the request of a connection it accepted before it holds it.
ACCEPT_WAIT = 0.002
# The most connections a worker accepts per wake-up (see _accept): a burst is taken in a turn or
# two. An accept costs a tenth of a hello request; a connection left in the backlog waits a turn.
ACCEPT_BATCH = 1024
# A worker that stopped accepting (the balance, the bound) looks again this often, and whenever
# one of its connections ends.
LISTEN_RECHECK = 0.01
# A spare (held.gatherers) looks this often whether it must gather: a gatherer stuck in a request
# stops counting after worker.AVAILABLE_WINDOW, as long.
SPARE_RECHECK = 0.05
# The other workers' held counts are read from the scoreboard at most this often.
PEERS_EVERY = 0.02
# A leaving worker waits at most this long for room in the hand-over socket.
HANDOVER_SECONDS = 2.0
# How often the bound's error-log line repeats while the bound holds.
BOUND_LOG_EVERY = 60.0
# How long a wait must last before the process title says idle (a title change is a syscall).
REPORT_WAIT = 0.01
# Descriptors a worker keeps for everything but connections (logs, memfds, modules, listeners).
RESERVED_DESCRIPTORS = 64
# A worker that leaves by handing over closes its idle TLS connections (which it cannot hand
# over) this soon at the latest: before a restart's stop (arbiter.STOP_GRACE) would cut them.
LEAVING_TLS_IDLE = 2.0

_IN = select.EPOLLIN
# struct tcp_info's tcpi_unacked: a u32 at byte 24 (after 8 one-byte fields and four u32).
_TCP_INFO_UNACKED = struct.Struct("=I")
_UNACKED_AT = 24
_UNACKED_END = _UNACKED_AT + _TCP_INFO_UNACKED.size
_EXCLUSIVE = select.EPOLLIN | select.EPOLLEXCLUSIVE


@dataclass(frozen=True, slots=True)
class Listener:
    sock: socket.socket
    port: int
    ip: str  # the local IP connections arrive on; '' when not needed or asked per connection
    ask_ip: bool  # bound to all interfaces while a <VirtualHost> names an IP: getsockname per connection
    tls: ssl.SSLContext | None = None  # a TLS port: the default host's context, which picks others by SNI


class EventLoop:
    """The connections of one worker. `serve` answers the request whose head is complete on a
    held connection and says whether the connection stays open (connection.serve, bound to the
    worker's site); `peers` reads the other workers' held counts from the scoreboard; `leaving`
    says how the worker leaves, SERVE while it does not. After `max_connections` accepted
    connections (MaxConnectionsPerChild; 0: no limit) it leaves by itself, handing over."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        hand_over: tuple[socket.socket, socket.socket],
        wake_fd: int,
        limits: Limits,
        serve: Callable[[Held], bool],
        slot: Slot,
        peers: Callable[[], list[Peer]],
        leaving: Callable[[], bytes],
        bound: int,
        max_connections: int,
        error_log: ErrorLog,
        title: Callable[[str], None],
        board: Board | None = None,
    ) -> None:
        self.listeners = {listener.sock.fileno(): listener for listener in listeners}
        self.send_end, self.receive_end = hand_over
        self.wake_fd = wake_fd
        self.limits = limits
        self.serve = serve
        self.slot = slot
        self.peers = peers
        self.leaving = leaving
        self.bound = bound
        self.max_connections = max_connections
        self.error_log = error_log
        self.title = title
        # With a keeper (keeper.py): the connections it may pass on should this worker be killed,
        # marked as they change state; a request is then read only when it is served.
        self._board = board
        self.draining = False  # serving what is left with Connection: close, accepting nothing
        # A graceful stop (no worker follows): before it exits, a worker that holds nothing more
        # takes what still waits in the hand-over socket (a relieved worker's connections, handed
        # off while no worker was idle) and serves it with Connection: close, so that the last to
        # exit leaves nothing there.
        self._last_out = False
        self.accepted = 0
        self.recycled = False  # left for MaxConnectionsPerChild
        self._epoll = select.epoll()
        self._conns: dict[int, Held] = {}
        self._counts = [0] * (SERVING + 1)
        self._idle: dict[Held, None] = {}  # KEEPALIVE connections, oldest first
        self._ready: deque[Held] = deque()
        self._deadlines: Deadlines[Held] = Deadlines()
        self._listening = False
        self._recheck_at = 0.0
        # Which workers gather connections (held.gatherers): the CPUs this worker may keep busy
        # (its affinity, capped by a cgroup CPU quota), and whether its guests block, measured
        # from the serving thread's schedstat (`run`; unknown without one: then it gathers, as
        # every worker did before workers gathered).
        self.cpus = usable_cpus()
        self._schedstat: SchedStat
        self._blocking = False
        self._window: tuple[float, float, float]  # its start, seconds on a CPU and runnable
        self._polled = 0.0  # seconds in epoll wait in the current window
        self._peers: list[Peer] = []
        self._peers_at = 0.0
        self._bound_log = Throttle(BOUND_LOG_EVERY)
        self._published = [0] * SERVING
        self._own_limit = descriptors.connection_share(RESERVED_DESCRIPTORS)
        self._relief = Relief(self._relieve, error_log.error)
        for listener in listeners:
            if listener.tls is not None:
                record_server_names(listener.tls)

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        """Serve until the worker leaves; returns once every connection it held is handed over
        or closed."""
        self._schedstat = SchedStat(threading.get_native_id())  # this thread serves
        times = self._schedstat.read()
        self._blocking = self.slot.blocking = times is None
        self._window = (time.monotonic(), *(times or (0.0, 0.0)))
        self._relief.start()
        try:
            self._run()
        finally:
            self._relief.stop()
            self._schedstat.close()

    def _run(self) -> None:
        epoll = self._epoll
        epoll.register(self.wake_fd, _IN)
        self._listen(True)
        slot = self.slot
        while True:
            how = self.leaving()
            if how == SERVE and self.max_connections and self.accepted >= self.max_connections:
                how, self.recycled = HAND_OVER, True
            if how != SERVE and not self.draining:
                self._leave(how)
            if self.draining and not self._conns and not (self._last_out and self._receive(time.monotonic())):
                return
            now = time.monotonic()
            if not self._listening and not self.draining and now >= self._recheck_at:
                verdict = self._verdict(now)
                self._listen(verdict in (Accept.YES, Accept.MAKE_ROOM))
                if verdict is Accept.BALANCE:
                    self._pass_on_left(now)
                if verdict in (Accept.BALANCE, Accept.SPARE):
                    shed = self._shed(now)
                    if verdict is Accept.SPARE and not shed:  # a spare with nothing to hand back
                        self._recheck_at = now + SPARE_RECHECK
            if now >= self._window[0] + BLOCKING_WINDOW:
                self._measure(now)
            timeout = 0.0 if self._ready else wait_for(self._deadlines.next(), now, self._longest_wait(now))
            counts = self._counts[:SERVING]
            if counts != self._published:
                slot.held[:] = self._published = counts
            slot.heartbeat = now
            if not self.draining:
                slot.state = IDLE_WORKER
            events = epoll.poll(min(timeout, REPORT_WAIT))
            if not events and timeout > REPORT_WAIT:
                self.title("idle" if not self.draining else "graceful")
                events = epoll.poll(timeout - REPORT_WAIT)
            polled_from, now = now, time.monotonic()
            self._polled += now - polled_from
            # The held connections' events first: the requests they make ready say whether this
            # worker is idle when `_accept` looks (an idle one takes one connection and serves it;
            # a busy one takes what the backlog holds, as the balance allows).
            conns = self._conns
            for fd, _ in events:
                if fd in conns:
                    self._event(fd, now)
            for fd, _ in events:
                if fd not in conns:
                    self._event(fd, now)
            for held in self._deadlines.expired(now):
                self._expire(held, now)
            self._serve_ready()

    def _longest_wait(self, now: float) -> float:
        """The epoll timeout when no deadline is nearer: the heartbeat's second, or the next
        look at whether to accept again."""
        if self._listening or self.draining:
            return 1.0
        return max(self._recheck_at - now, 0.0)

    def _event(self, fd: int, now: float) -> None:
        held = self._conns.get(fd)
        if held is not None:
            try:
                self._readable(held, now)
            except Exception as e:  # a bug reading one connection: it ends, the others go on
                self.error_log.error(f"reading a connection from {held.peer[0]} failed: {e!r}")
                if held.fd in self._conns:
                    held.end()
                    self._forget(held)
        elif fd in self.listeners:
            if self._listening:
                self._accept(self.listeners[fd], now)
        elif fd == self.receive_end.fileno():
            if self._listening:
                self._adopt(now)
        elif fd == self.wake_fd:
            _drain_pipe(fd)

    # ---------------------------------------------------------------- states

    def _move(self, held: Held, state: int) -> None:
        counts = self._counts
        counts[held.state] -= 1
        counts[state] += 1
        if held.state == KEEPALIVE:
            del self._idle[held]
        elif state == KEEPALIVE:
            self._idle[held] = None
        held.state = state
        if self._board is not None:
            self._board.mark(held.fd, held.served if state in MOVABLE and held.untouched else None)

    def _hold(self, held: Held) -> None:
        """A connection the worker now owns: wait for its head, or serve it at once."""
        held.board = self._board
        self._conns[held.fd] = held
        held.state = SERVING
        self._counts[SERVING] += 1
        if held.complete:
            self._to_ready(held)
        else:
            self._wait(held)

    def _wait(self, held: Held) -> None:
        """Until its next bytes: READING a head (RequestReadTimeout), or KEEPALIVE (KeepAliveTimeout)."""
        if not held.registered:
            self._epoll.register(held.fd, _IN)
            held.registered = True
        self._move(held, READING if held.head is not None else KEEPALIVE)
        self._deadlines.set(held, held.deadline)

    def _to_ready(self, held: Held) -> None:
        self._move(held, WAITING)
        self._deadlines.discard(held)
        self._ready.append(held)

    def _forget(self, held: Held) -> None:
        """The connection is closed (or another worker's now): a worker that stopped accepting
        looks again at once."""
        self._recheck_at = 0.0
        del self._conns[held.fd]
        self._move(held, SERVING)
        self._counts[SERVING] -= 1
        self._deadlines.discard(held)

    def _readable(self, held: Held, now: float) -> None:
        state = held.state
        if state == CLOSING:
            if held.drain():
                self._forget(held)
        elif state == READING or state == KEEPALIVE:
            if self._board is not None and held.untouched:
                self._to_ready(held)  # read when served: till then its request stays in the socket
            elif held.receive(now):
                self._to_ready(held)
            elif held.head is not None:
                if state == KEEPALIVE:
                    self._move(held, READING)
                self._deadlines.set(held, held.deadline)
        elif state == HANDSHAKE:
            self._shake(held, now)
        # WAITING: its head is complete, what follows is read when it is served

    def _greet(self, held: Held, now: float) -> None:
        """A connection accepted on a TLS port: held through its handshake."""
        self._conns[held.fd] = held
        held.state = SERVING
        self._counts[SERVING] += 1
        self._move(held, HANDSHAKE)
        self._deadlines.set(held, held.deadline)
        self._shake(held, now)

    def _shake(self, held: Held, now: float) -> None:
        """The handshake as far as it goes without waiting; once done, the connection waits for
        its first request as any does. Plain HTTP gets Apache's 400; a failed handshake is closed
        with an info line (scanners and port checks fail many)."""
        peer = f"{held.peer[0]}:{held.peer[1]}"
        try:
            wants = held.handshake()
        except PlainHTTP:
            self.error_log.info(f"{peer}: SSL handshake failed: HTTP spoken on HTTPS port; answered 400", "ssl")
            held.answer_plain_http()
            self._close(held, now)
            return
        except HandshakeFailed as e:
            self.error_log.info(f"{peer}: SSL handshake failed: {e}", "ssl")
            held.end()
            self._forget(held)
            return
        self._watch(held, wants or _IN)
        if wants:
            return
        held.start(now)
        if held.receive(now):
            self._to_ready(held)
        else:
            self._wait(held)

    def _watch(self, held: Held, events: int) -> None:
        """Wait for `events` (a handshake may wait to write) in epoll."""
        if held.registered:
            self._epoll.modify(held.fd, events)
        else:
            self._epoll.register(held.fd, events)
            held.registered = True

    def _expire(self, held: Held, now: float) -> None:
        """Its deadline passed: a partial head is answered 408, then closed lingering (the
        client may still be sending it: closed at once, the socket would answer that with a
        reset, which can destroy the 408 before the client reads it); an idle connection is
        closed silently (as Apache does); a lingering close ends."""
        if held.state == READING and held.expire():
            self._close(held, now)
            return
        if held.state == HANDSHAKE:
            self.error_log.info(f"{held.peer[0]}:{held.peer[1]}: SSL handshake timed out", "ssl")
        held.end()
        self._forget(held)

    def _close(self, held: Held, now: float) -> None:
        """After its last response: closed, or CLOSING while the client's last bytes drain."""
        if held.close(now):
            self._forget(held)
            return
        if not held.registered:
            self._epoll.register(held.fd, _IN)
            held.registered = True
        self._move(held, CLOSING)
        self._deadlines.set(held, held.deadline)

    # ---------------------------------------------------------------- serving

    def _serve_ready(self) -> None:
        """Serve the connections whose heads are complete, oldest first; one made ready by
        serving (a pipelined request) waits for the next round, after a look at epoll. While a
        request runs, relief.py may hand the others off (`_relieve`)."""
        remaining = len(self._ready)
        while remaining > 0 and self._ready:
            remaining -= 1
            if self.leaving() != SERVE and not self.draining:
                return  # leave now: what is still waiting goes to another worker
            held = self._ready.popleft()
            self._move(held, SERVING)
            if not held.complete and not held.receive(time.monotonic()):  # queued unread (`_readable`)
                self._wait(held)  # only part of a head had come: wait for the rest
                continue
            self._relief.begin(time.monotonic())
            try:
                keep = self.serve(held)
            except Exception as e:  # connection.serve answers every failure: a bug, but not the worker's end
                self.error_log.error(f"serving a connection from {held.peer[0]} failed: {e!r}")
                keep = False
                held.linger = None
            finally:
                self._relief.end()
            now = time.monotonic()
            if keep and not self.draining:
                if held.idle(now):
                    self._to_ready(held)
                else:
                    self._wait(held)
            else:
                self._close(held, now)

    def _relieve(self, idle_too: bool) -> bool:
        """In the relief thread, under its lock, while the main thread serves a long request:
        hand the other connections whose requests have come (waiting, or bytes arrived: epoll
        says so) to the hand-over socket, one per message so that each goes to its own idle
        worker, without waiting for room; with `idle_too`, one message of idle ones as well.
        True once none is left to hand off. Not while the worker leaves or drains: the workers
        that could adopt them are leaving too."""
        if self.draining or self.leaving() != SERVE:
            return True
        conns = self._conns
        arrived = [conns.get(fd) for fd, _ in self._epoll.poll(0)]
        urgent = [
            *(held for held in self._ready if held.portable),
            *(held for held in arrived if held is not None and held.state in (READING, KEEPALIVE) and held.portable),
        ]
        now = time.monotonic()
        if self._send_away(urgent, now, 1) == len(urgent) and idle_too:
            rest = (held for held in conns.values() if held.state in (READING, KEEPALIVE) and held.portable)
            self._send_away(list(itertools.islice(rest, handover.PER_MESSAGE)), now, handover.PER_MESSAGE)
        if urgent or idle_too:
            self._ready = deque(held for held in self._ready if conns.get(held.fd) is held)
            self.slot.held[:] = self._published = self._counts[:SERVING]
        return idle_too and not any(held.portable and held.state in MOVABLE for held in conns.values())

    # ---------------------------------------------------------------- accepting

    def _peer_view(self, now: float, fresh: bool = False) -> list[Peer]:
        if fresh or now >= self._peers_at:
            self._peers = self.peers()
            self._peers_at = now + PEERS_EVERY
        return self._peers

    def _verdict(self, now: float) -> Accept:
        """Whether to take one more connection (held.may_accept), by the peers' counts as last
        read, or as they are now if those say no: in a burst the others take connections too.
        Over the margin, what waits in the listen backlog counts too (its share is this worker's)."""
        held, idle, limit = len(self._conns), len(self._idle), self._own_limit
        cpus, blocking = self.cpus, self._blocking
        verdict = may_accept(held, idle, self._peer_view(now), self.bound, limit, cpus=cpus, blocking=blocking)
        if verdict in (Accept.BALANCE, Accept.SPARE):
            peers = self._peer_view(now, True)
            verdict = may_accept(held, idle, peers, 0, limit, cpus=cpus, blocking=blocking)
            if verdict is Accept.BALANCE:
                backlog = sum(_backlog(listener.sock) for listener in self.listeners.values())
                if backlog:
                    verdict = may_accept(held, idle, peers, 0, limit, cpus=cpus, blocking=blocking, backlog=backlog)
        spare = verdict is Accept.SPARE
        if spare != self.slot.spare:  # for server-status and the metrics
            self.slot.spare = spare
        return verdict

    def _measure(self, now: float) -> None:
        """Whether this worker's guests block (held.blocks), over the window that ends now;
        published in its slot for the others' verdicts. A change is looked at at once."""
        times = self._schedstat.read()
        start, on_cpu, runnable = self._window
        if times is None:
            blocking, times = True, (0.0, 0.0)
        else:
            blocking = blocks(now - start, times[0] - on_cpu, times[1] - runnable, self._polled)
        self._window = (now, *times)
        self._polled = 0.0
        if blocking != self._blocking:
            self._blocking = self.slot.blocking = blocking
            self._recheck_at = 0.0
        if self._listening and not self.draining and self._verdict(now) in (Accept.BALANCE, Accept.SPARE):
            self._listen(False)  # the others changed (their guests block, or not): look again at once
            self._recheck_at = 0.0

    def _listen(self, on: bool) -> None:
        """Take new connections, and connections other workers hand over, or stop taking them."""
        if on != self._listening:
            for fd in [*self.listeners, self.receive_end.fileno()]:
                if on:
                    self._epoll.register(fd, _EXCLUSIVE)
                else:
                    self._epoll.unregister(fd)
            self._listening = on
        if not on:
            self._recheck_at = time.monotonic() + LISTEN_RECHECK

    def _accept(self, listener: Listener, now: float) -> None:
        """Accept what waits in the backlog, as the balance and the bound allow (ACCEPT_BATCH at
        most: a burst of connections is taken in a few turns), except that a worker with nothing
        to do stops at a connection whose request has come: it serves that one now, and
        EPOLLEXCLUSIVE wakes another idle worker for the next."""
        idle = waits = not self._ready
        for _ in range(ACCEPT_BATCH):
            verdict = self._verdict(now)
            if verdict is Accept.SPARE:  # woken as a gatherer was: wake one for what is there
                self._listen(False)
                self._pass_on_left(now)
                return
            if verdict is not Accept.YES:
                if verdict is not Accept.BALANCE and self._bound_log.due(now):
                    self.error_log.error(
                        f"server reached MaxHeldConnections setting ({self.bound}), consider raising it"
                        if len(self._conns) < self._own_limit
                        else f"worker {os.getpid()} holds as many connections as its RLIMIT_NOFILE allows "
                        f"({len(self._conns)}); consider raising the hard limit"
                    )
                if verdict is not Accept.MAKE_ROOM:
                    self._listen(False)
                    return
                oldest = next(iter(self._idle))
                oldest.end()
                self._forget(oldest)
            try:
                sock, peer = listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return  # none left, or another worker took it
            except OSError as e:  # EMFILE, ENFILE, ENOBUFS: not now; the connection waits in the backlog
                self.error_log.error(f"accept failed: {e}")
                self._listen(False)
                return
            self.accepted += 1
            self.slot.connections += 1
            held = self._new_held(listener, sock, peer, now)
            if listener.tls is not None:
                self._greet(held, now)
            else:
                # A new connection's request is there by the accept, or a moment later: waiting
                # that moment here keeps an idle worker from taking the next connection meanwhile
                # (another idle worker takes it), as a prefork worker reads the connection it
                # accepted.
                # With a keeper, a request that must wait for its turn stays unread (`_readable`).
                # Once per turn: a connection that sends nothing in that moment (a flood of idle
                # ones) must not cost each of the next ones the same wait.
                if idle or self._board is None:
                    if not held.receive(now) and waits:
                        if _readable_within(sock, ACCEPT_WAIT):
                            held.receive(time.monotonic())
                        else:
                            waits = False
                self._hold(held)
            if self.accepted == self.max_connections:
                self._listen(False)  # the last one: the loop leaves once it is served
                return
            if idle and held.complete:
                return

    def _new_held(self, listener: Listener, sock: socket.socket, peer: tuple[str, int], now: float) -> Held:
        ip = sock.getsockname()[0] if listener.ask_ip else listener.ip
        held = Held(sock, peer[:2], listener.port, ip, self.limits, context=listener.tls)
        held.start(now)
        return held

    def _pass_on_left(self, now: float) -> None:
        """What this worker left to one that holds fewer (Accept.BALANCE) and still waits a
        LISTEN_RECHECK later. EPOLLEXCLUSIVE woke only this worker for it, and a sleeping one
        would hear of it only with the next connection, or never: sent to the hand-over socket,
        it wakes one. One connection per listener and one message at each look: in a burst the
        others, busy, find the rest in their own epoll, and the balance stays theirs to keep. A
        TLS port's connection, which cannot move, is greeted here, as is what the hand-over
        socket has no room for."""
        going: list[Held] = []
        for listener in self.listeners.values():
            try:
                sock, peer = listener.sock.accept()
            except OSError:  # none waits (BlockingIOError), or not now: the backlog keeps it
                continue
            held = self._new_held(listener, sock, peer, now)
            if listener.tls is not None:
                self._greet(held, now)
            else:
                going.append(held)
        going += self._adopted(now)
        sent = handover.send(self.send_end, [held.parcel() for held in going], [held.fd for held in going], now, 1)
        for held in going[:sent]:
            held.end()
        for held in going[sent:]:
            self._hold(held)

    # ---------------------------------------------------------------- hand-over

    def _adopt(self, now: float) -> None:
        """Connections another worker handed over, as they were there: one message, if the
        balance lets this worker take more (else the workers that hold fewer take it)."""
        verdict = self._verdict(now)
        if verdict not in (Accept.YES, Accept.MAKE_ROOM):
            self._listen(False)
            if verdict is Accept.SPARE:  # woken as a gatherer was: pass it on now
                self._pass_on_left(now)
            return
        self._receive(now)

    def _shed(self, now: float) -> bool:
        """Hand one connection not being served (keep-alive, reading, then the last to wait
        for its turn) to the workers that take more: a spare holds none, and a worker over the
        balance gives back what its guests' blocking or a moved gatherer left it. One per
        LISTEN_RECHECK, so the others' counts catch up between two. False when none can go."""
        reading = (held for held in self._conns.values() if held.state == READING)
        candidates = itertools.chain(self._idle, reading, reversed(self._ready))
        going = next((held for held in candidates if held.portable), None)
        if going is None:
            return False
        queued = going.state == WAITING
        if self._send_away([going], now, 1) and queued:
            self._ready.remove(going)
        self._recheck_at = now + LISTEN_RECHECK
        return True

    def _receive(self, now: float) -> bool:
        """Hold the connections of one message in the hand-over socket; False when none waits."""
        arrived = self._adopted(now)
        for held in arrived:
            self._hold(held)
        return bool(arrived)

    def _adopted(self, now: float) -> list[Held]:
        """The connections of one message in the hand-over socket, not held yet."""
        adopted = []
        for parcel, sock in handover.receive(self.receive_end):
            try:
                adopted.append(Held.adopted(parcel, sock, self.limits, now))
            except Exception as e:  # a parcel this worker cannot read: a bug, but not the worker's end
                self.error_log.error(f"a connection from {parcel.peer[0]} handed over could not be adopted: {e!r}")
                sock.close()
        return adopted

    def _leave(self, how: bytes) -> None:
        """Stop accepting; hand over what is not being served (HAND_OVER); serve the rest with
        Connection: close, each idle one's next request or its end at KeepAliveTimeout, as a
        prefork worker drains its connection (DRAIN, TLS connections, or what no worker took in
        time). Leaving by hand-over, idle ones wait LEAVING_TLS_IDLE at most."""
        self._listen(False)
        for listener in self.listeners.values():
            listener.sock.close()  # this worker's copy: it never accepts again
        self.listeners = {}
        self.draining = True
        self.slot.state = GRACEFUL
        self.title("graceful")
        if how == HAND_OVER:
            self._hand_over()
            latest = time.monotonic() + LEAVING_TLS_IDLE
            for held in self._idle:  # TLS ones, and any the hand-over could not take
                if held.until > latest:
                    held.until = latest
                    self._deadlines.set(held, latest)
        else:
            self._last_out = True

    def _hand_over(self) -> None:
        leaving = [held for held in self._conns.values() if held.state in MOVABLE and held.portable]
        sent = self._send_away(leaving, time.monotonic() + HANDOVER_SECONDS, handover.PER_MESSAGE)
        self._ready = deque(held for held in self._ready if self._conns.get(held.fd) is held)
        if sent < len(leaving):  # no worker read them in time: this one finishes them
            self.error_log.warn(
                f"worker {os.getpid()}: {len(leaving) - sent} of {len(leaving)} connections could not be "
                f"handed over within {HANDOVER_SECONDS:g} s; serving them before exiting"
            )

    def _send_away(self, going: list[Held], deadline: float, per_message: int) -> int:
        """Send `going` to the hand-over socket in order, by `deadline`; returns how many went.
        Those are another worker's now: each leaves this worker's epoll before its descriptor is
        closed (an epoll entry lives as long as the connection's file, which the receiver holds)."""
        if not going:
            return 0
        sent = handover.send(
            self.send_end, [held.parcel() for held in going], [held.fd for held in going], deadline, per_message
        )
        for held in going[:sent]:
            if held.registered:
                self._epoll.unregister(held.fd)
                held.registered = False
            held.end()
            self._forget(held)
        return sent


def _readable_within(sock: socket.socket, seconds: float) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(seconds * 1000))


def _backlog(sock: socket.socket) -> int:
    """The connections waiting in a listening socket's backlog (`ss -lt` shows it as Recv-Q):
    the kernel gives it as a listener's tcpi_unacked. 0 when it cannot say (not TCP)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _UNACKED_END)
    except OSError:
        return 0
    return _TCP_INFO_UNACKED.unpack_from(info, _UNACKED_AT)[0] if len(info) >= _UNACKED_END else 0


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
