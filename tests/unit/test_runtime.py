"""The run side in-process, with real modules: the watcher stops guests by time and by output,
empties the output memfds after each run or once idle, and sleeps through quick runs; a component's
exports end in the same outcomes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import wasmtime
from wasmtime.component import Component

from harness import EXAMPLES, MODULES, wait_for
from prefork_wasm import runtime as runtime_module
from prefork_wasm.engine import InstancePool, engine_config
from prefork_wasm.runtime import (
    _FIRST_READ,
    RETAIN,
    STDERR_CAP,
    STUCK_GRACE,
    WATCH_INTERVAL,
    GuestSpec,
    LoadedComponent,
    LoadedModule,
    Outcome,
    Runtime,
    _Stream,
    _Watcher,
)

MiB = 2**20


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture(scope="module")
def modules(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> dict[str, LoadedModule]:
    folder = tmp_path_factory.mktemp("artifacts")
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    loaded = {}
    for source in (EXAMPLES / "hello.wasm", MODULES / "flood.wasm", MODULES / "slow.wasm", MODULES / "loop.wasm"):
        artifact = folder / (source.stem + ".cwasm")
        artifact.write_bytes(wasmtime.Module.from_file(engine, str(source)).serialize())
        loaded[source.stem] = runtime.load(artifact, is_component=False)
    return loaded


def sizes(runtime: Runtime) -> tuple[int, int]:
    return runtime._stdout.size(), runtime._stderr.size()


def test_endless_stdout_is_stopped_soon_after_the_limit(runtime: Runtime, modules: dict[str, LoadedModule]) -> None:
    result = runtime.run(modules["flood"], GuestSpec(timeout=30, output_limit=10 * MiB), ["flood"], {}, b"")
    assert result.outcome is Outcome.TOO_LARGE and result.stdout == b""
    assert "exceeds LimitResponseBody 10485760, guest stopped" in result.detail
    assert int(result.detail.split()[2]) < 10 * MiB + 50 * MiB  # the size when stopped
    assert sizes(runtime) == (0, 0)  # memory given back


def test_endless_stderr_is_capped_even_without_a_response_limit(
    runtime: Runtime, modules: dict[str, LoadedModule]
) -> None:
    env = {"QUERY_STRING": "stderr"}
    result = runtime.run(modules["flood"], GuestSpec(timeout=30), ["flood"], env, b"")
    assert result.outcome is Outcome.TOO_LARGE and f"exceeds {STDERR_CAP}" in result.detail
    assert result.stderr.endswith(b"more bytes of stderr not logged]")
    assert sizes(runtime) == (0, 0)


def test_output_is_read_then_given_back(runtime: Runtime, modules: dict[str, LoadedModule]) -> None:
    result = runtime.run(modules["hello"], GuestSpec(), ["hello"], {}, b"")
    assert result.outcome is Outcome.OK and b"Hello" in result.stdout
    assert sizes(runtime) == (0, 0)


def test_a_timeout_in_guest_code_stops_it_and_the_next_run_is_unaffected(
    runtime: Runtime, modules: dict[str, LoadedModule]
) -> None:
    result = runtime.run(modules["loop"], GuestSpec(timeout=0.05), ["loop"], {}, b"")
    assert result.outcome is Outcome.TIMEOUT and "WasmTimeout" in result.detail
    for _ in range(3):  # no epoch increment meant for the loop reaches a later run
        assert runtime.run(modules["hello"], GuestSpec(timeout=0.05), ["hello"], {}, b"").outcome is Outcome.OK


def test_a_guest_stuck_in_a_host_call_is_abandoned_once(runtime: Runtime, modules: dict[str, LoadedModule]) -> None:
    calls: list[tuple[Outcome, str, float]] = []
    start = time.monotonic()
    result = runtime.run(
        modules["slow"], GuestSpec(timeout=0.1), ["slow"], {"QUERY_STRING": "1500"}, b"",
        abandon=lambda outcome, cause: calls.append((outcome, cause, time.monotonic() - start)),
    )
    # The worker would have ended in `abandon`; here the run goes on until the sleep ends.
    assert [(outcome, cause) for outcome, cause, _ in calls] == [
        (Outcome.TIMEOUT, "WasmTimeout reached, guest interrupted, but it is blocked in a host call: request given up")
    ]
    assert calls[0][2] >= 0.1 + STUCK_GRACE
    assert result.outcome is Outcome.TIMEOUT


def voluntary_switches(native_id: int) -> int:
    """How often the thread has blocked: each wake-up of the watcher ends in one."""
    status = Path(f"/proc/self/task/{native_id}/status").read_text()
    return int(status.split("voluntary_ctxt_switches:")[1].split()[0])


def waits_on_its_timer(watcher: _Watcher) -> bool:
    """The watcher is blocked in a system call on its timer's fd: the read that waits for it."""
    fields = Path(f"/proc/self/task/{watcher.thread.native_id}/syscall").read_text().split()
    return len(fields) > 1 and int(fields[1], 16) == watcher._timer.fd


