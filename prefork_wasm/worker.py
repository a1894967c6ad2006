"""A worker process: load the modules, then accept and serve connections until told to stop.

Runs in the child right after fork. It never returns to the master's code: `run` ends with
`os._exit`, so nothing the master registered (atexit, finalizers, buffered files) runs twice.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from pathlib import Path

import setproctitle

from . import privileges
from .compiler import Artifact
from .config import ServerConfig
from .connection import REPORT_WAIT, StateHook, serve
from .counters import LabelIndex, Recorder
from .engine import WASM32_MEMORY_MAX, InstancePool
from .http1 import Limits
from .logs import AccessLog, ErrorLog
from .messages import Request
from .router import Router
from .runtime import Runtime
from .scoreboard import CLEANUP, GRACEFUL, REQUEST_CHARS, WAITING, Slot, words
from .site import Page, Site, prepare_guests

# Exit status of a worker that could not start (Apache's APEXIT_CHILDFATAL): the master stops
# instead of forking replacements that would fail the same way.
EXIT_CHILD_FATAL = 15

# How often an idle worker wakes to beat its heart and look for a dead master.
IDLE_WAKEUP = 1.0

_PR_SET_PDEATHSIG = 1

# While connections wait in the backlog, a kept-alive connection gives its worker up after this
# many requests (then the worker takes the oldest waiting connection), so none starves. Measured
# at -c16 on 4 workers (wrk, keep-alive): yielding after every request costs each request a new
# connection; after 2, throughput is 10-15% higher with p99 still within 3x p50; after 3 or more,
# or after others waited 1-250 ms, throughput rises a little more but p99 passes 3x p50.
YIELD_EVERY = 2


class YieldPolicy:
    """When a worker's kept-alive connection gives way to connections waiting in the backlog."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.served = 0  # requests this connection was served while others waited

    def due(self, waiting: bool) -> bool:
        if not waiting:
            self.served = 0
            return False
        self.served += 1
        return self.served >= self.every

    def reset(self) -> None:
        """A new connection: its count starts at zero."""
        self.served = 0


