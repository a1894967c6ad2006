"""A worker process: load the modules, then hold and serve connections (eventloop.py) until told
to leave.

Runs in the child right after fork. It never returns to the master's code: `run` ends with
`os._exit`, so nothing the master registered (atexit, finalizers, buffered files) runs twice.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import NoReturn

import setproctitle

from . import prctl, privileges
from .compiler import Artifact
from .config import ServerConfig
from .connection import Held, StateHook, serve
from .counters import LabelIndex, Recorder
from .eventloop import EventLoop, Listener
from .generation import pool_for
from .held import Peer
from .http1 import Limits
from .keeper import Board, Keeper
from .logs import AccessLog, ErrorLog
from .messages import Request
from .router import Router
from .runtime import Runtime
from .scoreboard import (
    CLEANUP,
    DRAIN,
    GRACEFUL,
    HAND_OVER,
    REQUEST_CHARS,
    SERVE,
    SERVING_STATES,
    STOPPING,
    WAITING,
    Scoreboard,
    Slot,
    words,
)
from .site import Page, Site, prepare_guests

# Exit status of a worker that could not start (Apache's APEXIT_CHILDFATAL): the master stops
# instead of forking replacements that would fail the same way.
EXIT_CHILD_FATAL = 15


def exited_how(code: int) -> str:
    """A child's exit code (negative: the signal that ended it) as the error log says it."""
    return f"on signal {signal.Signals(-code).name}" if code < 0 else f"with status {code}"


# A peer that has been in one request for longer than this does not count in the balance of
# held connections: a worker stuck in a long guest must not keep the others from accepting.
AVAILABLE_WINDOW = 0.05


