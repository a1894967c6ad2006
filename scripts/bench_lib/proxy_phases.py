"""Where a wasi:http request's time goes inside one worker: run by `--proxy` under prefork-wasm's
own Python (its .venv), in-process, without HTTP.

    python scripts/bench_lib/proxy_phases.py COMPONENT.wasm REQUESTS

Loads the component into a pooled worker runtime as a worker does, serves REQUESTS of each
case through `Runtime.run_proxy`, and prints JSON: per case the median milliseconds of the
whole run, of the instantiation, of the guest's `handle` call and, within that call, of the
host functions (the Python side of every import the guest called: converting values, the
function itself), and the number of host calls. Also the cost of the host's own conversion
of 64 KiB of list<u8> each way.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wasmtime
from wasmtime.component import Component

from prefork_wasm import component_host, wasi_http_resources, wasmtime_capi
from prefork_wasm.engine import WASM32_MEMORY_MAX, InstancePool, engine_config
from prefork_wasm.messages import Request
from prefork_wasm.runtime import GuestSpec, Outcome, Runtime

HANDLER = "wasi:http/incoming-handler@0.2.0"
CASES = {"hello": ("GET", "/proxy", 0), "echo 1 B": ("POST", "/proxy/echo", 1),
         "echo 64 KiB": ("POST", "/proxy/echo", 64 * 1024)}


class Clock:
    """Time spent in the wrapped calls during one request."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0

    def wrap(self, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*args)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1
        return timed


def main(component: Path, requests: int) -> dict[str, Any]:
    host, instantiate, call = Clock(), Clock(), Clock()
    # Every host function goes through one C callback: time it (before the linker is built).
    component_host._DISPATCH = component_host.FuncCallback(host.wrap(component_host._dispatch))  # noqa: SLF001
    component_host.call_component_func = call.wrap(component_host.call_component_func)
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "proxy.cwasm"
        compiler = wasmtime.Engine(engine_config(parallel_compilation=True))
        artifact.write_bytes(Component.from_file(compiler, str(component)).serialize())
        runtime = Runtime(InstancePool(WASM32_MEMORY_MAX, components=True))
        proxy = runtime.load(artifact, True, HANDLER)
    linker = proxy.linked.linker
    timed_instantiate = instantiate.wrap(linker.instantiate)

    class TimedLinker:
        def instantiate(self, store: wasmtime.Store, comp: Component) -> Any:
            return timed_instantiate(store, comp)

    proxy.linked.linker = TimedLinker()  # type: ignore[assignment]
    spec = GuestSpec(timeout=30.0)
    out: dict[str, Any] = {}
    for case, (method, target, size) in CASES.items():
        body = os.urandom(size)
        rows: list[tuple[float, ...]] = []
        for index in range(requests + 5):
            for clock in (host, instantiate, call):
                clock.seconds, clock.calls = 0.0, 0
            request = Request(method, target, "1.1", [(b"host", b"localhost"), (b"content-type", b"text/plain")],
                              "127.0.0.1", 1, 80, "r", time.time(), body)
            exchange = wasi_http_resources.Exchange(wasi_http_resources.incoming_request(request), body_limit=0)
            start = time.perf_counter()
            result = runtime.run_proxy(proxy, spec, [], {}, exchange)
            total = time.perf_counter() - start
            response = wasi_http_resources.response_of(exchange)
            if result.outcome is not Outcome.OK or (size and response.body != body):
                raise RuntimeError(f"{case}: {result.outcome} {result.detail}")
            if index >= 5:  # the first requests of a fresh runtime warm its caches
                other = total - instantiate.seconds - call.seconds
                rows.append((total, instantiate.seconds, call.seconds, host.seconds, other, host.calls))
        columns = list(zip(*rows, strict=True))
        names = ("total_ms", "instantiate_ms", "call_ms", "host_ms", "other_ms")
        out[case] = {name: statistics.median(column) * 1000 for name, column in zip(names, columns, strict=False)}
        out[case]["host_calls"] = statistics.median(columns[-1])
    out.update(conversion_ms(64 * 1024))
    return out


def conversion_ms(size: int) -> dict[str, float]:
    """The host's side of list<u8> both ways for `size` bytes (the C API frees a list once it
    has lowered it; here it is freed the same way)."""
    data = os.urandom(size)
    val = wasmtime_capi.ComponentVal()
    free = wasmtime_capi.c_function("wasmtime_component_vallist_delete")

    def to_list() -> None:
        wasmtime_capi.bytes_to(data, val, None)
        free(ctypes.byref(val.of.list))

    wasmtime_capi.bytes_to(data, val, None)
    from_list = timeit.timeit(lambda: wasmtime_capi.bytes_from(val, None), number=50) / 50 * 1000
    free(ctypes.byref(val.of.list))
    return {"bytes_to_64k_ms": timeit.timeit(to_list, number=50) / 50 * 1000, "bytes_from_64k_ms": from_list}


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