def test_the_watcher_sleeps_through_quick_runs_and_wakes_for_long_ones(
    runtime: Runtime, modules: dict[str, LoadedModule]
) -> None:
    """A polling watcher would wake every WATCH_INTERVAL of these runs; this one only for a run
    that lasts that long (one the scheduler held up, on a busy machine), and then looks at it
    every WATCH_INTERVAL while it lasts: a few context switches a look (its wait, its sleep, the
    GIL)."""
    native_id = runtime._watcher.thread.native_id
    assert native_id is not None
    runtime.run(modules["hello"], GuestSpec(), ["hello"], {}, b"")
    wait_for(lambda: waits_on_its_timer(runtime._watcher), what="the watcher to wait on its timer")
    before, began = voluntary_switches(native_id), time.monotonic()
    looks = 0  # what the long runs among them may cost
    while time.monotonic() - began < 40 * WATCH_INTERVAL:
        start = time.monotonic()
        assert runtime.run(modules["hello"], GuestSpec(), ["hello"], {}, b"").outcome is Outcome.OK
        lasted = time.monotonic() - start
        if lasted >= WATCH_INTERVAL:
            looks += 1 + int(lasted / WATCH_INTERVAL)
    assert voluntary_switches(native_id) - before <= 3 * looks
    result = runtime.run(modules["loop"], GuestSpec(timeout=0.05), ["loop"], {}, b"")  # woken for it
    assert result.outcome is Outcome.TIMEOUT


def test_after_a_long_run_the_watcher_stops_looking_though_runs_follow() -> None:
    """The watcher follows the run it woke for, not the runs after it: one that looked on while
    any run was under way would look every WATCH_INTERVAL through these back-to-back runs. The
    runs sleep, as a guest in a host call does, so that the watcher never waits for the GIL."""
    watcher = _Watcher(wasmtime.Engine(), _Stream("stdout"), _Stream("stderr"))
    native_id = watcher.thread.native_id
    assert native_id is not None
    wait_for(lambda: waits_on_its_timer(watcher), what="the watcher to wait on its timer")
    watcher.begin(30, 0, None)
    time.sleep(3.5 * WATCH_INTERVAL)  # a long run: looked at, and ending between two looks
    watcher.end()
    before = voluntary_switches(native_id)
    looks = 1  # the long run's last look, due just after it ended
    for _ in range(40):  # runs shorter than WATCH_INTERVAL, one right after another
        start = time.monotonic()
        watcher.begin(30, 0, None)
        time.sleep(WATCH_INTERVAL / 3)
        watcher.end()
        lasted = time.monotonic() - start
        if lasted >= WATCH_INTERVAL:  # held up: its own timer wakes the watcher
            looks += 1 + int(lasted / WATCH_INTERVAL)
    assert voluntary_switches(native_id) - before <= 3 * looks


def test_an_idle_workers_retained_output_is_given_back(tmp_path: Path) -> None:
    """A busy worker keeps past output in its streams (`RETAIN`); once no run has begun for
    WATCH_LINGER, the watcher empties them."""
    stdout, stderr = _Stream("stdout"), _Stream("stderr")
    watcher = _Watcher(wasmtime.Engine(), stdout, stderr)
    for stream in (stdout, stderr):
        stream.retain = RETAIN
        os.write(stream.fd, b"x" * 1000)
        stream.start = 1000  # as after `take`: kept, not emptied
    watcher.begin(30, 0, None)
    assert watcher.end() is None
    wait_for(lambda: os.fstat(stdout.fd).st_size == os.fstat(stderr.fd).st_size == 0, what="the streams emptied")
    assert stdout.start == stderr.start == 0


