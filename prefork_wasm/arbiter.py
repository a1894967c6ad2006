"""The master process: listeners, compiled modules, and a supervised pool of forked workers.

One loop does everything (gunicorn's arbiter shape): signal handlers only queue the signal
and wake the loop; the loop reaps children, acts on queued signals and keeps the pool at
strength. The master never runs a guest and forks only while it has exactly one thread.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time
from pathlib import Path

import setproctitle

from . import __version__
from .compiler import CompileError, ensure_compiled
from .config import Listen, ServerConfig
from .engine import WASMTIME_VERSION
from .logs import AccessLog, ErrorLog
from .scoreboard import Scoreboard
from .worker import EXIT_CHILD_FATAL, Worker

# Seconds between SIGTERM and SIGKILL when stopping workers now.
STOP_GRACE = 3.0
# The loop's longest sleep: pool maintenance runs at least this often.
TICK = 1.0

QUEUED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH, signal.SIGCHLD)


class StartupError(Exception):
    """The server cannot start with this configuration (message says why)."""


def native_threads() -> int:
    """Threads of this process as the kernel counts them (Python's count misses native ones)."""
    return len(os.listdir("/proc/self/task"))


def bind(listen: Listen, backlog: int) -> socket.socket:
    host = listen.host or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind((host, listen.port))
    except OSError as e:
        sock.close()
        raise StartupError(f"Listen {listen}: could not bind: {e.strerror}") from e
    sock.listen(backlog)
    sock.set_inheritable(False)
    return sock


class Arbiter:
    def __init__(self, config: ServerConfig, print_urls: bool = True) -> None:
        self.config = config
        self.print_urls = print_urls
        self.error_log = ErrorLog(config.error_log, config.log_level)
        self.access_logs = [AccessLog(target, fmt) for target, fmt in config.custom_logs]
        self.listeners: dict[Listen, socket.socket] = {}
        self.artifacts: dict[Path, Path] = {}
        self.workers: dict[int, int] = {}  # pid -> scoreboard slot index
        self.generation = 0
        self.pid = os.getpid()
        self.started = time.time()
        self.scoreboard = Scoreboard(config.server_limit)
        self.signals: list[int] = []
        self.exit_status = 0
        self.stopping = False

    # ---------------------------------------------------------------- start-up

    def start(self) -> None:
        for warning in self.config.warnings:
            self.error_log.warn(warning)
        for listen in self.config.listens:
            self.listeners[listen] = bind(listen, self.config.listen_backlog)
        self.compile()
        self._write_pid_file()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, self._queue_signal)
        self._set_title()
        self.error_log.notice(
            f"prefork-wasm/{__version__} (wasmtime {WASMTIME_VERSION}, Python "
            f"{sys.version.split()[0]}) configured -- resuming normal operations"
        )
        for listen in self.listeners:
            self.error_log.notice(f"listening on http://{listen}/")
            if self.print_urls:
                print(f"prefork-wasm: serving on http://{listen}/", flush=True)

    def compile(self) -> None:
        """Compile what the cache lacks; a failure leaves the previous artifacts in place."""
        try:
            artifacts = ensure_compiled(self.config.modules(), self.config.wasm_cache_dir)
        except CompileError as e:
            raise StartupError(str(e)) from e
        for artifact in artifacts:
            if artifact.compiled:
                self.error_log.notice(
                    f"compiled {artifact.source} in {artifact.seconds:.2f} s -> {artifact.path.name}"
                )
            else:
                self.error_log.info(f"cache hit for {artifact.source}: {artifact.path.name}")
        self.artifacts = {a.source: a.path for a in artifacts}

    def _write_pid_file(self) -> None:
        path = self.config.pid_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{self.pid}")
        tmp.write_text(f"{self.pid}\n")
        os.replace(tmp, path)

    def _set_title(self) -> None:
        setproctitle.setproctitle(
            f"prefork-wasm: master [generation {self.generation}] -f {self.config.file}"
        )

    # ---------------------------------------------------------------- the loop

    def run(self) -> int:
        """Serve until stopped; returns the process exit status."""
        self.start()
        try:
            self.maintain_pool()
            while not self.stopping:
                self._sleep()
                self.reap()
                self._handle_signals()
                if not self.stopping:
                    self.maintain_pool()
        finally:
            self._shutdown()
        return self.exit_status

    def _queue_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _sleep(self) -> None:
        if self.signals:
            return
        try:
            select.select([self._wake_r], [], [], TICK)
        except InterruptedError:
            pass
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _handle_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if signum in (signal.SIGTERM, signal.SIGINT):
                self.error_log.notice(f"caught {signal.Signals(signum).name}, shutting down")
                self.stopping = True

    def reap(self) -> None:
        """Collect every exited child: the only place the master learns a worker is gone."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            index = self.workers.pop(pid, None)
            if index is None:
                continue
            self.scoreboard.slots[index].clear()
            code = os.waitstatus_to_exitcode(status)
            if code == EXIT_CHILD_FATAL:
                self.error_log.log(
                    "emerg", f"worker {pid} could not start (see above); shutting down, fix the error and start again"
                )
                self.stopping = True
                self.exit_status = 1
            elif code < 0 and not self.stopping:
                self.error_log.error(
                    f"worker {pid} exited on signal {signal.Signals(-code).name}; a new one replaces it"
                )
            elif code > 0 and not self.stopping:
                self.error_log.error(f"worker {pid} exited with status {code}; a new one replaces it")

    def maintain_pool(self) -> None:
        missing = self.config.start_servers - len(self.workers)
        for _ in range(missing):
            self.spawn()

    # ---------------------------------------------------------------- workers

    def spawn(self) -> int | None:
        index = self.scoreboard.free_slot()
        if index is None:
            return None
        threads = native_threads()
        if threads != 1:
            raise RuntimeError(f"refusing to fork with {threads} threads in the master")
        slot = self.scoreboard.slots[index]
        slot.claim(0, self.generation)  # before fork: the child's own updates must come after
        pid = os.fork()
        if pid == 0:
            self._become_worker(index)
        slot.pid = pid
        self.workers[pid] = index
        self.error_log.log("debug", f"forked worker {pid} into slot {index} (master threads: {threads})")
        return pid

    def _become_worker(self, index: int) -> None:
        slot = self.scoreboard.slots[index]
        slot.pid = os.getpid()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        Worker(
            self.config,
            self.artifacts,
            list(self.listeners.values()),
            slot,
            self.pid,
            self.error_log,
            self.access_logs,
            status_page=None,
        ).run()

    def _signal_workers(self, signum: int) -> None:
        for pid in list(self.workers):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def _shutdown(self) -> None:
        """Stop every worker (SIGTERM, then SIGKILL after a grace), close up, remove the pid file."""
        self._signal_workers(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.workers and time.monotonic() < deadline:
            self.reap()
            if self.workers:
                time.sleep(0.02)
        if self.workers:
            self._signal_workers(signal.SIGKILL)
            while self.workers:
                pid, _ = os.waitpid(-1, 0)
                self.workers.pop(pid, None)
        for sock in self.listeners.values():
            sock.close()
        try:
            if self.config.pid_file.read_text().strip() == str(self.pid):
                self.config.pid_file.unlink()
        except OSError as e:
            if e.errno != errno.ENOENT:
                self.error_log.warn(f"PidFile {self.config.pid_file}: could not remove: {e.strerror}")
        self.error_log.notice("shut down")
