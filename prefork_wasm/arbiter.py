"""The master process: listeners, compiled modules, and a supervised pool of forked workers.

One loop does everything (gunicorn's arbiter shape): signal handlers only queue the signal
and wake the loop; the loop reaps children (the one place that learns a worker is gone),
acts on queued signals, and once a second maintains the pool like Apache's prefork MPM,
samples worker memory and looks for hung workers. The master never runs a guest and forks
only while it has exactly one thread.

Signals (Apache's): TERM/INT stop now; WINCH graceful stop; HUP restart (workers stopped
now, config and modules re-read, listeners kept); USR1 graceful restart (a new generation
starts, old workers finish their connection and exit, logs reopened).

A restart never stops the server: the next generation's logs are opened, its new listeners
bound and its modules compiled (in a subprocess the loop reaps like a worker, so supervision
goes on meanwhile) before it replaces the current one; if anything fails, the error is logged
with its file:line and the current generation keeps serving.
"""

from __future__ import annotations

import errno
import os
import random
import select
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import setproctitle

from . import __version__, descriptors, handover, privileges
from .activation import ActivationError, Passed, match
from .compiler import Artifact, Compile, CompileError, Digests, start_compile
from .conffile import parse_config
from .config import ConfigError, Listen, ServerConfig
from .connection import LINGER_SECONDS
from .control import ReloadReport, read_report, report_path, write_report
from .counters import RECYCLE_REASONS, RELOAD_RESULTS, LabelIndex, assign, bump
from .engine import WASMTIME_VERSION
from .generation import (
    MPM,
    NextGeneration,
    StartupError,
    bind,
    close_all,
    culprit,
    finish_compile,
    located,
    open_logs,
    resolve,
    tls_contexts,
)
from .health import HealthPage
from .logs import AccessLog, ErrorLog
from .logtargets import PipedLog, make_parent
from .metrics import MetricsPage
from .notify import Notifier
from .prctl import adopt_orphans
from .runtime import EXIT_GUEST_STUCK
from .scoreboard import DRAIN, HAND_OVER, SERVING, STARTING, STOPPING, WAITING, Scoreboard, words
from .site import Page
from .spares import plan
from .status import StatusPage
from .tls import Contexts
from .worker import EXIT_CHILD_FATAL, Worker, exited_how

WASM = "wasm"  # the error log's name for the module of the master's compile lines (Apache's: MPM's)
# Seconds between SIGTERM and SIGKILL when stopping workers now.
STOP_GRACE = 3.0
# Pool maintenance, memory sampling and hung-worker checks run this often (prefork's second).
MAINTENANCE_INTERVAL = 1.0
# MaxMemoryPerChild limits are spread per worker by up to this fraction (downwards), so a
# pool that grows together does not recycle together.
MEMORY_SPREAD = 0.05

QUEUED_SIGNALS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGWINCH, signal.SIGCHLD,
)


def silence_limit(config: ServerConfig) -> float:
    """The longest a live worker may go without a heartbeat: reading or writing (Timeout), a
    guest's run (the longest WasmTimeout a guest runs under, a script's <Directory> settings
    included; static files and the server's pages run none) and a lingering close."""
    runs = (loc.timeout for loc in config.guest_runs())
    return config.timeout + max(runs, default=0) + LINGER_SECONDS


def size_text(n: float) -> str:
    return f"{n / 1048576:.1f}M"


def native_threads() -> int:
    """Threads of this process as the kernel counts them (Python's count misses native ones)."""
    return len(os.listdir("/proc/self/task"))


@dataclass
class Child:
    """What the master remembers about one worker beyond its scoreboard slot."""

    slot: int
    generation: int
    process: psutil.Process
    soft_limit: int | None
    hard_limit: int | None
    leaving: bool = False  # told to finish and exit; not replaced one-for-one
    stop_at: float | None = None  # a restart's old worker: stopped if still alive then (time.monotonic())
    terminated: bool = False  # sent SIGTERM at stop_at; SIGKILL follows at the next
    recycled: bool = False  # leaving for MaxMemoryPerChild: replaced once it has exited
    killed: bool = False  # killed by the master, which logged why; replaced one-for-one