@pytest.fixture(scope="module")
def outcomes(runtime: Runtime, tmp_path_factory: pytest.TempPathFactory) -> LoadedComponent:
    artifact = tmp_path_factory.mktemp("component") / "outcomes.cwasm"
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    artifact.write_bytes(Component.from_file(engine, str(MODULES / "outcomes_component.wat")).serialize())
    loaded = runtime.load(artifact, is_component=True)
    assert isinstance(loaded, LoadedComponent)
    return loaded


@pytest.mark.parametrize(
    "entry, outcome, code, detail",
    [
        ("wasi:cli/run@0.2.0#run", Outcome.OK, 0, ""),
        ("test:outcomes/all#err", Outcome.EXIT, 1, "test:outcomes/all#err returned err"),
        ("test:outcomes/all#trap", Outcome.TRAP, 0, "trap: wasm `unreachable` instruction executed"),
        ("test:outcomes/all#spin", Outcome.TIMEOUT, 0, "WasmTimeout reached, guest interrupted"),
        (
            "test:outcomes/all#nope",
            Outcome.ERROR,
            0,
            "the component exports no function named 'test:outcomes/all#nope'",
        ),
        ("no:such/interface#run", Outcome.ERROR, 0, "the component exports no function named 'no:such/interface#run'"),
    ],
)
def test_a_component_export_ends_in_the_outcome_a_core_module_would(
    runtime: Runtime, outcomes: LoadedComponent, entry: str, outcome: Outcome, code: int, detail: str
) -> None:
    result = runtime.run(outcomes, GuestSpec(entry_point=entry, timeout=0.05), ["c"], {}, b"")
    assert (result.outcome, result.exit_code, result.detail) == (outcome, code, detail)


def test_a_component_export_index_found_once_serves_every_instance(
    runtime: Runtime, outcomes: LoadedComponent
) -> None:
    spec = GuestSpec(entry_point="wasi:cli/run@0.2.0#run")
    assert runtime.run(outcomes, spec, ["c"], {}, b"").outcome is Outcome.OK
    index = outcomes.indexes[spec.entry_point]
    for _ in range(3):  # each run is a fresh store and instance
        assert runtime.run(outcomes, spec, ["c"], {}, b"").outcome is Outcome.OK
    assert outcomes.indexes[spec.entry_point] is index


_STANDARD_STREAMS = """
import os, sys, wasmtime
from prefork_wasm.engine import InstancePool, engine_config
from prefork_wasm.runtime import GuestSpec, Runtime
runtime = Runtime(InstancePool())
out, err = runtime.take_standard_streams()
artifact = sys.argv[2]
compiler = wasmtime.Engine(engine_config(parallel_compilation=False))
with open(artifact, "wb") as f:
    f.write(wasmtime.Module.from_file(compiler, sys.argv[1]).serialize())
echo = runtime.load(artifact, is_component=False)
first = runtime.run(echo, GuestSpec(), ["echo"], {}, b"first, no newline")
second = runtime.run(echo, GuestSpec(), ["echo"], {}, b"2nd")
os.write(out, b"%s|%s|%s" % (first.stdout.split(b"\\r\\n\\r\\n")[1], second.stdout.split(b"\\r\\n\\r\\n")[1],
                            os.readlink("/proc/self/fd/1").encode()))
os.write(1, b"into the memfd, not the terminal")
"""