class Worker:
    """A worker process; to the connections it serves, a `connection.Worker`."""

    def __init__(
        self,
        config: ServerConfig,
        artifacts: dict[Path, Artifact],
        listeners: list[tuple[socket.socket, ssl.SSLContext | None]],  # with its TLS context on a TLS port
        slot: Slot,
        scoreboard: Scoreboard,
        hand_over: tuple[socket.socket, socket.socket],
        master_pid: int,
        error_log: ErrorLog,
        access_logs: list[AccessLog],
        labels: LabelIndex,
        pages: Mapping[str, Page],
    ) -> None:
        self.config = config
        self.artifacts = artifacts
        self.listeners = listeners
        self.slot = slot
        self.scoreboard = scoreboard
        self.hand_over = hand_over
        self.master_pid = master_pid
        self.error_log = error_log
        self.access_logs = access_logs
        self.labels = labels
        self.pages = pages
        self.stopping = False  # SIGUSR1: leave as the slot's quit flag says
        self._child_exited = False  # SIGCHLD: its keeper, the one child a worker has, may be gone
        self.loop: EventLoop | None = None
        self.board = Board()  # the connections the keeper may pass on (eventloop marks them)
        self.keeper: Keeper | None = None
        self._requests = 0
        self._request_prefix = ""  # random, drawn after the fork (see new_request_id)

    def run(self) -> None:
        """The whole life of the child process; never returns."""
        status = 0
        try:
            self._install_signals()
            try:
                self._start_keeper()
                site = self._start()
                if self.config.user:
                    privileges.drop(self.config.user, self.config.group)
            except Exception as e:  # the same config would fail the same way in every worker
                self.error_log.log("emerg", f"worker could not start: {e}")
                self._exit(EXIT_CHILD_FATAL)
            self._loop(site)
        except BaseException:  # last resort: keep the master informed
            self.error_log.error(
                "worker crashed (its keeper passes its idle connections on): "
                + traceback.format_exc().replace("\n", " | ")
            )
            status = 1
        finally:
            self.slot.state = CLEANUP
        self._exit(status, crashed=status != 0)

    def _start_keeper(self) -> None:
        """Before any thread (keeper.py): the twin that keeps this worker's waiting connections
        should it be killed."""
        user = self.config.user if os.geteuid() == 0 else None
        run_as = privileges.credentials(user, self.config.group) if user else None
        self.keeper = Keeper.start(
            self.board, self.hand_over[0], self.config.keep_alive_timeout, self._adopters_remain, run_as
        )

    def _adopters_remain(self) -> bool:
        """In the keeper, once this worker is dead: whether a worker will adopt its connections
        (not while the server stops or drains)."""
        return bool(self.slot.quit != DRAIN and self.scoreboard.cumulative.phase != STOPPING)

    def _exit(self, status: int, crashed: bool = False) -> NoReturn:
        """Leave as asked: the keeper first, so that it passes nothing on. A worker that
        `crashed` (a bug raised out of its loop) leaves its keeper be: woken by the worker's
        death, it passes the idle connections on, as after a SIGKILL."""
        if self.keeper is not None and not crashed:
            self.keeper.stop()
        os._exit(status)

    def _install_signals(self) -> None:
        # SIGTERM: stop now (default action). SIGUSR1: leave once the request in flight is answered.
        # Ctrl-C and SIGHUP are for the master, which then tells the workers.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, self._sigchld)
        signal.signal(signal.SIGUSR1, self._graceful)
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        # Die with the master, even from SIGKILL (it forks single-threaded, so this holds).
        prctl.die_with_parent(signal.SIGTERM)
        if os.getppid() != self.master_pid:
            os._exit(0)

    def _graceful(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _sigchld(self, signum: int, frame: object) -> None:
        self._child_exited = True

    def _start(self) -> Site:
        self._request_prefix = os.urandom(5).hex()
        runtime = Runtime(pool_for(self.config, (artifact.info for artifact in self.artifacts.values())))
        self._give_standard_streams(runtime)
        return Site(
            self.config,
            Router(self.config, self.access_logs, self.error_log, self.pages),
            prepare_guests(self.config, runtime, self.artifacts),
            runtime,
            self.access_logs,
            self.slot,
            recorder=Recorder(words(self.slot.counts), self.labels),
            pages=self.pages,
        )

    def _give_standard_streams(self, runtime: Runtime) -> None:
        """fds 1 and 2 become the guests' stdout and stderr: this process's own output (a log
        to stderr or stdout, Python's tracebacks) goes on to where they pointed."""
        sys.stdout.flush()
        sys.stderr.flush()
        out, err = runtime.take_standard_streams()
        moved = {1: out, 2: err}
        for log_file in {*self.error_log.files(), *(log.file for log in self.access_logs)}:
            log_file.moved(moved)
        sys.stdout = open(out, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's life
        sys.stderr = open(err, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's life

    def new_request_id(self) -> str:
        """Short ids unique across workers and restarts: a random per-worker prefix and a counter."""
        self._requests += 1
        return f"{self._request_prefix}-{self._requests}"

    def draining(self) -> bool:
        """Whether the response being made closes its connection: the worker drains (a graceful
        stop, no worker to hand it to), not when it leaves by handing its connections over."""
        return self.slot.quit == DRAIN or (self.loop is not None and self.loop.draining)

    def _leaving(self) -> bytes:
        """How the worker leaves once the request in flight is answered; SERVE while it stays.
        The quit flag counts without the signal: one that came before this process installed its
        handler went to the master's (inherited at the fork) and was lost."""
        if self._child_exited:
            self._check_keeper()
        how: bytes = self.slot.quit
        if how == SERVE:
            return HAND_OVER if self.stopping else SERVE
        return how

    def _check_keeper(self) -> None:
        """Without its keeper a killed worker would lose the connections it holds, and a keeper
        cannot be made again once threads run (keeper.py): the worker hands its connections over
        and leaves, and the master forks a replacement, which has a keeper of its own."""
        self._child_exited = False
        keeper = self.keeper
        if keeper is None:
            return
        code = keeper.exited()
        if code is None:
            return
        self.keeper = None
        self.stopping = True
        self.error_log.error(
            f"worker {os.getpid()}: its keeper {keeper.pid} exited {exited_how(code)}; the worker hands its "
            "connections over and a new one replaces it"
        )

    def _peers(self) -> list[Peer]:
        """The other serving workers of this generation, as the scoreboard shows them, in slot
        order: their held connections, whether they are in their event loop lately (waiting
        there now, or in a request that began less than AVAILABLE_WINDOW ago), whether their
        guests block, and whether their slot comes before this worker's."""
        me, generation, slots = self.slot, self.slot.generation, self.scoreboard.slots
        now = time.monotonic()
        mine = self.scoreboard.index(me)
        peers = []
        for found in _SERVING.finditer(self.scoreboard.states()):
            index = found.start()
            slot = slots[index]
            if slot.quit == SERVE and slot.generation == generation and index != mine:
                available = found[0] == WAITING or now - slot.heartbeat < AVAILABLE_WINDOW
                peers.append(Peer(sum(slot.held), available, slot.blocking, index < mine))
        return peers

    def _loop(self, site: Site) -> None:
        config = self.config
        limits = Limits(
            timeout=config.timeout,
            keep_alive=config.keep_alive,
            keep_alive_timeout=config.keep_alive_timeout,
            max_keep_alive_requests=config.max_keep_alive_requests,
            request_line=config.limit_request_line,
            field_size=config.limit_request_field_size,
            fields=config.limit_request_fields,
            encoded_slashes=config.allow_encoded_slashes,
            header_read=config.read_timeout_header,
            body_read=config.read_timeout_body,
            handshake_read=config.read_timeout_handshake,
        )
        # The local IP matters only to a <VirtualHost> on a given IP; a listener on one IP knows
        # it, one on all interfaces asks each connection (one getsockname).
        by_ip = any(address.host for host in config.virtual_hosts for address in host.addresses)
        listeners = []
        for sock, tls in self.listeners:
            sock.setblocking(False)
            # Responses go out whole (MSG_MORE holds a part that more follows at once), so Nagle
            # would only delay them. An accepted connection inherits this from its listener
            # (Linux): one setsockopt per listener, none per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ip = _bound_ip(sock) if by_ip else ""
            listeners.append(Listener(sock, sock.getsockname()[1], ip, by_ip and not ip, tls))
        title = _Title()
        title.set("idle")
        state = self._state_hook(title)

        def serve_one(held: Held) -> bool:
            return serve(held, site, self, limits, state)

        self.loop = loop = EventLoop(
            listeners, self.hand_over, self._wake_r, limits, serve_one, self.slot, self._peers, self._leaving,
            config.max_held_connections, config.max_connections_per_child, self.error_log, title.set,
            board=self.board if self.keeper is not None else None,
        )
        loop.run()
        if loop.recycled:
            self.error_log.notice(
                f"worker {os.getpid()}: recycling after {loop.accepted} connections "
                f"(MaxConnectionsPerChild {config.max_connections_per_child})"
            )
            site.recorder.recycled("max_connections")
        self.slot.state = GRACEFUL

    def _state_hook(self, title: _Title) -> StateHook:
        """Scoreboard and process title follow the connection's phases (plain stores)."""
        slot = self.slot
        draining = self.draining

        def state(letter: str, request: Request | None = None) -> None:
            slot.heartbeat = time.monotonic()
            if request is not None:  # even while draining: the slot shows what it serves
                line = request.request_line
                slot.request = line.encode("latin-1", "replace")[: REQUEST_CHARS - 1]
                slot.module = b""  # a new request: the handler names its module if it runs one
                slot.request_start = request.start
            if draining():
                slot.state = GRACEFUL
                title.set("graceful")
                return
            slot.state = letter.encode()
            if request is not None:
                # The raw target's path: printable ASCII (the decoded one may not be), no query.
                title.set(f"busy {request.method} {request.target.partition('?')[0][:64]}")

        return state


# A slot whose worker serves (not open, starting, leaving or exiting), in Scoreboard.states().
_SERVING = re.compile(b"[" + re.escape(b"".join(sorted(SERVING_STATES))) + b"]")


def _bound_ip(sock: socket.socket) -> str:
    """The IP a listener is bound to, '' for all interfaces."""
    ip: str = sock.getsockname()[0]
    return "" if ip in ("0.0.0.0", "::") else ip


class _Title:
    """Process title, set only when it changes (a setproctitle call costs a few microseconds)."""

    def __init__(self) -> None:
        self.current = ""

    def set(self, what: str) -> None:
        if what != self.current:
            self.current = what
            setproctitle.setproctitle(f"prefork-wasm: worker [{what}]")