class Arbiter:
    def __init__(
        self, config: ServerConfig, defines: list[str] | None = None, print_urls: bool = True,
        notifier: Notifier | None = None, passed: list[Passed] | None = None,
    ) -> None:
        self.config = config
        self.defines = defines or []
        self.print_urls = print_urls
        self.notifier = notifier or Notifier(None, os.getpid())
        # Listening sockets systemd passed: held open for the master's life, each generation
        # serving on its own duplicate of one, so a restart never loses them.
        self.passed = passed or []
        self.error_log: ErrorLog  # opened by start()
        self.access_logs: list[AccessLog] = []
        self.listeners: dict[Listen, socket.socket] = {}
        self.tls = Contexts()  # the generation's TLS contexts, which its workers inherit
        self.artifacts: dict[Path, Artifact] = {}
        self.digests = Digests()  # an unchanged module costs a stat on restart, not a read
        self.next: NextGeneration | None = None  # a restart waiting for its compile
        self.children: dict[int, Child] = {}
        self.generation = 0
        # Made once, before the first fork: every generation's workers inherit both ends.
        self.handover = handover.pair()
        self.pid = os.getpid()
        self.started = time.time()
        self.scoreboard = Scoreboard(config.server_limit)
        self.counts = words(self.scoreboard.cumulative.counts)  # the master's own counters
        self.labels = LabelIndex({}, {})
        self.signals: list[int] = []
        self.reloads = 0  # restarts ended, served or refused
        self.exit_status = 0
        self.stopping = False
        self.graceful_stop_deadline: float | None = None
        self.spawn_rate = 1
        self.warned_max_workers = False
        self.next_maintenance = 0.0
        self.sampling_seconds = 0.0  # CPU spent sampling memory, for the debug log

    # ---------------------------------------------------------------- start-up

    def start(self) -> None:
        """What a restart does, synchronously (there is nothing to serve yet); StartupError."""
        first = self._prepare(self.config, graceful=False)
        self.error_log, self.access_logs = first.error_log, first.access_logs
        self.listeners, self.tls = first.fresh, first.tls
        for warning in self.config.warnings:
            self.error_log.warn(warning)
        for note in self.config.notes:
            self.error_log.info(note)
        root_warning = privileges.root_warning(self.config.user)
        if root_warning:
            self.error_log.warn(root_warning)
        self._notifier_problem()
        self.artifacts = self._compiled(first.compile, self.config)
        self._assign_labels()
        self._write_pid_file()
        self.error_log.log("debug", "RLIMIT_NOFILE soft limit {} -> {}".format(*descriptors.raise_limit()))
        self._report_reload()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self._wake_w)
        for sig in QUEUED_SIGNALS:
            signal.signal(sig, self._queue_signal)
        self._set_title()
        self._configured()
        self.error_log.notice(f"AH00094: Command line: '{shlex.join(sys.argv)}'")
        first.announce(self.print_urls)

    def _configured(self) -> None:
        """Apache's notice that a generation serves, whatever LogLevel says."""
        self.error_log.notice(
            f"AH00163: prefork-wasm/{__version__} (wasmtime {WASMTIME_VERSION}, Python {sys.version.split()[0]}) "
            f"generation {self.generation} configured -- resuming normal operations",
            MPM,
        )

    def _prepare(self, config: ServerConfig, graceful: bool) -> NextGeneration:
        """Open the logs, read certificates and keys, bind new Listen lines, start compiling: all or nothing."""
        error_log, access_logs = open_logs(config)
        fresh: dict[Listen, socket.socket] = {}
        try:
            tls = tls_contexts(config)
            adopted = self._match_passed(config)
            for listen in config.listens:
                if listen in self.listeners:
                    continue
                passed = adopted.get(listen)
                fresh[listen] = (
                    socket.socket(fileno=os.dup(passed.fd)) if passed else bind(listen, config.listen_backlog)
                )
            compile = start_compile(config.modules(), config.wasm_cache_dir, self.digests)
        except (StartupError, CompileError) as e:
            close_all(error_log, access_logs, fresh.values())
            raise StartupError(str(e)) from e
        adopted = {listen: passed for listen, passed in adopted.items() if listen in fresh}
        return NextGeneration(config, graceful, error_log, access_logs, fresh, compile, tls, adopted=adopted)

    def _match_passed(self, config: ServerConfig) -> dict[Listen, Passed]:
        """The Listen lines of `config` that a socket passed by systemd serves; StartupError for a
        passed socket no line asks for (at a restart too: the current generation goes on)."""
        if not self.passed:
            return {}
        try:
            return match(self.passed, {listen: resolve(listen) for listen in config.listens})
        except ActivationError as e:
            raise StartupError(str(e)) from None

    def _compiled(self, compile: Compile, config: ServerConfig) -> dict[Path, Artifact]:
        """The artifacts of a finished compile, checked and logged (StartupError if unusable)."""
        report = finish_compile(compile, config)
        self.error_log.log(
            "debug",
            f"checked {len(report.artifacts)} module(s) against the cache: {report.hashed_bytes} bytes hashed "
            f"(a file unchanged since the last check costs a stat)",
            WASM,
        )
        for warning in report.warnings:
            self.error_log.warn(warning, WASM)
        artifacts = report.artifacts
        for artifact in artifacts:
            if artifact.why:
                self.error_log.warn(
                    f"cached {artifact.path.name} for {artifact.source} not used: {artifact.why}", WASM
                )
            if artifact.compiled:
                self.error_log.notice(
                    f"compiled {artifact.source} in {artifact.seconds:.2f} s -> {artifact.path.name}", WASM
                )
            else:
                self.error_log.info(f"cache hit for {artifact.source}: {artifact.path.name}", WASM)
        return {a.source: a for a in artifacts}

    def _assign_labels(self) -> None:
        """The metrics' label indexes of this generation's Locations and modules, before its
        workers fork (they inherit them)."""
        self.labels = assign(
            self.scoreboard.names, (loc.prefix for loc in self.config.locations), map(str, self.config.modules())
        )

    def _write_pid_file(self) -> None:
        """Atomically, so `-k` never reads a half-written pid."""
        path = self.config.pid_file
        tmp = path.with_name(f".{path.name}.{self.pid}")
        try:
            make_parent(path)
            tmp.write_text(f"{self.pid}\n")
            os.replace(tmp, path)
        except OSError as e:
            raise StartupError(located(
                self.config.sources.get("pid_file", ""),
                f"PidFile {path}: cannot write: {e.strerror or e}{culprit(e, path)}; fix the path or its permissions",
            )) from e

    def _report_reload(self, error: str = "") -> None:
        """Tell `-k graceful|restart` how the restart ended (at start-up: none has yet)."""
        write_report(self.config, ReloadReport(self.pid, self.reloads, self.generation, error))

    def _set_title(self) -> None:
        setproctitle.setproctitle(
            f"prefork-wasm: master [generation {self.generation}] -f {self.config.file}"
        )

    # ---------------------------------------------------------------- the loop

    def run(self, ready: Callable[[], None] | None = None) -> int:
        """Serve until stopped; returns the process exit status."""
        self.start()
        if ready:  # before any fork: workers must not hold the pipe `-k start` waits on
            self.notifier.follow()
            ready()
        try:
            self.scoreboard.cumulative.phase = SERVING
            adopt_orphans()  # workers' keepers, once their worker is gone (keeper.py)
            self._start_generation()
            self._notify_ready()
            while not self._finished():
                self._sleep()
                self.reap()
                self._finish_reload()
                self._handle_signals()
                self._stop_late_workers()
                if time.monotonic() >= self.next_maintenance:
                    self.next_maintenance = time.monotonic() + MAINTENANCE_INTERVAL
                    self.maintain()
        finally:
            self._shutdown()
        return self.exit_status

    def _notify_ready(self, status: str = "") -> None:
        """Tell systemd (if it asked) that a generation serves, and which."""
        self.notifier.ready(status or f"generation {self.generation} serving, {len(self._current())} workers")
        self._notifier_problem()

    def _notifier_problem(self) -> None:
        if self.notifier.problem:
            self.error_log.warn(self.notifier.problem)
            self.notifier.problem = None

    def _finished(self) -> bool:
        if not self.stopping:
            return False
        if self.graceful_stop_deadline is None:
            return True
        # Graceful stop: done when the last worker has left, or at GracefulShutdownTimeout.
        return not self.children or time.monotonic() >= self.graceful_stop_deadline

    def _queue_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)

    def _sleep(self) -> None:
        if self.signals:
            return
        wake = min([self.next_maintenance, *(c.stop_at for c in self.children.values() if c.stop_at)])
        timeout = max(0.0, wake - time.monotonic())
        try:
            select.select([self._wake_r], [], [], timeout)
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
            if signum == signal.SIGCHLD:
                continue  # reaping happens once per loop
            name = signal.Signals(signum).name
            if signum in (signal.SIGTERM, signal.SIGINT):
                self._begin_stop(None, f"stopping ({name})")
                self.error_log.notice(f"AH00169: caught {name}, shutting down", MPM)
            elif self.stopping:
                continue
            elif signum == signal.SIGWINCH:
                self._graceful_stop()
            elif signum == signal.SIGHUP:
                self.error_log.notice("AH00173: SIGHUP received.  Attempting to restart", MPM)
                self._reload(graceful=False)
            elif signum == signal.SIGUSR1:
                self.error_log.notice("AH00171: Graceful restart requested, doing restart", MPM)
                self._reload(graceful=True)

    # ---------------------------------------------------------------- reaping

    def _exited(self, block: bool = False) -> Iterator[tuple[int, int, Child]]:
        """Every worker that has exited (pid, exit code, record), its slot freed: the one
        place where the master learns that a worker is gone."""
        while self.children or self._compiling():
            try:
                pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                if self.next is not None and pid == self.next.compile.pid:
                    self.next.compile.exited(status)  # _finish_reload takes it from here
                else:
                    self._piped_log_exited(pid)
                continue
            self.scoreboard.release(child.slot)
            yield pid, os.waitstatus_to_exitcode(status), child

    def reap(self) -> None:
        """Collect exited workers and replace the ones that left without being asked."""
        for pid, code, child in self._exited():
            if code == EXIT_CHILD_FATAL:
                self.error_log.log(
                    "emerg", f"worker {pid} could not start (see above); shutting down, fix the error and start again",
                    MPM,
                )
                self._begin_stop(None, "stopping: a worker could not start (see the error log)")
                self.exit_status = 1
                continue
            if self.stopping:
                continue
            if code != 0 and not (child.leaving or child.killed):
                self._count_recycle("guest_stuck" if code == EXIT_GUEST_STUCK else "crash")
                how = exited_how(code)
                how += " (it gave up a request whose guest it could not stop)" if code == EXIT_GUEST_STUCK else ""
                self.error_log.error(f"worker {pid} exited {how}; a new one replaces it", MPM)
            if len(self.children) >= self.config.max_request_workers:
                continue  # a graceful restart's two generations together may be at the limit
            if child.generation == self.generation and (child.recycled or not child.leaving):
                self.spawn()
            elif child.generation != self.generation and len(self._current()) < self.config.start_servers:
                self.spawn()  # an old worker's place is free: the new generation may need it now

    # ---------------------------------------------------------------- maintenance

    def maintain(self) -> None:
        if self.stopping:
            return
        self._restart_piped_logs()
        self._sample_memory()
        self._kill_hung_workers()
        self._maintain_pool()

    def _piped_logs(self) -> list[PipedLog]:
        """The piped logs of the generation serving and of the one being prepared."""
        logs = [(self.error_log, self.access_logs)]
        if self.next is not None:
            logs.append((self.next.error_log, self.next.access_logs))
        files = [file for error_log, access in logs for file in [*error_log.files(), *(a.file for a in access)]]
        return [file for file in files if isinstance(file, PipedLog)]

    def _piped_log_exited(self, pid: int) -> None:
        """A piped log program has exited: it is started again by the next maintenance (Apache's
        piped log maintenance). Programs of generations gone are only reaped: their pipe has no
        writer left."""
        for log in self._piped_logs():
            if log.pid == pid:
                log.pid = None
                if not self.stopping:
                    self.error_log.error(f"AH00106: piped log program '{log.target[1:]}' failed unexpectedly")

    def _restart_piped_logs(self) -> None:
        for log in self._piped_logs():
            if log.due():
                try:
                    log.start()
                except OSError as e:
                    self.error_log.error(f"AH00107: piped_log_maintenance: unable to respawn '{log.target[1:]}': {e}")

    def _current(self) -> list[tuple[int, Child]]:
        return [(pid, c) for pid, c in self.children.items() if c.generation == self.generation and not c.leaving]

    def _maintain_pool(self) -> None:
        current = self._current()
        slots = self.scoreboard.slots
        idle = [pid for pid, c in current if slots[c.slot].state in (WAITING, STARTING)]
        config = self.config
        p = plan(
            len(idle), len(current),
            min_spare=config.min_spare_servers, max_spare=config.max_spare_servers,
            max_workers=config.max_request_workers, spawn_rate=self.spawn_rate,
            leaving=len(self.children) - len(current),
        )
        self.spawn_rate = p.next_spawn_rate
        if p.at_limit and not self.warned_max_workers:
            self.error_log.error(
                "AH00161: server reached MaxRequestWorkers setting, consider raising the MaxRequestWorkers setting", MPM
            )
        self.warned_max_workers = p.at_limit or self.warned_max_workers
        if p.spawn >= 8:
            self.error_log.info(
                f"AH00162: server seems busy, (you may need to increase StartServers, or Min/MaxSpareServers), "
                f"spawning {p.spawn} children, there are {len(idle)} idle, and {len(current)} total children",
                MPM,
            )
        for _ in range(p.spawn):
            self.spawn()
        for pid in idle[: p.stop_idle]:
            self._retire(pid)

    def _sample_memory(self) -> None:
        """Write each worker's RSS into the scoreboard; recycle those above MaxMemoryPerChild.

        USS <= PSS <= RSS, and RSS is cheap (statm) while USS and PSS walk every mapping
        (smaps): 32 workers cost 2.1 % of a core a second with USS, 0.1 % with RSS. So the
        costly figure is read only for a worker whose RSS is above its soft limit.
        """
        metric = self.config.memory_metric
        start = time.process_time()
        for pid, child in list(self.children.items()):
            if child.killed:
                continue
            try:
                used = rss = child.process.memory_info().rss
                if metric != "rss" and child.soft_limit and rss > child.soft_limit:
                    used = getattr(child.process.memory_full_info(), metric)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.scoreboard.slots[child.slot].memory = rss
            if child.hard_limit and used > child.hard_limit:
                self.error_log.notice(
                    f"worker {pid}: {metric} {size_text(used)} is above the hard MaxMemoryPerChild "
                    f"{size_text(child.hard_limit)}: killed",
                    MPM,
                )
                child.killed = True
                self._count_recycle("memory_hard")
                self._kill(pid, signal.SIGKILL)
            elif child.soft_limit and used > child.soft_limit and not child.leaving:
                self.error_log.notice(
                    f"worker {pid}: {metric} {size_text(used)} is above MaxMemoryPerChild "
                    f"{size_text(child.soft_limit)}: recycling after its current connection",
                    MPM,
                )
                self._retire(pid)
                self._count_recycle("memory_soft")
                child.recycled = True  # its replacement is forked once it has exited, never beside it
        self.sampling_seconds += time.process_time() - start

    def _kill_hung_workers(self) -> None:
        """A worker whose heartbeat stalls outside any bounded wait is stuck: replace it."""
        limit = silence_limit(self.config)
        now = time.monotonic()
        for pid, child in list(self.children.items()):
            if child.killed:
                continue
            slot = self.scoreboard.slots[child.slot]
            stalled = now - slot.heartbeat
            if stalled > limit and slot.state != WAITING:
                self.error_log.error(
                    f"worker {pid} has shown no sign of life for {stalled:.0f} s in state "
                    f"'{slot.state.decode()}' (limit Timeout + WasmTimeout + lingering close = {limit:g} s): killed",
                    MPM,
                )
                child.killed = True
                self._count_recycle("hung")
                self._kill(pid, signal.SIGKILL)

    def _count_recycle(self, reason: str) -> None:
        bump(self.counts, "recycles", RECYCLE_REASONS.index(reason))

    # ---------------------------------------------------------------- workers

    def spawn(self) -> int | None:
        index = self.scoreboard.free_slot()
        if index is None:
            self.error_log.warn("no free scoreboard slot: raise ServerLimit to run more workers", MPM)
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
        bump(self.counts, "spawns")
        soft, hard = self.config.max_memory_per_child or (None, None)
        spread = 1 - random.uniform(0, MEMORY_SPREAD)
        self.children[pid] = Child(
            slot=index,
            generation=self.generation,
            process=psutil.Process(pid),
            soft_limit=int(soft * spread) if soft else None,
            hard_limit=hard,
        )
        self.error_log.log("debug", f"forked worker {pid} into slot {index} (master threads: {threads})", MPM)
        return pid

    def _become_worker(self, index: int) -> None:
        slot = self.scoreboard.slots[index]
        slot.pid = os.getpid()
        signal.set_wakeup_fd(-1)
        os.close(self._wake_r)
        os.close(self._wake_w)
        if self.next is not None:
            self.next.close()  # a generation this worker will never serve: its logs, new ports
        pages: dict[str, Page] = {
            "server-status": StatusPage(
                self.scoreboard, self.started, self.generation, self.config.server_name or "localhost"
            ),
            "metrics": MetricsPage(self.scoreboard, self.started),
            "health": HealthPage(self.scoreboard),
        }
        Worker(
            self.config,
            self.artifacts,
            [(sock, self.tls.by_listen.get(listen)) for listen, sock in self.listeners.items()],
            slot,
            self.scoreboard,
            self.handover,
            self.pid,
            self.error_log,
            self.access_logs,
            self.labels,
            pages,
        ).run()

    def _retire(self, pid: int, how: bytes = HAND_OVER, within: float | None = None) -> None:
        """Ask a worker to finish the request it serves and exit (Apache's graceful signal):
        HAND_OVER passes its other connections to the workers that stay or follow, DRAIN (no
        worker follows) serves them to their end. `within` seconds: then it is stopped now."""
        child = self.children.get(pid)
        if child is None:
            return
        child.leaving = True
        if within is not None:
            child.stop_at = time.monotonic() + within
        self.scoreboard.slots[child.slot].quit = how
        self._kill(pid, signal.SIGUSR1)

    def _stop_late_workers(self) -> None:
        """A restart's old workers still serving at their deadline are stopped: SIGTERM, then
        SIGKILL STOP_GRACE later."""
        now = time.monotonic()
        for pid, child in self.children.items():
            if child.stop_at is not None and now >= child.stop_at:
                if not child.terminated:
                    self.error_log.info(f"worker {pid} still serving {STOP_GRACE:g} s after a restart: stopped")
                self._kill(pid, signal.SIGKILL if child.terminated else signal.SIGTERM)
                child.stop_at, child.terminated = None if child.terminated else now + STOP_GRACE, True

    def _kill(self, pid: int, signum: int) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    def _start_generation(self) -> None:
        for _ in range(self.config.start_servers):
            self.spawn()

    # ---------------------------------------------------------------- restarts

    def _reload(self, graceful: bool) -> None:
        """Prepare a generation from the config as it is now; it replaces the current one once
        its modules are compiled (`_finish_reload`), while this loop goes on supervising.

        A restart requested while one still compiles supersedes it: that compile is stopped
        and everything starts over from the newest config (what is already compiled stays in
        the cache); the latest signal decides whether the swap is graceful.
        """
        if self.next is not None:
            waited = time.monotonic() - self.next.requested
            self._abandon_next()
            self.error_log.notice(
                f"the restart requested {waited:.1f} s ago was still compiling: "
                f"stopped, starting over with the configuration as it is now",
                MPM,
            )
        self.notifier.reloading(
            f"{'graceful ' if graceful else ''}restart: preparing generation {self.generation + 1}; "
            f"generation {self.generation} serves meanwhile"
        )
        try:
            config = parse_config(self.config.file, self.defines)
            self.next = self._prepare(config, graceful)
        except (ConfigError, StartupError) as e:
            self._reload_failed(graceful, e)
            return
        if self.next.compile.running:
            self.error_log.notice(
                f"compiling modules for generation {self.generation + 1} (pid {self.next.compile.pid}); "
                f"generation {self.generation} serves meanwhile",
                MPM,
            )
        self._finish_reload()  # at once when every module was in the cache

    def _reload_failed(self, graceful: bool, error: Exception) -> None:
        bump(self.counts, "reloads", RELOAD_RESULTS.index("failed"))
        lines = str(error).splitlines() or [type(error).__name__]
        self.error_log.error(
            f"{'graceful ' if graceful else ''}restart failed, still serving generation "
            f"{self.generation} with the previous configuration: {lines[0]}"
        )
        for line in lines[1:]:
            self.error_log.error(f"restart failed: {line}")
        self._notify_ready(f"restart failed, generation {self.generation} still serving: {lines[0]}")
        self.reloads += 1
        self._report_reload(
            "\n".join([
                f"{'graceful ' if graceful else ''}restart failed, generation {self.generation} still serving:",
                *lines,
            ])
        )

    def _abandon_next(self) -> None:
        if self.next is not None:
            self.next.compile.kill()
            self.next.close()
            self.next = None

    def _compiling(self) -> bool:
        return self.next is not None and self.next.compile.running

    def _finish_reload(self) -> None:
        """Swap in the prepared generation once its compile is over; on failure keep the current one."""
        nxt = self.next
        if nxt is None or nxt.compile.running:
            return
        self.next = None
        try:
            artifacts = self._compiled(nxt.compile, nxt.config)
        except StartupError as e:
            nxt.close()
            self._reload_failed(nxt.graceful, e)
            return
        if nxt.config.server_limit != len(self.scoreboard):
            self.error_log.warn(
                f"AH00179: changing ServerLimit to {nxt.config.server_limit} from original value of "
                f"{len(self.scoreboard)} not allowed during restart (it takes effect on a full stop and start)",
                MPM,
            )
        old_listeners, old_error_log, old_access_logs = self.listeners, self.error_log, self.access_logs
        self.config, self.artifacts, self.tls = nxt.config, artifacts, nxt.tls
        self.listeners = {listen: nxt.fresh.get(listen) or old_listeners[listen] for listen in nxt.config.listens}
        self.error_log, self.access_logs = nxt.error_log, nxt.access_logs
        close_all(
            old_error_log, old_access_logs,
            (sock for listen, sock in old_listeners.items() if listen not in self.listeners),
        )
        nxt.announce(print_urls=False)
        for pid in list(self.children):
            # A restart (HUP) stops a request in flight after STOP_GRACE; other connections go on.
            self._retire(pid, HAND_OVER, None if nxt.graceful else STOP_GRACE)
        self.generation += 1
        self.scoreboard.cumulative.generation = self.generation
        bump(self.counts, "reloads", RELOAD_RESULTS.index("ok"))
        self._assign_labels()
        self.spawn_rate = 1
        self.warned_max_workers = False
        self._set_title()
        self._configured()
        self._start_generation()
        self._notify_ready()
        self.reloads += 1
        self._report_reload()

    def _graceful_stop(self) -> None:
        self._abandon_next()
        timeout = self.config.graceful_shutdown_timeout
        self._begin_stop(
            time.monotonic() + timeout if timeout else float("inf"),
            f"graceful stop: {len(self.children)} workers finishing their connections",
        )
        self.error_log.notice(
            "AH00170: caught SIGWINCH, shutting down gracefully"
            + (f" (GracefulShutdownTimeout {timeout:g} s)" if timeout else ""),
            MPM,
        )
        for sock in self.listeners.values():
            sock.close()
        self.listeners = {}
        for pid in list(self.children):
            self._retire(pid, DRAIN)

    def _begin_stop(self, deadline: float | None, status: str) -> None:
        """No more new work: stop now (deadline None) or once the workers have left or at the
        deadline. Health says 503 from here on (set before the stop is logged, so that whoever
        reads the log sees it), and systemd hears STOPPING=1."""
        self.stopping = True
        self.graceful_stop_deadline = deadline
        self.scoreboard.cumulative.phase = STOPPING
        self.notifier.stopping(status)
        self._notifier_problem()

    # ---------------------------------------------------------------- shutdown

    def _stop_workers(self) -> None:
        """SIGTERM every worker, SIGKILL what is left after a grace, reap them all."""
        for pid in list(self.children):
            self._kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children and time.monotonic() < deadline:
            for _ in self._exited():
                pass
            if self.children:
                time.sleep(0.02)
        for pid in list(self.children):
            self._kill(pid, signal.SIGKILL)
        for _ in self._exited(block=True):
            pass

    def _shutdown(self) -> None:
        self._abandon_next()
        self._stop_workers()
        for sock in self.listeners.values():
            sock.close()
        report = read_report(self.config)
        if report is not None and report.pid == self.pid:
            report_path(self.config).unlink(missing_ok=True)
        try:
            if self.config.pid_file.read_text().strip() == str(self.pid):
                self.config.pid_file.unlink()
        except OSError as e:
            if e.errno != errno.ENOENT:
                self.error_log.warn(f"PidFile {self.config.pid_file}: could not remove: {e.strerror}")
        self.error_log.log("debug", f"memory sampling used {self.sampling_seconds:.3f} s of CPU in total", MPM)
        self.error_log.notice("shut down", MPM)
