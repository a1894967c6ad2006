"""The run side: one Engine per worker, one fresh Store and instance per request.

Everything that can be done once per worker is: the Engine and its watcher thread, each
core module's `InstancePre` (imports resolved), the component Linker (WASI 0.2) and each
component's export indexes, the memfds that carry stdout and stderr.
Per request there is only a WASI context, a store, an instantiation (copy-on-write for a core
module; a component has no pre-instantiation in wasmtime-py 50, so its imports are resolved
again each time) and the guest's own run (costs: docs/benchmark.md).

The body goes in as stdin bytes; stdout and stderr go to memfds named by `/proc/self/fd/N`:
wasmtime opens the path itself (with truncation), so the same two fds serve every request,
and the output is read back with one pread after the store is closed; the memfds are emptied
once they hold `RETAIN` bytes, and when the worker goes idle.
"""

from __future__ import annotations

import enum
import fcntl
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime
from wasmtime.component import Component, ExportIndex, Variant
from wasmtime.component import Linker as ComponentLinker

from .engine import InstancePool, engine_config, keep_freed_heap, trap_reason
from .timerfd import OneShotTimer
from .wasi_http import ProxyComponent
from .wasi_http_resources import Exchange, Stopped
from .wasmtime_capi import CoreStore, Wasi, component_store


class Outcome(enum.Enum):
    """How a guest run ended; the worker maps each to an HTTP status."""

    OK = "ok"  # returned from the entry point, or proc_exit(0)
    EXIT = "exit"  # proc_exit(n) with n != 0, or a component's run returned err (code 1)
    TRAP = "trap"  # a trap: unreachable, stack overflow, out-of-bounds, failed allocation...
    TIMEOUT = "timeout"  # WasmTimeout passed
    ERROR = "error"  # could not run at all: missing entry point, instantiation failed
    TOO_LARGE = "too-large"  # stdout passed LimitResponseBody, or stderr STDERR_CAP


@dataclass(slots=True)
class RunResult:
    outcome: Outcome
    stdout: bytes
    stderr: bytes
    exit_code: int = 0
    detail: str = ""  # why, for the error log


@dataclass(frozen=True, slots=True)
class GuestSpec:
    """What a Location asks of a guest beyond the request itself (fixed per Location)."""

    entry_point: str = "_start"  # for a component: 'interface#func' (its wasi:cli/run's run) or 'func'
    timeout: float = 30.0
    memory_limit: int | None = None
    output_limit: int = 0  # bytes of stdout allowed, 0 = unlimited
    preopens: Sequence[tuple[str, str, bool]] = field(default_factory=tuple)  # host, guest, writable


class _Stream:
    """A memfd that wasmtime opens by path for one output stream, reused for every request.

    As the process's fd 1 or 2 (see `Runtime.take_standard_streams`) it is in append mode and
    wasmtime does not truncate it: each run's output then follows the previous one's, from
    `start`, and the memfd is emptied only once it holds `RETAIN` bytes or the worker goes idle
    (see `_Watcher._empty_streams`). Emptying it after every
    run cost measurably per request (the freed page is allocated and zeroed again by the next write);
    a small output is read with one pread and no fstat.
    """

    def __init__(self, name: str) -> None:
        self.fd = os.memfd_create(f"prefork-wasm-{name}", os.MFD_CLOEXEC)
        fcntl.fcntl(self.fd, fcntl.F_SETFL, os.O_APPEND)  # writes land at the end, wherever that is
        self.path = f"/proc/self/fd/{self.fd}"
        self.start = 0  # where this run's output begins
        self.retain = 0  # bytes of past output kept rather than emptied; 0 while opened by path

    def size(self) -> int:
        """Bytes of output of the current run."""
        return os.fstat(self.fd).st_size - self.start

    def take(self, cap: int) -> tuple[int, bytes]:
        """The run's output size and its first `cap` bytes; the next run's output starts after."""
        first = os.pread(self.fd, _FIRST_READ, self.start)
        if len(first) < _FIRST_READ:  # the whole output: one syscall
            size, data = len(first), first[:cap]
        else:
            size = self.size()
            rest = min(size, cap) - len(first)
            data = first[:cap] if rest <= 0 else first + os.pread(self.fd, rest, self.start + len(first))
        self.start += size
        if self.start > self.retain:
            self.empty()
        return size, data

    def empty(self) -> None:
        """Give the output's memory back (a memfd keeps its pages until truncated); in append
        mode the next guest writes from the start again."""
        if self.start:
            os.ftruncate(self.fd, 0)
            self.start = 0


