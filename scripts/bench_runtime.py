"""The run side's cost per request, measured in-process (driver of scripts/bench-runtime).

Interleaved batches of: prefork-wasm's `Runtime.run` with a CGI environment as a worker builds
it, and the bare floor of wasmtime-py on the same kind of engine (pooling) and on a default one.
Medians of the batches, in microseconds per guest run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import wasmtime

from prefork_wasm import cgi
from prefork_wasm.engine import WASM32_MEMORY_MAX, Pool, engine_config
from prefork_wasm.messages import Request
from prefork_wasm.runtime import GuestSpec, Outcome, Runtime

ROOT = Path(__file__).resolve().parents[1]
TARGET_US = 60.0


def cgi_env() -> dict[str, str]:
    """The environment a worker gives hello.wasm for `GET /hello` from wrk."""
    request = Request("GET", "/hello", "1.1", [(b"host", b"127.0.0.1:8080")], "127.0.0.1", 40000, 8080,
                      "0123456789-1", time.time(), path="/hello")
    return cgi.build_environ(request, server_name="127.0.0.1", script_name="/hello",
                             script_filename=str(ROOT / "examples" / "wasm" / "hello.wasm"),
                             content_length=None, extra={}, server_software="prefork-wasm/bench")


def runtime_run(artifact: Path) -> Callable[[], None]:
    """As in a worker: a pooling engine, and the process's fds 1 and 2 given to the guests
    (this script's own output goes on through a copy of fd 1)."""
    runtime = Runtime(Pool(WASM32_MEMORY_MAX))
    out, _ = runtime.take_standard_streams()
    sys.stdout = open(out, "w", buffering=1, closefd=False)  # noqa: SIM115 - for the process's life
    module = runtime.load(artifact, is_component=False)
    spec, argv, env = GuestSpec(), ["hello.wasm"], cgi_env()

    def run() -> None:
        result = runtime.run(module, spec, argv, env, b"")
        if result.outcome is not Outcome.OK or b"Hello" not in result.stdout:
            raise RuntimeError(f"unexpected result: {result}")

    return run


def bare_floor(artifact: Path, pool: Pool | None) -> Callable[[], None]:
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


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench-runtime", description=__doc__)
    p.add_argument("--batches", type=int, default=9, help="interleaved batches per variant (default 9)")
    p.add_argument("--runs", type=int, default=1000, help="guest runs per batch (default 1000)")
    p.add_argument("--module", type=Path, default=ROOT / "examples" / "wasm" / "hello.wasm")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-runtime-") as tmp:
        artifact = Path(tmp) / "module.cwasm"
        compiler = wasmtime.Engine(engine_config(parallel_compilation=False))
        artifact.write_bytes(wasmtime.Module.from_file(compiler, str(args.module)).serialize())
        variants = {
            "prefork-wasm Runtime.run (pooling)": runtime_run(artifact),
            "bare floor, pooling engine": bare_floor(artifact, Pool(WASM32_MEMORY_MAX)),
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

    print(f"{args.module.name}: microseconds per guest run, median of {args.batches} batches of "
          f"{args.runs} (min-max); load average {os.getloadavg()[0]:.2f}")
    for name, values in times.items():
        print(f"  {name:38} {statistics.median(values):7.1f}   ({min(values):.1f}-{max(values):.1f})")
    mine = statistics.median(times["prefork-wasm Runtime.run (pooling)"])
    verdict = "PASS" if mine <= TARGET_US else "MISS"
    print(f"{verdict}  Runtime.run {mine:.1f} us (target <= {TARGET_US:g} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
