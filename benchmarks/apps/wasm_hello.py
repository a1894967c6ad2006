"""WSGI app for gunicorn: run a WASI CGI module per request with wasmtime-py.

Written the way a competent user would without prefork-wasm's tricks: the Engine, Module and
Linker are made once per worker (gunicorn imports the app in each worker, as it runs without
--preload), and every request gets a new WasiConfig and Store, its CGI environment, and its
stdout captured in a temporary file that is parsed as a CGI response.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable

import wasmtime

WASM = os.environ.get("BENCH_WASM", os.path.join(os.path.dirname(__file__), "..", "..", "examples", "wasm", "hello.wasm"))

engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, WASM)
linker = wasmtime.Linker(engine)
linker.define_wasi()

StartResponse = Callable[[str, list[tuple[str, str]]], object]


def cgi_environment(environ: dict) -> list[tuple[str, str]]:
    """RFC 3875 meta-variables from the WSGI environ."""
    env = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "gunicorn",
        "SERVER_PROTOCOL": environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
        "SERVER_NAME": environ.get("SERVER_NAME", "localhost"),
        "SERVER_PORT": str(environ.get("SERVER_PORT", "")),
        "REQUEST_METHOD": environ["REQUEST_METHOD"],
        "SCRIPT_NAME": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""),
        "PATH_INFO": "",
        "QUERY_STRING": environ.get("QUERY_STRING", ""),
        "REMOTE_ADDR": environ.get("REMOTE_ADDR", ""),
        "CONTENT_TYPE": environ.get("CONTENT_TYPE", ""),
        "CONTENT_LENGTH": environ.get("CONTENT_LENGTH", ""),
    }
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            env[key] = value
    return list(env.items())


def parse_cgi(output: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split a CGI response into status, headers and body."""
    sep = output.find(b"\r\n\r\n")
    head, body = (output[:sep], output[sep + 4:]) if sep >= 0 else output.split(b"\n\n", 1)
    status = "200 OK"
    headers = []
    for line in head.decode("latin-1").splitlines():
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = value.strip()
        else:
            headers.append((name.strip(), value.strip()))
    headers.append(("Content-Length", str(len(body))))
    return status, headers, body


def app(environ: dict, start_response: StartResponse) -> Iterable[bytes]:
    with tempfile.NamedTemporaryFile(prefix="wasm-stdout-") as out, \
            tempfile.NamedTemporaryFile(prefix="wasm-stdin-") as stdin:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            stdin.write(environ["wsgi.input"].read(length))
            stdin.flush()
        wasi = wasmtime.WasiConfig()
        wasi.argv = [os.path.basename(WASM)]
        wasi.env = cgi_environment(environ)
        wasi.stdin_file = stdin.name
        wasi.stdout_file = out.name
        wasi.inherit_stderr()
        store = wasmtime.Store(engine)
        store.set_wasi(wasi)
        instance = linker.instantiate(store, module)
        try:
            instance.exports(store)["_start"](store)
        except wasmtime.ExitTrap as e:  # WASI proc_exit, also for status 0
            if e.code != 0:
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
                return [b"module exited with status %d\n" % e.code]
        output = out.read()
    status, headers, body = parse_cgi(output)
    start_response(status, headers)
    return [body]