# One pread of this much reads most outputs whole, without asking the memfd's size first.
_FIRST_READ = 16 * 1024
# Past output a reused stream keeps while its worker is busy, before it is emptied (see `_Stream`).
RETAIN = 64 * 1024

# A guest's stderr beyond this is not logged (a noisy guest must not flood the error log).
STDERR_LIMIT = 64 * 1024
# A guest writing more than this to stderr is stopped (TOO_LARGE), as for LimitResponseBody:
# stderr only feeds the error log, yet it is held in memory while the guest runs.
STDERR_CAP = 16 * 1024 * 1024
# The exit status of a worker that gave a request up because its guest could not be stopped.
EXIT_GUEST_STUCK = 16

# While a guest runs, the watcher looks at its output this often: at 1.2 GB/s (a C guest
# writing to a memfd) a guest gets at most ~6 MB past its limit before it is stopped.
WATCH_INTERVAL = 0.005
# An interrupted guest stops at once in its own code, but not inside a host call (a long
# poll_oneoff sleep): after this grace the request is given up (see `Runtime.run`).
STUCK_GRACE = 0.5
# A worker idle this long has its streams emptied (`_Stream`).
WATCH_LINGER = 0.25

# Called from the watcher thread with the outcome and its cause when a guest cannot be stopped.
Abandon = Callable[[Outcome, str], None]


class _Watcher:
    """The thread that bounds the running guest: stops it when WasmTimeout passes or its output
    passes its limit, and gives the request up when it cannot be stopped.

    Guest code cannot be interrupted by a Python signal handler, only by the engine's epoch.
    Each store's deadline is the next epoch, and only the watcher advances it, to stop a guest:
    no ticking. A worker runs one guest at a time, so one set of fields describes the run;
    `_lock` makes sure an epoch increment meant for one run cannot reach the next.

    Most runs end long before the first look is due, so the thread sleeps on a timer that each
    run sets (`begin`) and sets again as it ends (`end`, to empty the streams once the worker
    has been idle WATCH_LINGER): it wakes only for a long run, then looks every WATCH_INTERVAL
    until the run ends. A thread that polled would wake 200 times a second on a busy worker and
    take the GIL from the request being served each time.
    """

    def __init__(self, engine: wasmtime.Engine, stdout: _Stream, stderr: _Stream) -> None:
        self._engine = engine
        self._stdout = stdout
        self._stderr = stderr
        self._lock = threading.Lock()
        self.output_lock = threading.Lock()  # held by a run from its guest's start to its output's read
        self._timer = OneShotTimer()
        self._runs = 0  # runs begun: the watcher follows the one it woke for, not those after it
        self._running = False
        self._deadline = 0.0
        self._stdout_limit = 0
        self._abandon: Abandon | None = None
        self._stopped: tuple[Outcome, str] | None = None
        self._stopped_at = 0.0
        self.thread = threading.Thread(target=self._watch, name="guest-watcher", daemon=True)
        self.thread.start()

    def begin(self, timeout: float, stdout_limit: int, abandon: Abandon | None) -> None:
        self._deadline = time.monotonic() + timeout
        self._stdout_limit = stdout_limit
        self._abandon = abandon
        self._stopped = None
        self._runs += 1
        self._running = True
        self._timer.set(min(WATCH_INTERVAL, timeout))

    def end(self) -> tuple[Outcome, str] | None:
        """The guest has returned: no stop after this. Why the watcher stopped it, if it did."""
        with self._lock:
            self._running = False
            self._abandon = None
            stopped = self._stopped
        self._timer.set(WATCH_LINGER)
        return stopped

    def _watch(self) -> None:
        while True:
            self._timer.wait()
            run = self._runs
            if not self._running:  # no run began for WATCH_LINGER
                self._empty_streams()
            while self._look(run):
                pass

    def _look(self, run: int) -> bool:
        """Look at the guest of `run` and wait for the next look; False once that run is over
        (a run after it has set the timer for itself)."""
        with self._lock:
            if not self._running or self._runs != run:
                return False
            pause = self._check(time.monotonic())
        time.sleep(pause)
        return True

    def _empty_streams(self) -> None:
        """An idle worker holds no guest's output; a run that is starting keeps it (and will
        not wait for the watcher, which it needs)."""
        if self.output_lock.acquire(blocking=False):
            try:
                self._stdout.empty()
                self._stderr.empty()
            finally:
                self.output_lock.release()

    def _check(self, now: float) -> float:
        """Stop the guest if it must be; returns how long to wait before the next look."""
        if self._stopped is None:
            cause = self._output_cause()
            if cause is None and now < self._deadline:
                return min(WATCH_INTERVAL, self._deadline - now)
            self._stopped, self._stopped_at = cause or _TIMED_OUT, now
            self._engine.increment_epoch()
            return WATCH_INTERVAL
        if now - self._stopped_at < STUCK_GRACE or self._abandon is None:
            return WATCH_INTERVAL
        abandon, self._abandon = self._abandon, None
        outcome, detail = self._stopped
        abandon(outcome, f"{detail}, but it is blocked in a host call: request given up")
        return WATCH_INTERVAL

    def _output_cause(self) -> tuple[Outcome, str] | None:
        size = self._stdout.size()
        if self._stdout_limit and size > self._stdout_limit:
            return Outcome.TOO_LARGE, _stdout_too_large(size, self._stdout_limit) + ", guest stopped"
        size = self._stderr.size()
        if size > STDERR_CAP:
            return Outcome.TOO_LARGE, f"stderr of {size} bytes exceeds {STDERR_CAP} (the cap on stderr), guest stopped"
        return None