class Worker:
    """A worker process; to the connections it serves, a `connection.Worker`."""

    def __init__(
        self,
        config: ServerConfig,
        artifacts: dict[Path, Artifact],
        listeners: list[socket.socket],
        slot: Slot,
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
        self.master_pid = master_pid
        self.error_log = error_log
        self.access_logs = access_logs
        self.labels = labels
        self.pages = pages
        self.stopping = False
        self.connections = 0
        self._requests = 0
        self._request_prefix = ""  # random, drawn after the fork (see new_request_id)

    def run(self) -> None:
        """The whole life of the child process; never returns."""
        status = 0
        try:
            self._install_signals()
            try:
                site = self._start()
                if self.config.user:
                    privileges.drop(self.config.user, self.config.group)
            except Exception as e:  # the same config would fail the same way in every worker
                self.error_log.log("emerg", f"worker could not start: {e}")
                os._exit(EXIT_CHILD_FATAL)
            self._loop(site)
        except BaseException:  # pragma: no cover - last resort, keep the master informed
            self.error_log.error("worker crashed: " + traceback.format_exc().replace("\n", " | "))
            status = 1
        finally:
            self.slot.state = CLEANUP
        os._exit(status)

    def _install_signals(self) -> None:
        # SIGTERM: stop now (default action). SIGUSR1: graceful, finish the connection first.
        # Ctrl-C and SIGHUP are for the master, which then tells the workers.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGWINCH, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGUSR1, self._graceful)
        self._wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        # Die with the master, even from SIGKILL (it forks single-threaded, so this holds).
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != self.master_pid:
            os._exit(0)

    def _graceful(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self) -> Site:
        self._backlog = select.poll()
        self._yield = YieldPolicy(YIELD_EVERY)
        for sock in self.listeners:
            self._backlog.register(sock.fileno(), select.POLLIN)
        self._request_prefix = os.urandom(5).hex()
        runtime = Runtime(pool_for(self.config, self.artifacts))
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
        return self.stopping or self.slot.quit == b"\x01"

    def others_waiting(self) -> bool:
        """Whether the kept-alive connection should give this worker up after this response:
        connections wait in the backlog (so every worker is busy; an idle one would have taken
        them) and YieldPolicy says it is their turn. One poll(0) on the listeners: cheap enough
        to ask after every response."""
        return self._yield.due(bool(self._backlog.poll(0)))

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
        )
        for sock in self.listeners:
            sock.setblocking(False)
            # Responses go out whole (MSG_MORE holds a part that more follows at once), so Nagle
            # would only delay them. An accepted connection inherits this from its listener
            # (Linux): one setsockopt per listener, none per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The accept wait: EPOLLEXCLUSIVE has a new connection wake one idle worker, not every
        # one (Apache's answer to the thundering herd on Linux). The wake-up pipe is this
        # worker's own, so a graceful stop still ends the wait at once.
        waiter = select.epoll()
        by_fd = {sock.fileno(): sock for sock in self.listeners}
        for fd in by_fd:
            waiter.register(fd, select.EPOLLIN | select.EPOLLEXCLUSIVE)
        waiter.register(self._wake_r, select.EPOLLIN)
        slot = self.slot
        max_connections = config.max_connections_per_child
        title = _Title()
        title.set("idle")  # ready now; later waits retitle only once they last (REPORT_WAIT)
        state = self._state_hook(title)
        ports = {fd: sock.getsockname()[1] for fd, sock in by_fd.items()}
        # The local IP matters only to a <VirtualHost> on a given IP; a listener on one IP knows
        # it, one on all interfaces asks each connection (one getsockname).
        by_ip = any(address.host for host in config.virtual_hosts for address in host.addresses)
        ips = {fd: _bound_ip(sock) if by_ip else "" for fd, sock in by_fd.items()}
        while not self.draining():
            if max_connections and self.connections >= max_connections:
                self.error_log.notice(
                    f"worker {os.getpid()}: recycling after {self.connections} connections "
                    f"(MaxConnectionsPerChild {max_connections})"
                )
                site.recorder.recycled("max_connections")
                break
            slot.state = WAITING
            slot.heartbeat = time.monotonic()
            ready = waiter.poll(REPORT_WAIT)  # under load the next connection is already there
            if not ready:
                title.set("idle")  # only once the wait lasts: a title change is a syscall
                ready = waiter.poll(IDLE_WAKEUP)
            if os.getppid() != self.master_pid:
                return
            for fd, _ in ready:
                if fd == self._wake_r:
                    _drain(self._wake_r)
                    continue
                if self.draining():
                    # Retired while this wait ended (the master sets the flag before it signals):
                    # a connection made after that is the next generation's, whatever the order
                    # of the ready list, or however late this worker got the CPU.
                    break
                try:
                    conn, peer = by_fd[fd].accept()
                except (BlockingIOError, InterruptedError):
                    continue  # another worker took it
                except OSError as e:
                    self.error_log.error(f"accept failed: {e}")
                    continue
                self.connections += 1
                slot.connections += 1
                self._yield.reset()
                ip = ips[fd] if ips[fd] or not by_ip else conn.getsockname()[0]
                serve(conn, peer[:2], ports[fd], site, self, limits, state, ip)
                break  # one connection per wakeup: re-check stop conditions in between
        slot.state = GRACEFUL
        title.set("graceful")

    def _state_hook(self, title: _Title) -> StateHook:
        """Scoreboard and process title follow the connection's phases (plain stores)."""
        slot = self.slot
        draining = self.draining

        def state(letter: str, request: Request | None = None) -> None:
            slot.heartbeat = time.monotonic()
            if request is not None:  # even while draining: the slot shows what it serves
                line = request.request_line
                slot.request = line.encode("latin-1", "replace")[: REQUEST_CHARS - 1]
                slot.module = b""  # a new request: the site names its module if it runs one
                slot.request_start = request.start
            if draining():
                slot.state = GRACEFUL
                title.set("graceful")
                return
            slot.state = letter.encode()
            if request is not None:
                # The raw target's path: printable ASCII (the decoded one may not be), no query.
                title.set(f"busy {request.method} {request.target.partition('?')[0][:64]}")
            elif letter == "K":
                title.set("keepalive")

        return state


def pool_for(config: ServerConfig, artifacts: dict[Path, Artifact]) -> InstancePool | None:
    """The instance pool a worker's engine gets: one core instance, its memory slot as large as
    the largest WasmMemoryLimit (4 GiB, wasm32's maximum, where a Location has none). None when
    the worker serves a wasi:cli component: one instantiates several core instances, memories
    and tables each time, and allocates on demand. A worker serving wasi:http components gets a
    pool with room for one of them."""
    infos = [artifact.info for artifact in artifacts.values()]
    if any(info.component and not info.http_handler for info in infos):
        return None
    components = any(info.http_handler for info in infos)
    limits = [loc.memory_limit for loc in [*config.locations, *config.section_runs()] if loc.module is not None]
    if not limits or None in limits:
        return InstancePool(WASM32_MEMORY_MAX, components)
    return InstancePool(max(limit for limit in limits if limit is not None), components)


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


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
