"""The run side's cost per request, measured in-process (driver of scripts/bench-runtime).

Interleaved batches of: prefork-wasm's `Runtime.run` with a CGI environment as a worker builds
it, and the bare floor of wasmtime-py on the same kind of engine (pooling) and on a default one.
With `--request`, whole keep-alive requests over a socketpair instead: prefork-wasm's
(`Held.receive`, `connection.serve` with a Site built from a config as a worker builds it, the
access log on) against the least such a request needs (h11's two events, a fresh instance
through the same C calls, the response and a log line; none of prefork-wasm's routing, limits,
scoreboard, metrics or guest timeouts). Medians of the batches, in microseconds.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import h11
import wasmtime

from prefork_wasm import cgi
from prefork_wasm.compiler import Artifact, ModuleInfo
from prefork_wasm.conffile import parse_config
from prefork_wasm.connection import Held, serve
from prefork_wasm.counters import LabelIndex, Recorder
from prefork_wasm.engine import WASM32_MEMORY_MAX, InstancePool, engine_config
from prefork_wasm.http1 import Limits
from prefork_wasm.logs import AccessLog, ErrorLog, LogFile
from prefork_wasm.messages import Request
from prefork_wasm.router import Router
from prefork_wasm.runtime import GuestSpec, Outcome, Runtime
from prefork_wasm.scoreboard import Slot, words
from prefork_wasm.site import Site, prepare_guests
from prefork_wasm.wasmtime_capi import CoreStore, Wasi

ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 60.0


def cgi_env() -> dict[str, str]:
    """The environment a worker gives hello.wasm for `GET /hello` from wrk."""
    request = Request("GET", "/hello", "1.1", [(b"host", b"127.0.0.1:8080")], "127.0.0.1", 40000, 8080,
                      "0123456789-1", time.time(), path="/hello")
    return cgi.build_environ(request, server_name="127.0.0.1", script_name="/hello",
                             script_filename=str(ROOT / "examples" / "wasm" / "hello.wasm"),
                             content_length=None, extra={}, server_software="prefork-wasm/bench")


def worker_runtime() -> Runtime:
    """As in a worker: a pooling engine, and the process's fds 1 and 2 given to the guests
    (this script's own output goes on through a copy of fd 1)."""
    runtime = Runtime(InstancePool(WASM32_MEMORY_MAX))
    out, _ = runtime.take_standard_streams()
    sys.stdout = open(out, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's life
    return runtime


def runtime_run(artifact: Path) -> Callable[[], None]:
    runtime = worker_runtime()
    module = runtime.load(artifact, is_component=False)
    spec, argv, env = GuestSpec(), ["hello.wasm"], cgi_env()

    def run() -> None:
        result = runtime.run(module, spec, argv, env, b"")
        if result.outcome is not Outcome.OK or b"Hello" not in result.stdout:
            raise RuntimeError(f"unexpected result: {result}")

    return run


def bare_floor(artifact: Path, pool: InstancePool | None) -> Callable[[], None]:
    engine = wasmtime.Engine(engine_config(parallel_compilation=False, pool=pool))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module.deserialize_file(engine, str(artifact)))

    def run() -> None:
        store = wasmtime.Store(engine)
        store.set_wasi(wasmtime.WasiConfig())
        store.set_epoch_deadline(1)  # the engine interrupts by epoch, as a worker's does
        start = pre.instantiate(store).exports(store)["_start"]
        start(store)  # type: ignore[operator]
        store.close()

    return run


REQUEST = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: bench\r\n\r\n"
CONFIG = """\
ServerName localhost
Listen 127.0.0.1:8080
LogLevel warn
ErrorLog "{tmp}/error_log"
CustomLog "{tmp}/access_log" combined
<Location /hello>
    SetHandler wasm-handler
    WasmModule "{module}"
    WasmEnableCGI On
</Location>
"""


def _exchange(client: socket.socket, serve_one: Callable[[], None]) -> None:
    client.send(REQUEST)
    serve_one()
    if b" 200 " not in client.recv(65536):
        raise RuntimeError("the request did not get a 200")


def whole_request(tmp: Path, source: Path, artifact: Path, info: ModuleInfo) -> Callable[[], None]:
    """prefork-wasm's keep-alive request as a worker serves it once its head is readable."""
    conf = tmp / "server.conf"
    conf.write_text(CONFIG.format(tmp=tmp, module=source))
    config = parse_config(conf)
    runtime = worker_runtime()
    error_log = ErrorLog(LogFile(str(tmp / "error_log")), "warn")
    access_logs = [AccessLog(LogFile(str(tmp / "access_log")), log.format) for log in config.custom_logs]
    slot = Slot()
    site = Site(
        config, Router(config, access_logs, error_log, {}),
        prepare_guests(config, runtime, {source: Artifact(source, artifact, False, 0.0, info)}), runtime,
        access_logs, slot, recorder=Recorder(words(slot.counts), LabelIndex({}, {})), pages={},
    )
    limits = Limits(timeout=60, keep_alive=True, keep_alive_timeout=5, max_keep_alive_requests=0,
                    request_line=8190, field_size=8190, fields=100)

    class Worker:
        requests = 0

        def new_request_id(self) -> str:
            self.requests += 1
            return f"bench-{self.requests}"

        def draining(self) -> bool:
            return False

    def state(letter: str, request: Request | None = None) -> None:
        slot.heartbeat = time.monotonic()
        if request is not None:
            slot.request = request.request_line.encode("latin-1", "replace")[:63]

    client, server = socket.socketpair()
    held = Held(server, ("127.0.0.1", 40000), 8080, "127.0.0.1", limits)
    held.start(time.monotonic())
    worker = Worker()

    def serve_one() -> None:
        if not held.receive(time.monotonic()) or not serve(held, site, worker, limits, state):
            raise RuntimeError("the request was not served on a kept-alive connection")
        held.idle(time.monotonic())

    return lambda: _exchange(client, serve_one)


def least_request(tmp: Path, artifact: Path) -> Callable[[], None]:
    """The least a keep-alive request for a CGI guest needs, for scale. Its guest writes to fd 1
    too (after `whole_request` made it a memfd), read from where this run's output begins."""
    engine = wasmtime.Engine(engine_config(parallel_compilation=False, pool=InstancePool(WASM32_MEMORY_MAX)))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    pre = linker.instantiate_pre(wasmtime.Module.deserialize_file(engine, str(artifact)))
    log = os.open(tmp / "least_access_log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    client, server = socket.socketpair()

    def serve_one() -> None:
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(server.recv(65536))
        request = conn.next_event()
        assert isinstance(request, h11.Request)
        conn.next_event()
        env = {"REQUEST_METHOD": request.method.decode(), "REQUEST_URI": request.target.decode()}
        env.update((f"HTTP_{name.decode().upper().replace('-', '_')}", value.decode())
                   for name, value in request.headers)
        wasi = Wasi(["hello.wasm"], env)
        wasi.inherit_output()
        start = os.lseek(1, 0, os.SEEK_END)
        store = CoreStore(engine, wasi, None)
        try:
            store.call(store.instantiate(pre), b"_start", 0)
        except wasmtime.ExitTrap:
            pass
        finally:
            store.close()
        output = os.pread(1, os.lseek(1, 0, os.SEEK_END) - start, start)
        _, _, body = output.partition(b"\r\n\r\n")
        server.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        os.write(log, b'127.0.0.1 - - [-] "%s %s HTTP/1.1" 200 %d\n' % (request.method, request.target, len(body)))

    return lambda: _exchange(client, serve_one)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-runtime", description=__doc__)
    p.add_argument("--batches", type=int, default=9, help="interleaved batches per variant (default 9)")
    p.add_argument("--runs", type=int, default=1000, help="guest runs per batch (default 1000)")
    p.add_argument("--module", type=Path, default=ROOT / "examples" / "wasm" / "hello.wasm")
    p.add_argument("--request", action="store_true",
                   help="whole keep-alive requests: prefork-wasm's against the least one needs")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        artifact = Path(tmp) / "module.cwasm"
        compiler = wasmtime.Engine(engine_config(parallel_compilation=False))
        artifact.write_bytes(wasmtime.Module.from_file(compiler, str(args.module)).serialize())
        variants: dict[str, Callable[[], None]]
        if args.request:
            info = ModuleInfo(component=False, functions=frozenset({"_start"}), default_entry="_start")
            variants = {
                "prefork-wasm keep-alive request": whole_request(Path(tmp), args.module.resolve(), artifact, info),
                "the least such a request needs": least_request(Path(tmp), artifact),
            }
        else:
            variants = {
                "prefork-wasm Runtime.run (pooling)": runtime_run(artifact),
                "bare floor, pooling engine": bare_floor(artifact, InstancePool(WASM32_MEMORY_MAX)),
                "bare floor, default engine": bare_floor(artifact, None),
            }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for run in variants.values():  # warm-up
            for _ in range(200):
                run()
        for _ in range(args.batches):
            for name, run in variants.items():
                start = time.perf_counter()
                for _ in range(args.runs):
                    run()
                times[name].append((time.perf_counter() - start) / args.runs * 1e6)

    unit = "keep-alive request" if args.request else "guest run"
    print(f"{args.module.name}: microseconds per {unit}, median of {args.batches} batches of "
          f"{args.runs} (min-max); load average {os.getloadavg()[0]:.2f}")
    for name, values in times.items():
        print(f"  {name:38} {statistics.median(values):7.1f}   ({min(values):.1f}-{max(values):.1f})")
    if args.request:
        mine, least = (statistics.median(values) for values in times.values())
        print(f"prefork-wasm's request costs {mine - least:.1f} us more than the least one ({mine / least:.2f}x)")
        return 0
    mine = statistics.median(times["prefork-wasm Runtime.run (pooling)"])
    verdict = "PASS" if mine <= TARGET_US else "MISS"
    print(f"{verdict}  Runtime.run {mine:.1f} us (target <= {TARGET_US:g} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