_TIMED_OUT = (Outcome.TIMEOUT, "WasmTimeout reached, guest interrupted")


def _stdout_too_large(size: int, limit: int) -> str:
    return f"stdout of {size} bytes exceeds LimitResponseBody {limit}"


class Runtime:
    """A worker's Engine, its guest watcher and the modules it has loaded."""

    def __init__(self, pool: InstancePool | None = None) -> None:
        self.pool = pool
        if pool is not None and pool.components:  # serves wasi:http components
            keep_freed_heap()
        self.engine = wasmtime.Engine(engine_config(parallel_compilation=False, pool=pool))
        self._stdout = _Stream("stdout")
        self._stderr = _Stream("stderr")
        self._watcher = _Watcher(self.engine, self._stdout, self._stderr)
        self._inherit = False  # guests write to the process's fds 1 and 2 (our memfds)
        self._component_linker: ComponentLinker | None = None

    def take_standard_streams(self) -> tuple[int, int]:
        """Make the memfds the process's fds 1 and 2, and give guests those (wasmtime's inherited
        stdout and stderr): a guest's write is then one write(2) in place. Set by path instead,
        wasmtime opens `/proc/self/fd/N` for each stream per request and writes a file through
        its blocking-I/O threads, a measurable cost per request for stdout alone.

        For a worker (this process's own output must go elsewhere): returns copies of the
        previous fds 1 and 2, close-on-exec, for the worker's logs and Python's sys streams.
        """
        saved = (fcntl.fcntl(1, fcntl.F_DUPFD_CLOEXEC, 3), fcntl.fcntl(2, fcntl.F_DUPFD_CLOEXEC, 3))
        os.dup2(self._stdout.fd, 1)
        os.dup2(self._stderr.fd, 2)
        self._inherit = True
        self._stdout.retain = self._stderr.retain = RETAIN
        return saved

    def load(self, artifact: Path, is_component: bool, http_handler: str = "") -> Loaded:
        """Map a serialized module or component (shared page cache, not a private copy) and
        prepare its linking. A component with an `http_handler` export is served as wasi:http."""
        if is_component:
            if self.pool is not None and not (http_handler and self.pool.components):
                raise ValueError("a component needs an engine without the instance pool")  # see pool_for
            comp = Component.deserialize_file(self.engine, str(artifact))
            if http_handler:
                return ProxyComponent(self.engine, comp, http_handler)
            if self._component_linker is None:  # one for every component of the worker
                self._component_linker = ComponentLinker(self.engine)
                self._component_linker.add_wasip2()
            return LoadedComponent(self, comp, self._component_linker)
        try:
            module = wasmtime.Module.deserialize_file(self.engine, str(artifact))
        except wasmtime.WasmtimeError as e:
            if self.pool is None or "pooling allocator" not in str(e):
                raise
            raise ValueError(
                f"it does not fit the worker's instance pool ({self.pool.describe()}): "
                f"{_last_line(str(e))}; a larger WasmMemoryLimit gives a larger memory slot"
            ) from None
        linker = wasmtime.Linker(self.engine)
        linker.define_wasi()
        return LoadedModule(self, linker.instantiate_pre(module), module)

    def run(
        self,
        module: LoadedModule | LoadedComponent,
        spec: GuestSpec,
        argv: list[str],
        env: dict[str, str],
        stdin: bytes | str,
        abandon: Abandon | None = None,
    ) -> RunResult:
        """Run one request's guest, bounded by `spec`'s timeout and output limits.

        A guest blocked in a host call cannot be interrupted: `STUCK_GRACE` after it was told
        to stop, `abandon` is called from the watcher thread (once) to answer the request and
        end the process; this thread stays in the guest until the host call returns.
        """
        wasi = Wasi(argv, env)
        try:
            if isinstance(stdin, str):  # a large body, in a memfd: wasmtime reads it as the guest does
                wasi.stdin_file(stdin)
            elif stdin:  # without a body the guest's stdin is empty, which costs nothing to set up
                wasi.stdin_bytes(stdin)
            if self._inherit:
                wasi.inherit_output()
            else:
                wasi.output_files(self._stdout.path, self._stderr.path)
            for host, guest, writable in spec.preopens:
                try:
                    wasi.preopen_dir(host, guest, writable)
                except wasmtime.WasmtimeError as e:  # says neither which directory nor why
                    wasi.discard()
                    return RunResult(Outcome.ERROR, b"", b"", 0, _preopen_failure(host, guest, e))
        except BaseException:
            wasi.discard()
            raise

        with self._watcher.output_lock:  # the watcher empties the streams only between runs
            if isinstance(module, LoadedModule):
                core = CoreStore(self.engine, wasi, spec.memory_limit)
                close, call = core.close, lambda: module.call(core, spec.entry_point)
            else:
                store = component_store(self.engine, wasi, spec.memory_limit)
                close, call = store.close, lambda: module.call(store, spec.entry_point)
            try:
                outcome, code, detail = self._watched(spec.timeout, spec.output_limit, abandon, call)
            finally:
                close()

            # Past LimitResponseBody (written faster than the watcher looks) only its size matters.
            cap = 0 if outcome is Outcome.TOO_LARGE else spec.output_limit + 1 if spec.output_limit else sys.maxsize
            size, stdout = self._stdout.take(cap)
            if outcome is Outcome.TOO_LARGE:
                stdout = b""
            elif spec.output_limit and size > spec.output_limit:
                stdout = b""
                outcome, detail = Outcome.TOO_LARGE, _stdout_too_large(size, spec.output_limit)
            return RunResult(outcome, stdout, self._take_stderr(), code, detail)

    def run_proxy(
        self,
        proxy: ProxyComponent,
        spec: GuestSpec,
        argv: list[str],
        env: dict[str, str],
        exchange: Exchange,
        abandon: Abandon | None = None,
    ) -> RunResult:
        """Serve one wasi:http request (wasi_http.py) under `spec`'s timeout, memory limit and
        mounts (wasi_filesystem.py); the guest's response is left in `exchange`, its stdout and
        stderr come back as stderr. The host enforces LimitResponseBody as the body is written,
        and WasmTimeout while the guest waits in a host call; the watcher does so while it runs."""
        exchange.deadline = time.monotonic() + spec.timeout
        exchange.mounts = spec.preopens
        store = component_store(self.engine, Wasi(argv, env), spec.memory_limit)
        try:
            outcome, code, detail = self._watched(
                spec.timeout, 0, abandon, lambda: _serve_proxy(proxy, store, exchange)
            )
        finally:
            store.close()
        return RunResult(outcome, b"", exchange.stderr_text(), code, detail)

    def _watched(
        self, timeout: float, output_limit: int, abandon: Abandon | None, call: Callable[[], tuple[Outcome, int, str]]
    ) -> tuple[Outcome, int, str]:
        """`call` runs the guest while the watcher bounds it; a guest it interrupted ends with
        the watcher's cause."""
        self._watcher.begin(timeout, output_limit, abandon)
        try:
            outcome, code, detail = call()
        finally:
            stopped = self._watcher.end()
        if stopped is not None and outcome is Outcome.TIMEOUT:
            outcome, detail = stopped
        return outcome, code, detail

    def _take_stderr(self) -> bytes:
        """At most STDERR_LIMIT bytes: it goes to the error log line by line."""
        size, text = self._stderr.take(STDERR_LIMIT)
        if size > STDERR_LIMIT:
            text += b"\n[%d more bytes of stderr not logged]" % (size - STDERR_LIMIT)
        return text