def test_guests_write_to_the_process_fds_1_and_2_given_to_them(tmp_path: Path) -> None:
    """A worker gives its fds 1 and 2 (memfds) to the guests, which write there in place: the
    output is each run's own, and the process's previous stdout stays usable."""
    done = subprocess.run(
        [sys.executable, "-c", _STANDARD_STREAMS, str(EXAMPLES / "echo.wasm"), str(tmp_path / "echo.cwasm")],
        check=False, capture_output=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"first, no newline|2nd|/memfd:prefork-wasm-stdout (deleted)"


def test_a_core_entry_is_found_once_and_called_without_the_exports_dict(
    runtime: Runtime, modules: dict[str, LoadedModule], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Instance.exports` builds a dict of every export: a run must not need it."""
    def no_exports(*args: object) -> None:
        raise AssertionError("Instance.exports called per run")

    monkeypatch.setattr(wasmtime.Instance, "exports", no_exports)
    hello = modules["hello"]
    for _ in range(2):
        result = runtime.run(hello, GuestSpec(), ["hello"], {}, b"")
        assert result.outcome is Outcome.OK and b"Hello from WebAssembly!" in result.stdout
    assert list(hello.entries) == ["_start"]
    missing = runtime.run(hello, GuestSpec(entry_point="nope"), ["hello"], {}, b"")
    assert (missing.outcome, missing.detail) == (Outcome.ERROR, "the module exports no function named 'nope'")


def test_a_pooled_engine_refuses_a_component_before_reading_it(tmp_path: Path) -> None:
    """pool_for never pools a worker that serves a component; if it did, loading says why
    (instead of a component instantiating into a one-instance pool and failing per request)."""
    with pytest.raises(ValueError, match="component needs an engine without the instance pool"):
        Runtime(InstancePool()).load(tmp_path / "never-read.cwasm", is_component=True)


@pytest.mark.parametrize("size", [0, 52, _FIRST_READ - 1, _FIRST_READ, _FIRST_READ + 1, 300_000])
def test_a_stream_gives_each_output_whole_with_one_pread_when_it_is_small(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per request the output is read with as few syscalls as it takes: one pread for an output
    that fits the first read, which is the common case."""
    stream = _Stream("test")
    preads: list[int] = []
    pread = os.pread

    def counted(fd: int, length: int, offset: int) -> bytes:
        preads.append(length)
        return pread(fd, length, offset)

    monkeypatch.setattr(runtime_module.os, "pread", counted)
    try:
        for run in range(2):  # the second run's output follows the first's in the memfd
            output = bytes([65 + run]) * size
            os.write(stream.fd, output)
            preads.clear()
            assert stream.take(sys.maxsize) == (size, output)
            assert len(preads) == (1 if size <= _FIRST_READ else 2)
            os.write(stream.fd, output)
            assert stream.take(10) == (size, output[:10])  # a capped read keeps the true size
    finally:
        os.close(stream.fd)


@pytest.mark.parametrize("pool", [InstancePool(), None], ids=["pooled", "on-demand"])
def test_every_run_starts_from_the_module_s_initial_state(pool: InstancePool | None, tmp_path: Path) -> None:
    """A fresh instance per request: a run's memory, globals and table are gone for the next one,
    also where the pool reuses one slot (memory madvised, table zeroed) for every run."""
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    artifact = tmp_path / "state.cwasm"
    artifact.write_bytes(wasmtime.Module.from_file(engine, str(MODULES / "state.wat")).serialize())
    runtime = Runtime(pool)
    module = runtime.load(artifact, is_component=False)
    for _ in range(3):
        result = runtime.run(module, GuestSpec(), ["state"], {}, b"")
        assert result.outcome is Outcome.OK
        assert result.stdout.endswith(b"\n\nm=0 g=0 t=1\n")


def test_a_failed_host_call_is_reported_by_its_cause_not_by_the_backtrace_header(tmp_path: Path) -> None:
    """A module that calls WASI without exporting its memory fails every run: the error log must
    say why ("missing required memory export"), not only "error while executing at wasm backtrace:"."""
    engine = wasmtime.Engine(engine_config(parallel_compilation=False))
    artifact = tmp_path / "no-memory.cwasm"
    source = (
        '(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))'
        ' (memory 1) (func (export "_start") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))'
    )
    artifact.write_bytes(wasmtime.Module(engine, source).serialize())
    runtime = Runtime(InstancePool())
    result = runtime.run(runtime.load(artifact, is_component=False), GuestSpec(), ["no-memory"], {}, b"")
    assert (result.outcome, result.detail) == (Outcome.ERROR, "missing required memory export")