def _preopen_failure(host: str, guest: str, error: wasmtime.WasmtimeError) -> str:
    """For the error log: wasmtime's message names neither the directory nor the cause."""
    try:
        why = _first_line(str(error)) if stat.S_ISDIR(os.stat(host).st_mode) else "not a directory"
    except OSError as e:
        why = e.strerror or str(e)
    return f"cannot pre-open host directory {host} (guest path {guest}): {why}"


def _trap_cause(trap: wasmtime.Trap) -> str:
    """The trap's kind and its 'Caused by' line, without the backtrace."""
    code = trap.trap_code
    kind = code.name.lower().replace("_", " ") if code else "trap"
    lines = [line.strip() for line in trap.message.splitlines() if line.strip()]
    return f"trap ({kind}): {lines[-1] if lines else 'no message'}"


def _last_line(text: str) -> str:
    """wasmtime's innermost cause: the last line of its message."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1].split(": ", 1)[-1] if lines else "unknown error"


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def _error_cause(text: str) -> str:
    """A wasmtime error for the log: its 'Caused by' lines (the reason), else its first line.
    The first line alone may say only 'error while executing at wasm backtrace:'."""
    head, found, causes = text.partition("Caused by:")
    reasons = [line.strip() for line in causes.splitlines() if line.strip()] if found else []
    return "; ".join(reasons) if reasons else _first_line(head)


@dataclass(slots=True)
class LoadedModule:
    """A core module, pre-linked: each request instantiates it and calls one export (after
    `_initialize` if it is a WASI reactor, as the WASI application ABI requires).

    The entry is checked once per module and called by name through `wasmtime_capi`: building
    `Instance.exports` (a dict of every export) and `Func.__call__`'s type checks per request
    cost more than the hello guest's own run.
    """

    runtime: Runtime
    pre: wasmtime.InstancePre
    module: wasmtime.Module
    entries: dict[str, _Entry | str] = field(default_factory=dict)  # or why it cannot be called

    def call(self, store: CoreStore, entry_point: str) -> tuple[Outcome, int, str]:
        entry = self.entries.get(entry_point)
        if entry is None:
            entry = self.entries[entry_point] = _find_entry(self.module, entry_point)
        if isinstance(entry, str):
            return Outcome.ERROR, 0, entry
        try:
            instance = store.instantiate(self.pre)
            if entry.initialize:  # a WASI reactor: its set-up runs first
                store.call(instance, b"_initialize", 0)
            store.call(instance, entry.name, entry.results)
        except wasmtime.ExitTrap as e:
            return _exited(e.code)
        except wasmtime.Trap as e:
            if e.trap_code is wasmtime.TrapCode.INTERRUPT:  # by the watcher, which knows why
                return Outcome.TIMEOUT, 0, _TIMED_OUT[1]
            return Outcome.TRAP, 0, _trap_cause(e)
        except wasmtime.WasmtimeError as e:
            return Outcome.ERROR, 0, _error_cause(str(e))
        return Outcome.OK, 0, ""


@dataclass(frozen=True, slots=True)
class _Entry:
    name: bytes
    results: int
    initialize: bool = False


def _find_entry(module: wasmtime.Module, entry_point: str) -> _Entry | str:
    """The export to call, or why it cannot be: looked up once per module and entry point."""
    types = {e.name: e.type for e in module.exports}
    kind = types.get(entry_point)
    if not isinstance(kind, wasmtime.FuncType):
        return f"the module exports no function named '{entry_point}'"
    if kind.params:
        return f"'{entry_point}' takes parameters; an entry point takes none"
    init = types.get("_initialize")
    reactor = isinstance(init, wasmtime.FuncType) and not init.params and not init.results
    return _Entry(entry_point.encode(), len(kind.results), reactor and entry_point != "_initialize")


@dataclass(slots=True)
class LoadedComponent:
    """A WASI 0.2 component: each request instantiates it through the worker's linker and
    calls one export, found by an index that serves every instance of the component."""

    runtime: Runtime
    component: Component
    linker: ComponentLinker
    indexes: dict[str, ExportIndex | None] = field(default_factory=dict)

    def call(self, store: wasmtime.Store, entry_point: str) -> tuple[Outcome, int, str]:
        index = self._index(entry_point)
        if index is None:
            return Outcome.ERROR, 0, f"the component exports no function named '{entry_point}'"
        try:
            entry = self.linker.instantiate(store, self.component).get_func(store, index)
            if entry is None:
                return Outcome.ERROR, 0, f"'{entry_point}' is not a function"
            result = entry(store)
        except wasmtime.ExitTrap as e:  # wasi:cli/exit
            return _exited(e.code)
        except wasmtime.WasmtimeError as e:  # a trap arrives as an error whose causes say so
            reason = trap_reason(str(e))
            if reason == "interrupt":  # by the watcher, which knows why
                return Outcome.TIMEOUT, 0, _TIMED_OUT[1]
            if reason is not None:
                return Outcome.TRAP, 0, f"trap: {reason}"
            return Outcome.ERROR, 0, _error_cause(str(e))
        if isinstance(result, Variant) and result.tag == "err":  # run() -> result
            return Outcome.EXIT, 1, f"{entry_point} returned err"
        return Outcome.OK, 0, ""

    def _index(self, entry_point: str) -> ExportIndex | None:
        """'interface#func' or 'func', looked up once per worker."""
        if entry_point not in self.indexes:
            interface, _, func = entry_point.rpartition("#")
            outer = self.component.get_export_index(interface) if interface else None
            found = None if interface and outer is None else self.component.get_export_index(func, outer)
            self.indexes[entry_point] = found
        return self.indexes[entry_point]


def _serve_proxy(proxy: ProxyComponent, store: wasmtime.Store, exchange: Exchange) -> tuple[Outcome, int, str]:
    """Run a wasi:http guest's handle: how it ended, as `LoadedComponent.call` says it."""
    try:
        proxy.handle(store, exchange)
    except Stopped as e:
        return (Outcome.TIMEOUT if e.reason == "timeout" else Outcome.TOO_LARGE), 0, str(e)
    except wasmtime.ExitTrap as e:  # wasi:cli/exit: whatever the code, handle did not return
        return Outcome.EXIT, e.code, f"exited with status {e.code} before handle returned"
    except wasmtime.WasmtimeError as e:
        reason = trap_reason(str(e))
        if reason == "interrupt":  # by the watcher, which knows why
            return Outcome.TIMEOUT, 0, _TIMED_OUT[1]
        failure = proxy.host_failure
        if failure is not None:
            return Outcome.TRAP, 0, f"trap in a host call: {type(failure).__name__}: {failure}"
        if reason is not None:
            return Outcome.TRAP, 0, f"trap: {reason}"
        return Outcome.ERROR, 0, _error_cause(str(e))
    return Outcome.OK, 0, ""


Loaded = LoadedModule | LoadedComponent | ProxyComponent


def _exited(code: int) -> tuple[Outcome, int, str]:
    if code == 0:
        return Outcome.OK, 0, ""
    return Outcome.EXIT, code, f"exited with status {code}"
